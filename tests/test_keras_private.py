"""Keras' private parts that the package uses (captioning/keras_private.py) are there, as used: a
Keras release that moves one fails here by name, not in a user's slower or wrong training."""

import numpy as np

from captioning import keras_private
from captioning.backend import import_keras
from captioning.decoders.lstm import SequenceLSTM

keras = import_keras()


def test_every_private_part_used_is_there():
    assert keras_private.problems() == []


def test_the_lstm_hook_is_still_what_keras_calls(monkeypatch):
    """If Keras stopped calling ``inner_loop``, SequenceLSTM's fast path would be skipped silently."""
    calls = []
    original = SequenceLSTM.inner_loop

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SequenceLSTM, "inner_loop", counted)
    layer = SequenceLSTM(4, return_sequences=True)
    out = layer(np.zeros((2, 3, 5), np.float32))
    assert calls and tuple(out.shape) == (2, 3, 4)


def test_a_missing_part_is_named(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", None)
    assert any("_symbolic_build" in p for p in keras_private.problems())
