"""Every use of Keras' private parts, in one place, each one checked by ``problems()``
(tests/test_keras_private.py): a Keras release that moves or changes one fails that test by name,
rather than leaving training silently slower or wrong.

- ``keras.layers.LSTM.inner_loop(sequences, initial_state, mask, training)``: the hook that
  ``decoders.lstm.SequenceLSTM`` overrides for its cheaper backward pass;
- ``Model._symbolic_build(data_batch=...)`` and ``Model._maybe_symbolic_build``: building the
  optimizer and metrics inside a multi-worker strategy's scope (keras-team/keras#20585);
- ``keras.src.backend.tensorflow.trainer.reduce_per_replica(values, strategy, reduction)``: the
  per-step log reduction that multi-worker training replaces (same issue).

Tested Keras versions: setup.cfg's range; docs/design.md says which were run.
"""

from __future__ import annotations

import inspect

from captioning.backend import import_keras

LSTM_HOOK = ("inner_loop", ["self", "sequences", "initial_state", "mask", "training"])


def build_in_scope(model, batch) -> None:
    """Build ``model``'s optimizer and metrics from one local ``batch`` now (call it inside the
    strategy's scope), and make ``fit``'s own eager first-batch build a no-op."""
    model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def replace_log_reduction(make) -> None:
    """Replace TensorFlow's trainer's ``reduce_per_replica`` by ``make(original)``, once per process."""
    from keras.src.backend.tensorflow import trainer as tf_trainer
    if getattr(tf_trainer.reduce_per_replica, "captioning_patch", False):
        return
    replacement = make(tf_trainer.reduce_per_replica)
    replacement.captioning_patch = True
    tf_trainer.reduce_per_replica = replacement


def problems() -> list[str]:
    """What this Keras lacks of the private parts above (an empty list: all there, as used)."""
    keras = import_keras()
    found = []

    def params(fn):
        return list(inspect.signature(fn).parameters)

    name, expected = LSTM_HOOK
    hook = getattr(keras.layers.LSTM, name, None)
    if hook is None or params(hook) != expected:
        found.append(f"keras.layers.LSTM.{name}{tuple(expected[1:])} (SequenceLSTM's fast path)")
    build = getattr(keras.Model, "_symbolic_build", None)
    if build is None or "data_batch" not in params(build) or not hasattr(keras.Model, "_maybe_symbolic_build"):
        found.append("Model._symbolic_build(data_batch=...) / Model._maybe_symbolic_build (multi-worker fit)")
    if keras.backend.backend() == "tensorflow":
        try:
            from keras.src.backend.tensorflow import trainer as tf_trainer
            reduce = tf_trainer.reduce_per_replica
        except (ImportError, AttributeError):
            reduce = None
        if reduce is None or params(reduce)[:3] != ["values", "strategy", "reduction"]:
            found.append("keras.src.backend.tensorflow.trainer.reduce_per_replica(values, strategy, reduction)")
    return found
