"""Inference: greedy, beam search and sampling over a decoder's stateful one-step model.

Inference reads the run format (``captioning.run``) and the decoders; it never imports training.
"""

from captioning.decoders import PrefixSteps, StepModel, step_model
from captioning.inference.captioner import Captioner
from captioning.inference.ensemble import EnsembleSteps
from captioning.inference.search import BeamSearch, Caption, Greedy, RandomSampler, Sampler

__all__ = ["Captioner", "EnsembleSteps", "BeamSearch", "Caption", "Greedy", "RandomSampler", "Sampler", "PrefixSteps",
           "StepModel", "step_model"]
