"""The COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) through pycocoevalcap.

Needs the ``coco`` extra (``pip install "captioning[coco]"``) and Java for METEOR. Texts are passed
already cleaned and space-tokenised, so the Java PTB tokenizer is not needed.
"""

from __future__ import annotations

import contextlib
import io
import shutil

from captioning.errors import CaptioningError


def coco_metrics(references: dict, hypotheses: dict) -> dict:
    """``references``: id → list of cleaned caption strings; ``hypotheses``: id → one string."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as e:
        raise CaptioningError("the COCO metrics need pycocoevalcap: pip install \"captioning[coco]\"") from e
    gts = {k: list(v) for k, v in references.items()}
    res = {k: [hypotheses[k] or "<empty>"] for k in gts}
    scores = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if shutil.which("java"):
        scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    else:
        scores["METEOR"] = None  # reported as missing, never faked
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores
