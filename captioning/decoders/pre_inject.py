"""Pre-inject (Vinyals et al. 2015): the image, projected to a word embedding, is the RNN's first input."""

from __future__ import annotations

from captioning.backend import import_keras
from captioning.decoders.base import rnn_layer
from captioning.decoders.recurrent import RecurrentDecoder


class PreInject(RecurrentDecoder):
    name = "pre-inject"
    help = "image as the RNN's first input step"
    output_offset = 1  # the image step predicts nothing

    def decode(self, cfg, image, words, sequences):
        L = import_keras().layers
        img = L.Dense(cfg.embed_dim, activation="relu", name="image_dense")(image)
        img = L.Reshape((1, cfg.embed_dim), name="image_step")(img)
        return rnn_layer(cfg, "rnn", True, sequences)(L.Concatenate(axis=1, name="image_then_words")([img, words]))

    def feed_image(self, layer, image, zeros):
        _, states = layer("rnn").cell(layer("image_dense")(image), zeros if len(zeros) == 2 else zeros[0])
        return [], list(states) if isinstance(states, (list, tuple)) else [states]
