"""Inference split in two, as in im2txt: "feed the image" and "one decoder step".

``StepModel.start(features)`` returns the initial state (a list of batch-first arrays);
``StepModel.step(tokens, state)`` returns next-word log-probabilities and the new state. Search
strategies only ever gather state rows, so any decoder fits behind this interface. Each decoder
module makes its own (``Decoder.step_model``); ``PrefixSteps`` serves any next-word model that
must re-read the whole prefix (the bidirectional inject), still batched over images × beams.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def log_probs(probs) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), _EPS))


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
        probs = self.model.predict_on_batch([features, x])
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
