"""The vectorised CIDEr-D of re-ranking (``ReferenceIndex`` through ``Consensus.scores``) against the
scalar scorer it replaced (``CiderD``, one dictionary walk per caption pair), at a real size: a
Zipf-shaped vocabulary of several thousand words, 16-wide beams of two models (32 candidates), 40
neighbours and 100 retrieved captions per photo."""

import numpy as np
import pytest

from captioning.inference import consensus
from captioning.metrics.cider import CiderD, ReferenceIndex

WORDS = [f"w{i}" for i in range(6000)]


def _corpus(rng, images: int):
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()

    def caption():
        return [str(w) for w in rng.choice(WORDS, size=rng.integers(1, 20), p=p)]
    return caption, [[caption() for _ in range(rng.integers(1, 6))] for _ in range(images)]


def _scalar(cider: CiderD, references, words, neighbours, retrieved):
    """What re-ranking computed before: per candidate, the mean over neighbour images of the mean over
    their captions, and the mean over the retrieved captions, each pair scored on its own."""
    at = [(image, slot) for image, refs in enumerate(references) for slot in range(len(refs))]
    agree = np.mean([cider.score(int(j), words) for j in neighbours])
    found = np.mean([cider.similarities(at[r][0], words, [at[r][1]])[0] for r in retrieved])
    return agree, found


def test_vectorised_consensus_equals_the_scalar_scorer(tmp_path):
    rng = np.random.default_rng(0)
    caption, references = _corpus(rng, 3000)
    features = rng.normal(size=(len(references), 16)).astype(np.float32)
    c = consensus.Consensus.load(consensus.write(tmp_path / consensus.FILE, features, references, dimensions=8))
    photos = 6
    candidates = [[caption() for _ in range(32)] + [["never", "seen", "w0", "never"], ["w0"] * 6, []]
                  for _ in range(photos)]
    near = c.neighbours(rng.normal(size=(photos, 16)), 40)
    retrieved = rng.choice(len(c.captions), size=(photos, 100), replace=False)
    vectorised = c.scores(candidates, near, retrieved)
    cider = CiderD(dict(enumerate(references)))
    weights = rng.uniform(size=2)
    for i in range(photos):
        scalar = np.array([_scalar(cider, references, w, near[i], retrieved[i]) for w in candidates[i]])
        np.testing.assert_allclose(vectorised[i], scalar, rtol=0, atol=1e-6)
        assert np.argmax(vectorised[i] @ weights) == np.argmax(scalar @ weights)  # the same caption chosen


def test_an_index_without_long_grams_scores_like_cider():
    references = [[["a", "dog"]], [["a"]], [["dog", "runs"]]]
    index = ReferenceIndex(references)
    cider = CiderD(dict(enumerate(references)))
    out = index.scores([[["a", "dog", "runs", "fast"], ["cat"]]], [np.arange(len(index))], [np.eye(len(index))])[0]
    for j in range(3):
        assert out[0, j] == pytest.approx(cider.score(j, ["a", "dog", "runs", "fast"]), abs=1e-12)
        assert out[1, j] == pytest.approx(cider.score(j, ["cat"]), abs=1e-12)
