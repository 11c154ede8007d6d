"""Inject (par-inject over a fixed prefix): the image repeated beside every word, a second RNN over both.

It reads the whole padded prefix at once, so it is not causal: it trains on partial-caption pairs
and decodes by re-reading the prefix (``PrefixSteps``), batched over images × beams.
"""

from __future__ import annotations

from captioning.console import import_keras
from captioning.decoders.base import Decoder, rnn_layer
from captioning.decoders.recurrent import head
from captioning.decoders.steps import PrefixSteps
from captioning.errors import UsageError


class Inject(Decoder):
    name = "inject"
    help = "image repeated beside every word, a second RNN over both (pairs only; --bidirectional)"
    causal = False

    def validate(self, cfg):
        pass  # --bidirectional is allowed: the prefix is read whole

    def build(self, cfg, sequences=False):
        keras = import_keras()
        L = keras.layers
        from captioning.decoders.layers import FeatureStandardization
        if sequences:
            raise UsageError("the inject decoder reads a fixed-length prefix; train it with pairs")
        image = keras.Input((cfg.feature_dim,), name="image")
        caption = keras.Input((cfg.max_length - 1,), dtype="int32", name="caption")  # all but endseq
        embed = L.Embedding(cfg.vocab_size, cfg.embed_dim, mask_zero=True, name="embedding")(caption)
        img = L.Dropout(cfg.dropout, name="image_dropout")(FeatureStandardization(name="image_norm")(image))
        img = L.Dense(cfg.embed_dim, activation="relu", name="image_dense")(img)
        img = L.RepeatVector(cfg.max_length - 1, name="image_repeat")(img)
        words = rnn_layer(cfg, "caption_rnn", True)(embed)
        words = L.TimeDistributed(L.Dense(cfg.embed_dim, activation="relu"), name="caption_dense")(words)
        both = L.Concatenate(name="image_and_words")([img, words])
        final = rnn_layer(cfg, "rnn", False)
        hidden = (L.Bidirectional(final, name="birnn") if cfg.bidirectional else final)(both)
        return keras.Model([image, caption], head(cfg, hidden), name="inject_next_word")

    def step_model(self, model, cfg):
        return PrefixSteps(model, fixed_length=cfg.max_length - 1)
