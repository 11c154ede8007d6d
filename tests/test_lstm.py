import numpy as np

from captioning.backend import import_keras
from captioning.decoders import DecoderConfig, lstm
from captioning.decoders import build as build_decoder
from captioning.decoders.lstm import SequenceLSTM

keras = import_keras()
L = keras.layers


def _model(lstm_class):
    """Words → Dense → LSTM started from states computed from the image; per-step outputs plus the
    last cell state, so every gradient the LSTM passes back (inputs, initial h and c, its weights)
    reaches some trainable weight."""
    words, image = keras.Input((5, 4)), keras.Input((3,))
    h0, c0 = L.Dense(6, activation="tanh")(image), L.Dense(6, activation="tanh")(image)
    seq, _, c_last = lstm_class(6, return_sequences=True, return_state=True)(L.Dense(4)(words),
                                                                             initial_state=[h0, c0])
    return keras.Model([words, image], L.Concatenate(axis=1)([seq, L.Reshape((1, 6))(c_last)]))


def test_sequence_lstm_computes_keras_lstm_values_and_gradients():
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(8, 5, 4)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")]
    target = rng.normal(size=(8, 6, 6)).astype("float32")
    keras.utils.set_random_seed(0)
    reference, ours = _model(L.LSTM), _model(SequenceLSTM)
    weights = [w + rng.normal(size=w.shape).astype("float32") * 0.3 for w in reference.get_weights()]
    outputs, after = [], []
    for model in (reference, ours):
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(1.0), "mse")  # weights after one step = weights − gradient
        outputs.append(model.predict_on_batch(x))
        model.train_on_batch(x, target)
        after.append(model.get_weights())
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-6)
    for theirs, mine, w in zip(*after, weights):
        assert not np.allclose(theirs, w)  # every weight got a gradient
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_fast_path_decoders_train_through_sequence_lstm(monkeypatch):
    calls = []
    real = lstm.lstm_sequence
    monkeypatch.setattr(lstm, "lstm_sequence", lambda *a: calls.append(1) or real(*a))
    for kind in ("merge", "init-inject", "pre-inject"):
        cfg = DecoderConfig(kind, vocab_size=12, feature_dim=6, max_length=8, embed_dim=8, units=8)
        fast, classic = build_decoder(cfg, sequences=True), build_decoder(cfg)
        assert isinstance(fast.get_layer("rnn"), SequenceLSTM) and type(classic.get_layer("rnn")) is L.LSTM
        before = len(calls)
        fast([np.zeros((2, 6), "float32"), np.ones((2, 5), "int32")])
        assert len(calls) > before, kind
