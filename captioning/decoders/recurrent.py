"""The shape merge, init-inject and pre-inject share: image in, words through one RNN, a dense head.

Subclasses say only how the image enters, once for training (``decode``: whole captions) and once
for inference (``feed_image`` and ``combine``: one token at a time), over the same named layers.
"""

from __future__ import annotations

import numpy as np

from captioning.backend import import_keras
from captioning.decoders.base import Decoder, DecoderConfig
from captioning.decoders.steps import StepModel, run_rows


class RecurrentDecoder(Decoder):
    def build(self, cfg: DecoderConfig, sequences: bool = False):
        keras = import_keras()
        L = keras.layers
        from captioning.decoders.layers import FeatureStandardization, LastValidStep
        image = keras.Input((cfg.feature_dim,), name="image")
        caption = keras.Input((None,), dtype="int32", name="caption")
        embedding = word_embedding(cfg)
        embed = embedding(caption)
        img = L.Dropout(cfg.dropout, name="image_dropout")(FeatureStandardization(name="image_norm")(image))
        words = L.Dropout(cfg.dropout, name="caption_dropout")(embed)
        hidden = self.decode(cfg, img, words, sequences)
        if not sequences:
            hidden = LastValidStep(self.output_offset, name="last_step")([hidden, caption])
        out = head(cfg, hidden, embedding)
        kind = "sequences" if sequences else "next_word"
        return keras.Model([image, caption], out, name=f"{self.name.replace('-', '_')}_{kind}")

    def step_model(self, model, cfg: DecoderConfig):
        return RecurrentSteps(model, self)

    # --- the two halves, overridden per decoder ------------------------------------------------
    def decode(self, cfg: DecoderConfig, image, words, sequences: bool):
        """Training graph: standardised image (B, D) and embedded words (B, T, E) → RNN outputs (B, T', U)."""
        raise NotImplementedError

    def feed_image(self, layer, image, zeros) -> tuple[list, list]:
        """Inference: standardised image → (context carried unchanged, initial RNN states)."""
        raise NotImplementedError

    def combine(self, layer, context: list, h):
        """Inference: one step's RNN output and the context → the head's input."""
        return h


def word_embedding(cfg: DecoderConfig):
    L = import_keras().layers
    from captioning.decoders.layers import TiedEmbedding
    if cfg.tie_embeddings:
        return TiedEmbedding(cfg.vocab_size, cfg.embed_dim, name="embedding")
    return L.Embedding(cfg.vocab_size, cfg.embed_dim, mask_zero=True, name="embedding")


def head(cfg: DecoderConfig, hidden, embedding):
    """RNN output → a dense layer → softmax over the vocabulary (through the word vectors when tied)."""
    L = import_keras().layers
    if cfg.tie_embeddings:
        hidden = L.Dense(cfg.embed_dim, activation="relu", name="decoder_dense")(hidden)
        return L.Activation("softmax", name="output")(embedding(hidden, reverse=True))
    hidden = L.Dense(cfg.units, activation="relu", name="decoder_dense")(hidden)
    return L.Dense(cfg.vocab_size, activation="softmax", name="output")(hidden)


def token_vector(layer, token):
    """One step's word vector. A lone token has no padding: the Embedding's mask means nothing to the
    cell, which would warn of it at the first call (a notebook's first caption); an op's output
    carries no mask."""
    return import_keras().ops.copy(layer("embedding")(token))


def step_probs(layer, h):
    """One step's head over the trained model's layers: the same path as ``head``."""
    from captioning.decoders.layers import TiedEmbedding
    hidden = layer("decoder_dense")(h)
    embedding = layer("embedding")
    if isinstance(embedding, TiedEmbedding):
        hidden = embedding(hidden, reverse=True)
    return layer("output")(hidden)


class RecurrentSteps(StepModel):
    """Stateful one-token steps built from the trained next-word model's own layers."""

    def __init__(self, model, decoder: RecurrentDecoder):
        self._build(model, decoder)

    def _build(self, model, decoder: RecurrentDecoder):
        keras = import_keras()
        layer = model.get_layer
        rnn = layer("rnn")
        self.cell, self.units = rnn.cell, rnn.cell.units
        self.n_states = 2 if isinstance(rnn, keras.layers.LSTM) else 1
        image_in = keras.Input(model.inputs[0].shape[1:], name="image")
        zeros = [keras.Input((self.units,), name=f"zero_{i}") for i in range(self.n_states)]
        context, states = decoder.feed_image(layer, layer("image_norm")(image_in), zeros)
        self.n_context = len(context)
        self.encoder = keras.Model([image_in, *zeros], [*context, *states], name="feed_image")

        token = keras.Input((), dtype="int32", name="token")
        context = [keras.Input((c.shape[-1],), name=f"context_{i}") for i, c in enumerate(context)]
        states = [keras.Input((self.units,), name=f"state_{i}") for i in range(self.n_states)]
        word = token_vector(layer, token)
        h, new_states = self.cell(word, states if self.n_states == 2 else states[0])
        new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
        probs = step_probs(layer, decoder.combine(layer, context, h))
        log_p = keras.ops.log(keras.ops.maximum(probs, 1e-12))  # in the graph: one pass, all cores
        self._graph = ([token, *context, *states], log_p, [*context, *new_states])
        self.stepper = keras.Model(self._graph[0], [log_p, *self._graph[2]], name="one_step")
        self._topk_steppers = {}

    def start(self, features):
        zeros = [np.zeros((len(features), self.units), np.float32) for _ in range(self.n_states)]
        return run_rows(self.encoder.predict_on_batch, [np.asarray(features, np.float32), *zeros])

    def step(self, tokens, state):
        out = run_rows(self.stepper.predict_on_batch, [np.asarray(tokens, np.int32), *state])
        return out[0], out[1:]

    def step_topk(self, tokens, state, n):
        """Selection inside the compiled step: only (rows, n) leave the graph, not (rows, vocabulary)."""
        if n not in self._topk_steppers:
            keras = import_keras()
            inputs, log_p, rest = self._graph
            values, ids = keras.ops.top_k(log_p, min(n, log_p.shape[-1]))
            self._topk_steppers[n] = keras.Model(inputs, [values, ids, *rest], name=f"one_step_top{n}")
        out = run_rows(self._topk_steppers[n].predict_on_batch, [np.asarray(tokens, np.int32), *state])
        return out[0], out[1], out[2:]
