"""Inference split in two, as in im2txt: "feed the image" and "one decoder step".

``StepModel.start(features)`` returns the initial state (a list of batch-first arrays);
``StepModel.step(tokens, state)`` returns next-word log-probabilities and the new state. The
searches only ever gather state rows, so any decoder fits behind this interface. Each decoder
module makes its own (``Decoder.step_model``); ``PrefixSteps`` serves any next-word model that
must re-read the whole prefix (the bidirectional inject), still batched over images × beams.
"""

from __future__ import annotations

import functools

import numpy as np

from captioning.backend import import_keras

_EPS = 1e-12


def log_probs(probs) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), _EPS))


@functools.cache
def padded_rows_by_default() -> bool:
    """JAX compiles a program for every new number of rows (about a second each on a GPU), and search
    shrinks its batch at almost every step as captions end: a self-critical epoch on a GPU spent 124 s
    of 150 compiling. TensorFlow relaxes the batch dimension itself after a few shapes."""
    return import_keras().backend.backend() == "jax"


def bucket(rows: int) -> int:
    """The number of rows a batch is padded to: the next power of two, so a whole search, however
    its batch shrinks, runs at most log2(rows) + 1 shapes, never more than twice its rows."""
    return 1 << max(rows - 1, 0).bit_length()


def run_rows(fn, inputs: list, pad: bool | None = None) -> list:
    """``fn(inputs)`` for batch-first arrays, as a list of batch-first NumPy outputs; with ``pad``
    (by default under JAX) the rows are padded with zeros up to ``bucket(rows)`` and the extra
    rows cut from the outputs, so no output row depends on the padding."""
    rows = len(inputs[0])
    extra = bucket(rows) - rows if (padded_rows_by_default() if pad is None else pad) else 0
    if extra:
        inputs = [np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) for a in inputs]
    out = fn(inputs)
    return [np.asarray(o)[:rows] for o in (out if isinstance(out, (list, tuple)) else [out])]


class StepModel:
    def start(self, features: np.ndarray) -> list:
        raise NotImplementedError

    def step(self, tokens: np.ndarray, state: list):
        raise NotImplementedError

    def step_topk(self, tokens: np.ndarray, state: list, n: int):
        """The ``n`` likeliest next words of each row, best first: (log-probs (rows, n), ids, new state).

        Beam search needs only these: a global top-k over beams × vocabulary lies within each beam's
        own top-k. Step models that can select inside their compiled graph override this."""
        log_probs, state = self.step(tokens, state)
        n = min(n, log_probs.shape[-1])
        ids = np.argpartition(-log_probs, n - 1, axis=-1)[:, :n]
        values = np.take_along_axis(log_probs, ids, -1)
        order = np.argsort(-values, axis=-1, kind="stable")
        return np.take_along_axis(values, order, -1), np.take_along_axis(ids, order, -1), state

    def extras(self, state: list):
        """Per-row information to return with each caption (attention maps), or None."""
        return None


class PrefixSteps(StepModel):
    """Any next-word model: the state is (features, prefix so far)."""

    def __init__(self, model, fixed_length: int | None = None):
        self.model, self.fixed_length = model, fixed_length

    def start(self, features):
        return [np.asarray(features, np.float32), np.zeros((len(features), 0), np.int32)]

    def step(self, tokens, state):
        features, prefix = state
        prefix = np.concatenate([prefix, np.asarray(tokens, np.int32)[:, None]], axis=1)
        x = prefix
        if self.fixed_length:
            x = np.zeros((len(prefix), self.fixed_length), np.int32)
            x[:, : prefix.shape[1]] = prefix[:, : self.fixed_length]
        probs, = run_rows(self.model.predict_on_batch, [features, x])
        return log_probs(probs), [features, prefix]


class WithoutTokens(StepModel):
    """Another step model that can never emit ``banned`` ids (padding, unknown word, start marker):
    a caption of real words only, as the references are."""

    def __init__(self, inner: StepModel, banned):
        self.inner, self.banned = inner, np.asarray(sorted(set(banned)), np.int64)

    def start(self, features):
        return self.inner.start(features)

    def step(self, tokens, state):
        log_probs, state = self.inner.step(tokens, state)
        log_probs = np.array(log_probs, copy=True)
        log_probs[:, self.banned] = -np.inf
        return log_probs, state

    def step_topk(self, tokens, state, n):
        values, ids, state = self.inner.step_topk(tokens, state, n + len(self.banned))
        allowed = ~np.isin(ids, self.banned)
        order = np.argsort(~allowed, axis=-1, kind="stable")[:, :n]  # the best n allowed, still best first
        return np.take_along_axis(values, order, -1), np.take_along_axis(ids, order, -1), state

    def extras(self, state):
        return self.inner.extras(state)
