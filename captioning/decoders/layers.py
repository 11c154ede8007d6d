"""Custom layers every decoder uses, registered so ``.keras`` files load in safe mode."""

from __future__ import annotations

import numpy as np

from captioning.console import import_keras

keras = import_keras()


@keras.saving.register_keras_serializable(package="captioning")
class FeatureStandardization(keras.layers.Layer):
    """(x − mean) / std with statistics of the training features, stored as non-trainable weights.

    CNN features come at very different scales (random-init EfficientNet averages ~1e-5,
    ImageNet ResNet50 ~0.5); standardising them lets one learning rate fit every backbone.
    """

    def build(self, input_shape):
        dim = input_shape[-1]
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="std")

    def call(self, x):
        return (x - self.mean) / self.std

    def set_statistics(self, mean, std):
        """A feature that never varies (one train image, a dead channel) is centred, not scaled: dividing
        by a near-zero spread would turn any other value into a huge input."""
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        scale = max(float(np.max(std)), float(np.max(np.abs(mean))), 1e-12)
        self.mean.assign(mean)
        self.std.assign(np.where(std > 1e-4 * scale, std, 1.0).astype(np.float32))


@keras.saving.register_keras_serializable(package="captioning")
class LastValidStep(keras.layers.Layer):
    """Per-step outputs (B, T, U) and the caption ids (B, T') → the output at each row's last
    real token (B, U). ``offset`` counts steps before the first word (pre-inject's image step).

    The next-word models use this instead of ``return_sequences=False``: with an initial state
    and a padding mask, Keras' RNN lets padded steps leak into the final output, whereas the
    per-step outputs are exact.
    """

    def __init__(self, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, inputs, mask=None):
        hidden, caption = inputs
        ops = keras.ops
        n = ops.sum(ops.cast(ops.not_equal(caption, 0), "int32"), axis=1)
        last = ops.maximum(n - 1 + self.offset, 0)
        steps = ops.arange(ops.shape(hidden)[1], dtype="int32")
        pick = ops.cast(ops.equal(steps[None, :], last[:, None]), hidden.dtype)
        return ops.sum(hidden * pick[:, :, None], axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[0][2])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="captioning")
class RepeatAlong(keras.layers.Layer):
    """A vector (B, D) and a sequence (B, T, ·) → the vector at every step (B, T, D), for any T: the
    teacher-forced graph sees whole captions of varying length, the next-word graph a fixed prefix.

    The output carries the sequence's padding mask: concatenated beside the words, a mask-less copy
    would unmask the padding (Concatenate keeps a step when any part is unmasked), and the padded
    steps after a short prefix would then leak into an RNN's final output."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        vector, steps = inputs
        ops = keras.ops
        return ops.broadcast_to(vector[:, None, :], (ops.shape(steps)[0], ops.shape(steps)[1], ops.shape(vector)[-1]))

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[1]

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], input_shapes[1][1], input_shapes[0][-1])
