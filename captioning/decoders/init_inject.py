"""Init-inject (Show and Tell's family): the image sets the RNN's initial state."""

from __future__ import annotations

from captioning.backend import import_keras
from captioning.decoders.base import rnn_layer
from captioning.decoders.recurrent import RecurrentDecoder


class InitInject(RecurrentDecoder):
    name = "init-inject"
    help = "image → the RNN's initial state"
    defaults = {"tie_embeddings": True}  # measured better (docs/results.md, "Tied word vectors")

    def decode(self, cfg, image, words, sequences):
        L = import_keras().layers
        states = [L.Dense(cfg.units, activation="tanh", name="init_h")(image)]
        if cfg.rnn == "lstm":
            states.append(L.Dense(cfg.units, activation="tanh", name="init_c")(image))
        return rnn_layer(cfg, "rnn", True, sequences)(words, initial_state=states)

    def feed_image(self, layer, image, zeros):
        return [], [layer("init_h")(image)] + ([layer("init_c")(image)] if len(zeros) == 2 else [])
