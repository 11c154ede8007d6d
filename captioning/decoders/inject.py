"""Inject (par-inject, as in the tutorials): the image repeated beside every word, a second RNN over both.

A first RNN reads the words; the image, projected, is set beside its output at every step; a second
RNN reads both. With both RNNs running forward the decoder is causal: it trains on whole captions
(the fast path) and steps one token at a time carrying both RNNs' states (``InjectSteps``).
``--bidirectional`` makes the second RNN read the prefix both ways: then it sees the prefix whole,
trains on partial-caption pairs and decodes by re-reading the prefix (``PrefixSteps``).
"""

from __future__ import annotations

from captioning.backend import import_keras
from captioning.decoders.base import Decoder, rnn_layer
from captioning.decoders.recurrent import RecurrentSteps, head, step_probs, token_vector, word_embedding
from captioning.decoders.steps import PrefixSteps
from captioning.errors import UsageError


class Inject(Decoder):
    name = "inject"
    help = "image repeated beside every word, a second RNN over both (--bidirectional: pairs only)"
    defaults = {"tie_embeddings": True}  # measured better (docs/results.md, "Tied word vectors")

    def is_causal(self, cfg):
        return not cfg.bidirectional

    def validate(self, cfg):
        pass  # --bidirectional is allowed: the prefix is then read whole

    def build(self, cfg, sequences=False):
        keras = import_keras()
        L = keras.layers
        from captioning.decoders.layers import FeatureStandardization, RepeatAlong
        if sequences and not self.is_causal(cfg):
            raise UsageError("the bidirectional inject decoder reads a fixed-length prefix; train it with pairs")
        image = keras.Input((cfg.feature_dim,), name="image")
        length = None if sequences else cfg.max_length - 1  # all but endseq
        caption = keras.Input((length,), dtype="int32", name="caption")
        embedding = word_embedding(cfg)
        embed = embedding(caption)
        img = L.Dropout(cfg.dropout, name="image_dropout")(FeatureStandardization(name="image_norm")(image))
        img = L.Dense(cfg.embed_dim, activation="relu", name="image_dense")(img)
        words = rnn_layer(cfg, "caption_rnn", True, sequences)(embed)
        words = L.Dense(cfg.embed_dim, activation="relu", name="caption_dense")(words)  # per step
        both = L.Concatenate(name="image_and_words")([RepeatAlong(name="image_repeat")([img, words]), words])
        final = rnn_layer(cfg, "rnn", sequences, sequences)
        hidden = (L.Bidirectional(final, name="birnn") if cfg.bidirectional else final)(both)
        kind = "sequences" if sequences else "next_word"
        return keras.Model([image, caption], head(cfg, hidden, embedding), name=f"inject_{kind}")

    def step_model(self, model, cfg):
        from captioning.decoders.layers import RepeatAlong
        # Runs saved by versions before 0.3 let padding into the final RNN (a mask-less image repeat);
        # only re-reading the padded prefix reproduces what they learned.
        if not self.is_causal(cfg) or not isinstance(model.get_layer("image_repeat"), RepeatAlong):
            return PrefixSteps(model, fixed_length=cfg.max_length - 1)
        return InjectSteps(model, self)


class InjectSteps(RecurrentSteps):
    """One token at a time through both RNNs; the projected image is the context carried along."""

    def _build(self, model, decoder):
        keras = import_keras()
        layer = model.get_layer
        first, second = layer("caption_rnn").cell, layer("rnn").cell
        self.units = second.units
        per_rnn = 2 if isinstance(layer("rnn"), keras.layers.LSTM) else 1
        self.n_states = 2 * per_rnn  # all start at zero
        image_in = keras.Input(model.inputs[0].shape[1:], name="image")
        zeros = [keras.Input((self.units,), name=f"zero_{i}") for i in range(self.n_states)]
        context = layer("image_dense")(layer("image_norm")(image_in))
        self.n_context = 1
        self.encoder = keras.Model([image_in, *zeros], [context, *zeros], name="feed_image")

        token = keras.Input((), dtype="int32", name="token")
        context = keras.Input((context.shape[-1],), name="context_0")
        states = [keras.Input((self.units,), name=f"state_{i}") for i in range(self.n_states)]

        def run(cell, x, s):
            h, new = cell(x, s if per_rnn == 2 else s[0])
            return [h, *(new if isinstance(new, (list, tuple)) else [new])]

        words, *states_1 = run(first, token_vector(layer, token), states[:per_rnn])
        words = layer("caption_dense")(words)
        # Both cells carry Keras' default cell name; the second runs inside its own small graph so the
        # step graph's operation names stay unique.
        both = keras.Input((context.shape[-1] + words.shape[-1],), name="image_and_words")
        inner = [keras.Input((self.units,), name=f"rnn_state_{i}") for i in range(per_rnn)]
        second_step = keras.Model([both, *inner], run(second, both, inner), name="second_rnn_step")
        h, *states_2 = second_step([keras.ops.concatenate([context, words], axis=-1), *states[per_rnn:]])
        probs = step_probs(layer, h)
        log_p = keras.ops.log(keras.ops.maximum(probs, 1e-12))
        self._graph = ([token, context, *states], log_p, [context, *states_1, *states_2])
        self.stepper = keras.Model(self._graph[0], [log_p, *self._graph[2]], name="one_step")
        self._topk_steppers = {}
