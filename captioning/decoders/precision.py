"""A trained model's one-token steps in reduced precision: the same float32 weights, bfloat16 or
float16 arithmetic (``hardware.reduced_precision`` says which is faster on this machine).

Re-ranking's second search uses it: its captions are only candidates that the neighbours and the
matcher then judge, so the last digits of its log-probabilities matter little, and its matrix
products run about 1.5× as fast (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from captioning.backend import import_keras
from captioning.decoders.steps import StepModel


def recast(model, policy: str):
    """A copy of ``model`` whose layers compute in the Keras dtype ``policy`` (e.g. "mixed_bfloat16");
    the variables, and so the weights, stay float32 and equal to ``model``'s. A softmax of its own
    (an ``Activation`` layer) stays float32, as Keras' mixed-precision guide advises: the
    probabilities keep their digits, and on a CPU it is no slower."""
    keras = import_keras()

    def in_policy(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Layer):  # not a bare operation of the graph (ops.not_equal)
            softmax = isinstance(layer, (keras.layers.Activation, keras.layers.Softmax))
            config["dtype"] = "float32" if softmax else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_policy)  # input layers keep their dtypes
    copy.set_weights(model.get_weights())
    return copy


class Float32Steps(StepModel):
    """Another step model whose log-probabilities and extras come back as float32, whatever it computes
    in: the searches add them up in float64, and NumPy has no bfloat16 arithmetic of its own. The
    state stays as the step model returned it, to be fed back as it is."""

    def __init__(self, inner: StepModel):
        self.inner = inner

    def start(self, features):
        return self.inner.start(features)

    def step(self, tokens, state):
        log_probs, state = self.inner.step(tokens, state)
        return np.asarray(log_probs, np.float32), state

    def step_topk(self, tokens, state, n):
        values, ids, state = self.inner.step_topk(tokens, state, n)
        return np.asarray(values, np.float32), ids, state

    def extras(self, state):
        extra = self.inner.extras(state)
        return None if extra is None else np.asarray(extra, np.float32)
