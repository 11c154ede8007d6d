"""Caption metrics: BLEU, CIDEr-D (one candidate at a time, and a corpus index that scores many at
once), and the COCO metrics through pycocoevalcap.

A leaf of the package: it imports nothing of ``captioning`` but ``errors``, so training (rewards),
inference (re-ranking) and evaluation all stand on it and no import runs back up.
"""

from captioning.metrics.bleu import bleu_scores
from captioning.metrics.cider import CiderD, ReferenceIndex

__all__ = ["bleu_scores", "CiderD", "ReferenceIndex"]
