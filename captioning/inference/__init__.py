"""Inference: greedy, beam search and sampling over a stateful one-step decoder."""

from captioning.inference.captioner import Captioner
from captioning.inference.search import BeamSearch, Caption, Greedy, RandomSampler, Sampler
from captioning.inference.steps import PrefixSteps, RecurrentSteps, StepModel, step_model

__all__ = ["Captioner", "BeamSearch", "Caption", "Greedy", "RandomSampler", "Sampler", "PrefixSteps",
           "RecurrentSteps", "StepModel", "step_model"]
