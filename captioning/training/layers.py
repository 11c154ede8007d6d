"""Custom layers, registered so ``.keras`` files load in safe mode."""

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
        self.mean.assign(np.asarray(mean, np.float32))
        self.std.assign(np.maximum(np.asarray(std, np.float32), 1e-6 * max(float(np.max(std)), 1e-30)))


def feature_statistics(store, rows, block: int = 4096):
    """Mean and standard deviation of the given store rows, streamed (COCO-sized stores fit)."""
    rows = np.sort(np.unique(np.asarray(rows)))
    total, sq, n = None, None, 0
    for i in range(0, len(rows), block):
        x = store.rows(rows[i:i + block]).astype(np.float64).reshape(len(rows[i:i + block]), -1)
        total = x.sum(0) if total is None else total + x.sum(0)
        sq = (x ** 2).sum(0) if sq is None else sq + (x ** 2).sum(0)
        n += len(x)
    mean = total / n
    return mean, np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
