"""Evaluation: a split captioned and scored (``evaluate``), figures. The metrics: ``captioning.metrics``."""

from captioning.evaluation.evaluate import EvalResult, evaluate
from captioning.figures import caption_grid
from captioning.metrics.bleu import bleu_scores

__all__ = ["bleu_scores", "EvalResult", "evaluate", "caption_grid"]
