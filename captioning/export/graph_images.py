"""Image files to pixels inside a TensorFlow graph, exactly as ``features.images.load_image`` does
with Pillow, so a SavedModel given the bytes of a photo sees the pixels the feature store saw.

Two details make TensorFlow's own ops differ from Pillow by up to 20 levels: ``decode_jpeg``'s fast
integer DCT (Pillow uses the accurate one), and ``tf.image.resize``, which works in floating point
where Pillow's bilinear resize runs two 8-bit passes (horizontal, then vertical) with fixed-point
weights (22 fractional bits). Both are reproduced here: JPEGs decode with the accurate DCT, and the
resize computes Pillow's weights (``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in its
``Resample.c``) and sums in float64, where these integer sums are exact.

Pillow's C code (``ImagingResampleInner``) passes horizontally first, as here. Pillow 13 does so
for every photo at least as wide as tall (checked pixel for pixel); for some taller photos it passes
vertically first, and a few pixels then differ by one level.

Not reproduced: EXIF rotation (rotate such photos before sending them) and compositing transparent
PNGs over white (their alpha channel is dropped).
"""

from __future__ import annotations

import tensorflow as tf

PRECISION_BITS = 22  # 32 - 8 - 2, as in Pillow


def decode(data):
    """Encoded image bytes → (H, W, 3) uint8 RGB."""
    return tf.cond(tf.io.is_jpeg(data),
                   lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_image(data, channels=3, expand_animations=False))


def _coefficients(in_size, out_size: int):
    """Pillow's bilinear weights for one axis, as integers: (taps, out_size) input indices and weights."""
    scale = tf.cast(in_size, tf.float64) / out_size
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    taps = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    low = tf.maximum(tf.cast(tf.floor(center - support + 0.5), tf.int32), 0)
    high = tf.minimum(tf.cast(tf.floor(center + support + 0.5), tf.int32), in_size)
    index = low[None, :] + tf.range(taps)[:, None]  # (taps, out)
    x = (tf.cast(index, tf.float64) - center[None, :] + 0.5) * (1.0 / filterscale)
    weight = tf.where(index < high[None, :], tf.maximum(1.0 - tf.abs(x), 0.0), 0.0)
    weight /= tf.reduce_sum(weight, axis=0, keepdims=True)
    weight = tf.floor(0.5 + weight * (1 << PRECISION_BITS))
    return tf.minimum(index, in_size - 1), weight


def _pass(pixels, out_size: int):
    """One 8-bit pass along axis 1 of (rows, in, 3) float64 pixels: (rows, out_size, 3)."""
    index, weight = _coefficients(tf.shape(pixels)[1], out_size)

    def add(total, tap):
        return total + tf.gather(pixels, index[tap], axis=1) * weight[tap][None, :, None]
    total = tf.foldl(add, tf.range(tf.shape(index)[0]),
                     initializer=tf.fill([tf.shape(pixels)[0], out_size, 3], tf.constant(2.0 ** (PRECISION_BITS - 1),
                                                                                             tf.float64)))
    return tf.clip_by_value(tf.floor(total / (1 << PRECISION_BITS)), 0.0, 255.0)


def resize(image, size: int):
    """(H, W, 3) uint8 → (size, size, 3) float32, as Pillow's ``resize((size, size), BILINEAR)``."""
    def horizontal(pixels):
        return tf.cond(tf.shape(pixels)[1] == size, lambda: pixels, lambda: _pass(pixels, size))

    def vertical(pixels):
        return tf.transpose(horizontal(tf.transpose(pixels, [1, 0, 2])), [1, 0, 2])
    return tf.cast(vertical(horizontal(tf.cast(image, tf.float64))), tf.float32)
