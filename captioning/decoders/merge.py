"""Merge (Tanti et al. 2018): the RNN reads only words; the image joins its output by addition."""

from __future__ import annotations

from captioning.backend import import_keras
from captioning.decoders.base import rnn_layer
from captioning.decoders.recurrent import RecurrentDecoder


class Merge(RecurrentDecoder):
    name = "merge"
    help = "RNN over words, image added to its output (the tutorials' model)"

    def decode(self, cfg, image, words, sequences):
        L = import_keras().layers
        img = L.Dense(cfg.units, activation="relu", name="image_dense")(image)
        seq = rnn_layer(cfg, "rnn", True, sequences)(words)
        return L.Add(name="merge")([L.Reshape((1, cfg.units), name="image_step")(img), seq])  # broadcast over time

    def feed_image(self, layer, image, zeros):
        return [layer("image_dense")(image)], zeros

    def combine(self, layer, context, h):
        return layer("merge")([context[0], h])
