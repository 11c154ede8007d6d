"""Consensus re-ranking (Devlin et al. 2015; Mao et al. 2015): of beam search's finished captions,
keep the one the captions of similar train images agree with most.

Beam search ranks by the model's own probability, which favours safe, generic sentences. The train
images whose features are closest to the photo's (cosine, after standardising and a PCA to at most
128 dimensions) say what such photos are usually called; each candidate is scored by its mean
CIDEr-D against those images' references (document frequencies of the train references), and the
best one is returned. On Flickr8k dev this lifted the default run's CIDEr by about 0.04 (docs/results.md).

``fit`` writes what this needs into the run folder as ``neighbours.h5``: the projected train
features, the projection, and the cleaned train captions, so a run re-ranks months later without
its feature store.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import h5py
import numpy as np

from captioning import atomic
from captioning.backend import import_keras
from captioning.errors import CaptioningError
from captioning.metrics.cider import ReferenceIndex
from captioning.inference.search import Hypotheses

FILE = "neighbours.h5"
FORMAT = "captioning-neighbours"
DIMENSIONS = 128


def pooled(features) -> np.ndarray:
    """One vector per image: a spatial grid (N, cells, C) is averaged over its cells."""
    features = np.asarray(features, np.float32)
    return features.mean(axis=1) if features.ndim == 3 else features


def pooled_features(store, images: list) -> np.ndarray:
    """``pooled`` features of ``images`` read from ``store`` a block at a time: a spatial store is never
    in memory whole, only the (N, C) result."""
    block = store.rows_per_block()
    return np.concatenate([pooled(store[images[i:i + block]]) for i in range(0, len(images), block)]
                          or [np.zeros((0, store.feature_shape[-1]), np.float32)])


def write(path, features, references: list, dimensions: int = DIMENSIONS) -> Path:
    """``features``: the train images' stored features; ``references``: per image, its cleaned captions."""
    x = pooled(features)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6 * max(float(std.max()), 1e-12), std, 1.0)
    z = (x - mean) / std
    dims = int(min(dimensions, z.shape[1], len(z)))
    _, vectors = np.linalg.eigh(z.T @ z)  # the covariance's eigenvectors: cheaper than an SVD of N × D
    projection = vectors[:, ::-1][:, :dims].astype(np.float32)
    captions = [" ".join(words) for refs in references for words in refs]
    owner = np.repeat(np.arange(len(references), dtype=np.int32), [len(r) for r in references])
    with atomic.replacing(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT, version=1)
        f["mean"], f["std"], f["projection"] = mean.astype(np.float32), std.astype(np.float32), projection
        f["features"] = _normalised(z @ projection).astype(np.float16)
        f.create_dataset("captions", data=np.array(captions, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f["caption_image"] = owner
    return Path(path)


def _normalised(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Consensus:
    """The train side of a run, ready to score candidate captions for new images."""

    def __init__(self, mean, std, projection, features, references: list):
        self.mean, self.std, self.projection = mean, std, projection
        self.features = np.asarray(features, np.float32)
        self.index = ReferenceIndex(references)  # every train caption as tf-idf rows, image by image
        self.captions = [words for refs in references for words in refs]  # in the index's row order

    @classmethod
    def load(cls, path, feature_dim: int | None = None) -> "Consensus":
        """``feature_dim``: the run's; a file made from other features (another backbone) is refused."""
        again = ("remove it and run `captioning fit ... --resume` to write it again, or caption without re-ranking "
                 "(--no-rerank)")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise CaptioningError(f"{path} is not a captioning neighbours file; {again}.")
                missing = [k for k in ("mean", "std", "projection", "features", "captions", "caption_image") if k not in f]
                if missing:
                    raise CaptioningError(f"{path} lacks its {', '.join(missing)} (a damaged or foreign file); {again}.")
                if feature_dim is not None and f["mean"].shape != (feature_dim,):
                    raise CaptioningError(f"{path} was made from {f['mean'].shape[0]}-number image features, and this "
                                          f"run reads {feature_dim}: it is another run's file; {again}.")
                captions = [c.decode() if isinstance(c, bytes) else c for c in f["captions"][:]]
                owner = f["caption_image"][:]
                references = [[] for _ in range(len(f["features"]))]
                for text, i in zip(captions, owner):
                    references[i].append(text.split())
                return cls(f["mean"][:], f["std"][:], f["projection"][:], f["features"][:], references)
        except OSError as e:
            raise CaptioningError(f"{path} cannot be read ({e}); {again}.") from None

    def neighbours(self, features, k: int) -> np.ndarray:
        """(N, k) row numbers of the train images closest to each image, closest first."""
        q = _normalised(((pooled(features) - self.mean) / self.std) @ self.projection)
        sim = q @ self.features.T
        k = min(k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1), 1)

    def scores(self, candidates: list, neighbours, retrieved=None) -> list:
        """Per photo, (its candidates, 2): column 0, each candidate's mean CIDEr-D against the
        references of the photo's ``neighbours`` (the mean over those images of the mean over each
        one's captions); column 1, its mean CIDEr-D against the train captions numbered
        ``retrieved`` (rows of ``captions``; zeros when None). ``candidates``: per photo, word lists."""
        first = self.index.first_row
        neighbours = np.asarray(neighbours, np.int64)  # (photos, k)
        per_image = first[neighbours + 1] - first[neighbours]  # (photos, k): each neighbour's captions
        flat = per_image.reshape(-1)
        starts = np.repeat(first[neighbours].reshape(-1) - np.cumsum(flat) + flat, flat)
        own = np.split(starts + np.arange(flat.sum()), np.cumsum(per_image.sum(axis=1))[:-1])
        share = np.split(np.repeat(1.0 / (per_image * neighbours.shape[1]).reshape(-1), flat),
                         np.cumsum(per_image.sum(axis=1))[:-1])
        rows, weights = [], []
        for i in range(len(candidates)):
            extra = np.zeros(0, np.int64) if retrieved is None else np.asarray(retrieved[i], np.int64)
            rows.append(np.concatenate([own[i], extra]))
            w = np.zeros((len(rows[-1]), 2))
            w[:len(own[i]), 0] = share[i]
            w[len(own[i]):, 1] = 1.0 / max(len(extra), 1)
            weights.append(w)
        return self.index.scores(candidates, rows, weights)


def _key(tokens) -> tuple:
    return tuple(int(t) for t in tokens)


@dataclasses.dataclass
class CandidateScores:
    """Why re-ranking chose what it chose, per candidate of one photo (``total`` decides)."""

    consensus: np.ndarray  # mean CIDEr-D against the neighbours' references
    retrieved: np.ndarray  # mean CIDEr-D against the train captions the matcher puts closest (0 without it)
    match: np.ndarray  # the matcher's cosine (0 without it)
    total: np.ndarray
    log_prob: np.ndarray  # what beam search gave each (0 where the caller gave none)


@dataclasses.dataclass
class ConsensusRerank:
    """A search: ``search`` (beam search) proposes, the neighbours' captions choose, with
    the image–caption ``matcher`` (``matching.Matcher``) adding ``matching`` × its cosine when given.

    With the matcher, the ``retrieved`` train captions it puts closest to the photo (out of all the
    train captions, whichever image they describe) vote too, at half the neighbours' weight: the
    neighbours are found by image features alone, these by what the captions say; on dev this lifted
    CIDEr by 0.008 on average over six runs (docs/results.md).

    ``proposers`` are more step models whose beam search's finished captions join the candidates:
    the run's model before self-critical tuning (``cross_entropy.keras``) words photos differently
    from the tuned one, and choosing among both models' captions lifted dev CIDEr by about 0.01 on
    each of three runs (docs/results.md).

    ``likelihood`` × the log-probability that beam search gave each candidate is added last: the
    consensus and the matcher judge what a caption says, not whether the model finds it fluent, and
    this term raised dev BLEU-4 by 0.003–0.005 on each of three runs at level CIDEr (docs/results.md)."""

    RETRIEVED_WEIGHT = 0.5

    search: object  # BeamSearch: its finished alternatives are the candidates
    consensus: Consensus
    vocab: object
    neighbours: int = 40
    matcher: object = None
    matching: float = 1.0
    proposers: list = dataclasses.field(default_factory=list)
    proposer_search: object = None  # the search the proposers run (None: ``search``, the same width)
    proposer_precision: str = "float32"  # the Keras dtype policy the proposers compute in, as recorded
    retrieved: int = 100
    likelihood: float = 0.02
    _caption_vectors: object = dataclasses.field(default=None, init=False, repr=False)
    _lock: object = dataclasses.field(default_factory=threading.Lock, init=False, repr=False)  # choose runs in 2 threads

    def describe(self):
        d = {**self.search.describe(), "rerank": "consensus", "neighbours": self.neighbours}
        d = {**d, "matching": self.matching, "retrieved": self.retrieved} if self._matches() else d
        d = {**d, "likelihood": self.likelihood} if self.likelihood else d
        return {**d, "candidates": "both", "proposer_precision": self.proposer_precision} if self.proposers else d

    def _matches(self) -> bool:
        return self.matcher is not None and bool(self.matching)

    def scores(self, features, candidates: list, log_probs: list | None = None) -> list:
        """One ``CandidateScores`` per photo; ``candidates``: per photo, its captions as token lists;
        ``log_probs``: per photo, what beam search gave each (counted ``likelihood`` times)."""
        near = self.consensus.neighbours(features, self.neighbours)
        words = [[self.vocab.decode(t) for t in cs] for cs in candidates]
        log_probs = [np.asarray(lp, np.float64) for lp in log_probs] if log_probs else [np.zeros(len(w)) for w in words]
        photos = self.matcher.image_vectors(features) if self._matches() else None
        rows = self._retrieved(photos) if self._matches() and self.retrieved else None
        agree = self.consensus.scores(words, near, rows)
        if self._matches():
            match = [np.asarray(m, np.float64) for m in self.matcher.cosines(photos, candidates)]
        else:
            match = [np.zeros(len(w)) for w in words]
        return [CandidateScores(a[:, 0], a[:, 1], m,
                                a[:, 0] + self.RETRIEVED_WEIGHT * a[:, 1] + self.matching * m + self.likelihood * lp, lp)
                for a, m, lp in zip(agree, match, log_probs)]

    def _retrieved(self, image_vectors) -> np.ndarray:
        """(N, retrieved) rows of the train captions the matcher puts closest to each photo (its vector)."""
        keras = import_keras()
        with self._lock:  # every train caption once per search object: ~3 s for Flickr8k
            if self._caption_vectors is None:
                ids = [self.vocab.encode(c, markers=False) for c in self.consensus.captions]
                self._caption_vectors = keras.ops.convert_to_tensor(self.matcher.caption_vectors(ids))
        k = min(self.retrieved, int(self._caption_vectors.shape[0]))

        def nearest(photos):  # the backend's top-k: a third of NumPy's argpartition's time here
            return keras.ops.top_k(keras.ops.matmul(photos, keras.ops.transpose(self._caption_vectors)), k)[1]
        # 64 photos at a time: against COCO's 566,000 train captions a batch's whole similarity
        # matrix would take 3.5 GB
        return np.concatenate([np.asarray(nearest(image_vectors[i:i + 64]), np.int64)
                               for i in range(0, len(image_vectors), 64)] or [np.zeros((0, k), np.int64)])

    def __call__(self, steps, features, start_id, end_id, max_length) -> Hypotheses:
        return self.choose(features, self.candidates(steps, features, start_id, end_id, max_length))

    def candidates(self, steps, features, start_id, end_id, max_length):
        """The searches: beam search's hypotheses, and per photo every finished caption (the
        model's, then the proposers' new ones). ``choose`` re-ranks them; the two halves are apart
        so a caller can re-rank one batch while the next one searches (``Captioner.caption_features``)."""
        hyps = self.search(steps, features, start_id, end_id, max_length)
        pools = [list(a) for a in hyps.alternatives]
        for proposer in self.proposers:
            more = (self.proposer_search or self.search)(proposer, features, start_id, end_id, max_length)
            for pool, own, extra in zip(pools, hyps.tokens, more.alternatives):
                seen = {_key(t) for t, _, _ in pool} | {_key(own)}
                pool += [a for a in extra if _key(a[0]) not in seen]
        return hyps, pools

    def choose(self, features, found) -> Hypotheses:
        """Each photo's best caption among ``candidates``' by the re-ranking score."""
        hyps, pools = found
        # a beam that never finished has its best partial caption as its own choice: it competes too
        choices = [pool if own else [(t, lp, None)] + pool
                   for pool, own, t, lp in zip(pools, hyps.alternatives, hyps.tokens, hyps.log_probs)]
        tokens, log_probs, finished = list(hyps.tokens), list(hyps.log_probs), list(hyps.finished)
        extras = list(hyps.extras)
        several = [i for i, alternatives in enumerate(choices) if len(alternatives) > 1]
        candidates = [[t for t, _, _ in choices[i]] for i in several]
        likely = [[lp for _, lp, _ in choices[i]] for i in several]
        scored = self.scores(np.asarray(features)[several], candidates, likely) if several else []
        for i, score in zip(several, scored):
            best = int(np.argmax(score.total))
            if best:  # beam search's own choice is alternatives[0]
                tokens[i], log_probs[i], finished[i] = choices[i][best][0], choices[i][best][1], True
                if extras:
                    extras[i] = None  # attention maps belong to beam search's choice
        return Hypotheses(tokens, log_probs, finished, extras, pools)
