"""Inference split in two, as in im2txt: "feed the image" and "one decoder step".

``StepModel.start(features)`` returns the initial state (a list of batch-first arrays);
``StepModel.step(tokens, state)`` returns next-word log-probabilities and the new state. Search
strategies only ever gather state rows, so any decoder fits behind this interface:
- ``RecurrentSteps`` (merge, init-inject, pre-inject) rebuilds small models from the trained
  layers and carries the RNN state: each step costs one token, not a pass over the prefix.
- ``PrefixSteps`` (inject, which reads the whole prefix) re-runs the next-word model on the
  prefix, still batched over images × beams.
"""

from __future__ import annotations

import warnings

import numpy as np

from captioning.console import import_keras

_EPS = 1e-12


def _log(probs) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), _EPS))


class StepModel:
    def start(self, features: np.ndarray) -> list:
        raise NotImplementedError

    def step(self, tokens: np.ndarray, state: list):
        raise NotImplementedError

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
        return _log(probs), [features, prefix]


class RecurrentSteps(StepModel):
    """Stateful one-token steps built from the trained next-word model's own layers."""

    def __init__(self, model, decoder_type: str):
        # A lone token has no padding: the Embedding's mask means nothing to the cell here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not support masking.*")
            self._build(model, decoder_type)

    def _build(self, model, decoder_type: str):
        keras = import_keras()
        L = keras.layers
        layer = model.get_layer
        rnn = layer("rnn")
        self.cell, self.type = rnn.cell, decoder_type
        units = rnn.cell.units
        self.n_states = 2 if isinstance(rnn, L.LSTM) else 1
        self.units = units
        image_in = keras.Input(model.inputs[0].shape[1:], name="image")
        image = layer("image_norm")(image_in)
        zeros = [keras.Input((units,), name=f"zero_{i}") for i in range(self.n_states)]
        if decoder_type == "merge":
            encoded = [layer("image_dense")(image)]
        elif decoder_type == "init-inject":
            encoded = [layer("init_h")(image)] + ([layer("init_c")(image)] if self.n_states == 2 else [])
        elif decoder_type == "pre-inject":
            out, states = self.cell(layer("image_dense")(image), zeros if self.n_states == 2 else zeros[0])
            encoded = list(states) if isinstance(states, (list, tuple)) else [states]
        else:
            raise ValueError(f"{decoder_type} has no stateful step; use PrefixSteps")
        self.encoder = keras.Model([image_in, *zeros], encoded, name="feed_image")

        token = keras.Input((), dtype="int32", name="token")
        context = [keras.Input((units,), name="image_context")] if decoder_type == "merge" else []
        states = [keras.Input((units,), name=f"state_{i}") for i in range(self.n_states)]
        emb = layer("embedding")(token)
        h, new_states = self.cell(emb, states if self.n_states == 2 else states[0])
        new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
        if decoder_type == "merge":
            h = layer("merge")([context[0], h])
        probs = layer("output")(layer("decoder_dense")(h))
        self.stepper = keras.Model([token, *context, *states], [probs, *context, *new_states], name="one_step")

    def start(self, features):
        n = len(features)
        zeros = [np.zeros((n, self.units), np.float32) for _ in range(self.n_states)]
        encoded = self.encoder.predict_on_batch([np.asarray(features, np.float32), *zeros])
        encoded = list(encoded) if isinstance(encoded, (list, tuple)) else [encoded]
        if self.type == "merge":  # state = (image context, h, c)
            return [np.asarray(encoded[0])] + zeros
        return [np.asarray(s) for s in encoded]

    def step(self, tokens, state):
        out = self.stepper.predict_on_batch([np.asarray(tokens, np.int32), *state])
        return _log(out[0]), [np.asarray(s) for s in out[1:]]


class AttentionSteps(StepModel):
    """The attention decoder one word at a time; the state carries every step's attention map."""

    def __init__(self, model):
        self.layer, self.norm = model.get_layer("attention"), model.get_layer("image_norm")
        self.keras = import_keras()

    def _np(self, x):
        return np.asarray(self.keras.ops.convert_to_numpy(x))

    def start(self, features):
        grid = self.norm(np.asarray(features, np.float32))
        h, c = self.layer.initial_state(grid)
        cells = grid.shape[1]
        return [self._np(grid), self._np(self.layer.grid_attention(grid)), self._np(h), self._np(c),
                np.zeros((len(features), 0, cells), np.float32)]

    def step(self, tokens, state):
        grid, projected, h, c, alphas = state
        probs, h, c, alpha = self.layer.step(grid, projected, np.asarray(tokens, np.int32), h, c)
        alphas = np.concatenate([alphas, self._np(alpha)[:, None, :]], axis=1)
        return _log(self._np(probs)), [grid, projected, self._np(h), self._np(c), alphas]

    def extras(self, state):
        return state[-1]  # (rows, steps so far, grid cells)


def step_model(model, decoder_type: str, max_length: int) -> StepModel:
    if decoder_type == "attention":
        return AttentionSteps(model)
    if decoder_type in ("merge", "init-inject", "pre-inject"):
        return RecurrentSteps(model, decoder_type)
    return PrefixSteps(model, fixed_length=max_length - 1)
