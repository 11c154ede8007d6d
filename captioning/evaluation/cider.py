"""CIDEr-D against a fixed reference corpus, fast enough to be a training reward.

The maths of pycocoevalcap's ``Cider`` (the COCO server's CIDEr-D: tf-idf n-grams 1–4, clipped
counts, a Gaussian length penalty with σ = 6, ×10), with two differences that a reward needs:
the document frequencies come from the corpus given once (the train references), not from the
images being scored, and each image's reference vectors are computed once, when first needed, and
reused for every candidate. With ``CiderD(refs).scores(ids, hyps)`` on the same ``refs`` as pycocoevalcap's, the
per-image scores are the same (tested).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

N = 4
SIGMA = 6.0


def ngram_counts(words, n: int = N) -> Counter:
    words = list(words)
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """``references``: image → list of reference captions (each a list of words)."""

    def __init__(self, references: dict, n: int = N, sigma: float = SIGMA):
        self.n, self.sigma = n, sigma
        counts = {image: [ngram_counts(r, n) for r in refs] for image, refs in references.items()}
        self.doc_freq = defaultdict(float)
        for refs in counts.values():
            for gram in set(g for r in refs for g in r):
                self.doc_freq[gram] += 1
        self.log_images = math.log(float(len(counts)))
        self._counts, self._refs = counts, {}  # each image's vectors made when first scored against
        self._last = None  # the last hypothesis and its vector

    def _vector(self, counts: Counter):
        """tf-idf per n-gram order, each order's norm, and the length (number of words)."""
        vec = [dict() for _ in range(self.n)]
        norm = np.zeros(self.n)
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            value = float(tf) * (self.log_images - math.log(max(1.0, self.doc_freq.get(gram, 0.0))))
            vec[k][gram] = value
            norm[k] += value * value
            if k == 0:
                length += tf
        return vec, np.sqrt(norm), length

    def _similarity(self, hyp, ref) -> float:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-((lh - lr) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for k in range(self.n):
            if nh[k] == 0 or nr[k] == 0:
                continue
            ref_k = vr[k]
            dot = sum(min(v, ref_k[g]) * ref_k[g] for g, v in vh[k].items() if g in ref_k)
            total += dot / (nh[k] * nr[k])
        return total * penalty

    def score(self, image, words) -> float:
        return float(np.mean(self.similarities(image, words)))

    def similarities(self, image, words, slots=None) -> np.ndarray:
        """CIDEr-D of ``words`` against each of ``image``'s references (or those numbered ``slots``) on
        its own; the mean over all of them is ``score``."""
        refs = self._refs.get(image)
        if refs is None:
            refs = self._refs[image] = [self._vector(r) for r in self._counts[image]]
        hyp = self._hypothesis(words)
        chosen = refs if slots is None else [refs[s] for s in slots]
        return np.array([10.0 * self._similarity(hyp, r) / self.n for r in chosen])

    def _hypothesis(self, words):
        # one candidate is scored against many images in a row (re-ranking, rewards): vectorise it once
        key, last = tuple(words), self._last
        if last is None or last[0] != key:
            last = self._last = (key, self._vector(ngram_counts(key, self.n)))
        return last[1]

    def scores(self, images, hypotheses) -> np.ndarray:
        """One CIDEr-D per (image, hypothesis word list)."""
        return np.array([self.score(i, h) for i, h in zip(images, hypotheses)], dtype=np.float64)
