"""Evaluation: BLEU-1..4, the COCO caption metrics, figures."""

from captioning.metrics.bleu import bleu_scores
from captioning.evaluation.evaluate import EvalResult, evaluate
from captioning.evaluation.figures import caption_grid

__all__ = ["bleu_scores", "EvalResult", "evaluate", "caption_grid"]
