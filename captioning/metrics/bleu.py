"""BLEU the way papers report it: corpus-level, every reference of the image, cumulative n-grams,
no start/end tokens, references and hypotheses cleaned by the same rules."""

from __future__ import annotations

from nltk.translate.bleu_score import corpus_bleu

WEIGHTS = {f"BLEU-{n}": tuple([1.0 / n] * n + [0.0] * (4 - n)) for n in range(1, 5)}


def bleu_scores(references: list, hypotheses: list) -> dict:
    """``references[i]``: token lists of image i; ``hypotheses[i]``: its generated tokens."""
    if len(references) != len(hypotheses):
        raise ValueError("one list of references per hypothesis")
    if not hypotheses:
        raise ValueError("nothing to score")
    return {name: float(corpus_bleu(references, hypotheses, weights=w)) for name, w in WEIGHTS.items()}
