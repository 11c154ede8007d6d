"""Custom layers every decoder uses, registered so ``.keras`` files load in safe mode."""

from __future__ import annotations

import numpy as np

from captioning.backend import import_keras

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


@keras.saving.register_keras_serializable(package="captioning")
class TiedEmbedding(keras.layers.Layer):
    """Word vectors that are also the output layer (Press & Wolf 2017; Inan et al. 2017).

    Called on word ids it embeds them (id 0, padding, is masked); called with ``reverse=True`` on
    (…, embed_dim) vectors it returns next-word logits through the transposed table plus a per-word
    bias. One table learns from both ends, halving the word parameters a small caption set must fit.
    """

    def __init__(self, input_dim: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = input_dim, output_dim
        self.supports_masking = True

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(shape=(self.input_dim, self.output_dim), initializer="uniform",
                                          name="embeddings")
        self.output_bias = self.add_weight(shape=(self.input_dim,), initializer="zeros", name="output_bias")

    def call(self, inputs, reverse=False):
        ops = keras.ops
        if reverse:
            return ops.matmul(inputs, ops.transpose(self.embeddings)) + self.output_bias
        return ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)

    def compute_mask(self, inputs, mask=None):
        if "int" in str(inputs.dtype):
            return keras.ops.not_equal(inputs, 0)
        return mask  # reversed: the hidden vectors' own padding mask passes through

    def compute_output_spec(self, inputs, reverse=False):
        shape = (*inputs.shape[:-1], self.input_dim) if reverse else (*inputs.shape, self.output_dim)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim}


@keras.saving.register_keras_serializable(package="captioning")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy against targets smoothed by ``epsilon``: (1 − ε)·(−log p[word]) +
    ε·mean over the vocabulary of (−log p), on the softmax outputs every decoder gives. Registered so
    a checkpoint compiled with it resumes."""

    def __init__(self, epsilon: float = 0.1, name: str = "smoothed_cross_entropy", **kwargs):
        kwargs.setdefault("reduction", "mean_with_sample_weight")
        super().__init__(name=name, **kwargs)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        ops = keras.ops
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        word = ops.take_along_axis(log_p, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1)[..., 0]
        return -(1.0 - self.epsilon) * word - self.epsilon * ops.mean(log_p, axis=-1)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
