"""The Transformer captioner as one layer: an image encoder over the grid cells, a causal decoder with
learned positions, and the same computation one word at a time with a key/value cache.

Pre-layer-norm blocks (Xiong et al. 2020: they train without the learning-rate warm-up that
post-norm needs), multi-head attention written with ``keras.ops`` so the full pass and the cached
step share every line that matters and run on TensorFlow and JAX alike. Keras'
``MultiHeadAttention`` keeps no cache. keras-hub's ``TransformerDecoder`` does, but keras-hub is
an optional extra here (``[hub]``, for image encoders): a saved run whose layers came from it could
not load without it, and the layer below is short.

The cache is fixed-size (``max_length`` positions, zeros beyond the current one, masked; each word's
key and value are added in with a one-hot of its position), so a step has one shape for the whole
search and JAX compiles it once. A step attends over ``max_length`` keys, which for captions (≈ 30)
costs little beside its output layer.
"""

from __future__ import annotations

import math

from captioning.backend import import_keras

keras = import_keras()
ops = keras.ops
L = keras.layers

NEG = -1e9  # a masked score: exp(NEG − max) is exactly 0 in float32


def _split(x, heads):
    """(B, T, D) → (B, heads, T, D / heads)."""
    return ops.transpose(ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], heads, x.shape[-1] // heads)),
                         (0, 2, 1, 3))


def attend(q, k, v, heads: int, mask=None):
    """Scaled dot-product attention over ``heads`` heads: (output (B, T, D), weights (B, heads, T, S)).
    ``mask`` (broadcast to (B, heads, T, S)) is True where a query may look."""
    depth = q.shape[-1] // heads
    scores = ops.matmul(_split(q, heads), ops.transpose(_split(k, heads), (0, 1, 3, 2))) / math.sqrt(depth)
    if mask is not None:
        scores = ops.where(mask, scores, NEG)
    weights = ops.softmax(scores, axis=-1)
    out = ops.transpose(ops.matmul(weights, _split(v, heads)), (0, 2, 1, 3))
    return ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], q.shape[-1])), weights


class _Block:
    """The layers of one block; ``keep`` hands each to ``CaptionTransformer``, which Keras tracks."""

    def __init__(self, keep, name: str, width: int, cross_cells: int = 0):
        def dense(n, suffix, activation=None):
            return keep(L.Dense(n, activation=activation, name=f"{name}_{suffix}"))
        self.ff1, self.ff2 = dense(4 * width, "ff1", "gelu"), dense(width, "ff2")
        # before self-attention, (with several cells) before cross-attention, before the feed-forward layers
        self.norms = [keep(L.LayerNormalization(epsilon=1e-5, name=f"{name}_norm{i}"))
                      for i in range(3 if cross_cells > 1 else 2)]
        self.q, self.k, self.v, self.o = (dense(width, s) for s in ("query", "key", "value", "out"))
        self.cross = []  # the layers that make the cross-attention's keys and values of the memory
        if cross_cells > 1:
            self.cq, self.ck = dense(width, "cross_query"), dense(width, "cross_key")
            self.cross.append(self.ck)
        if cross_cells:  # one cell: every query's weight on it is 1, so only its value counts
            self.cv, self.co = dense(width, "cross_value"), dense(width, "cross_out")
            self.cross.append(self.cv)

    def attend_cells(self, x, cross: list, heads: int):
        """Cross-attention from the stream ``x`` (B, T, D) to the memory's keys and values ``cross``:
        (output (B, T, D), weights (B, heads, T, cells))."""
        if len(cross) == 1:  # one cell: no query, key or norm would get a gradient
            shape = ops.shape(x)
            return self.co(ops.broadcast_to(cross[0], shape)), ops.ones((shape[0], heads, shape[1], 1), x.dtype)
        out, weights = attend(self.cq(self.norms[1](x)), cross[0], cross[1], heads)
        return self.co(out), weights

    def feed_forward(self, x, drop, training):
        return x + drop(self.ff2(drop(self.ff1(self.norms[-1](x)), training=training)), training=training)


@keras.saving.register_keras_serializable(package="captioning")
class CaptionTransformer(keras.layers.Layer):
    """[image cells (B, P, C), caption ids (B, T)] → next-word probabilities (B, T, V). A pooled
    vector is one cell (P = 1) and gets no encoder block: there is nothing for it to relate."""

    def __init__(self, vocab_size, max_length, cells=1, width=512, blocks=2, heads=8, dropout=0.1, tie=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.cells, self.width = vocab_size, max_length, cells, width
        self.blocks, self.heads, self.dropout_rate, self.tie = blocks, heads, dropout, tie
        owned = []

        def keep(layer):
            owned.append(layer)
            return layer
        self.image_in = L.Dense(width, name="image_in")
        self.encoder = [_Block(keep, "encoder", width)] if cells > 1 else []
        self.cell_positions = L.Embedding(cells, width, name="cell_positions") if cells > 1 else None
        self.memory_norm = L.LayerNormalization(epsilon=1e-5, name="memory_norm")
        if tie:
            from captioning.decoders.layers import TiedEmbedding
            self.words = TiedEmbedding(vocab_size, width, name="embedding")
        else:
            self.words = L.Embedding(vocab_size, width, name="embedding")
            self.out = L.Dense(vocab_size, name="output")
        self.positions = L.Embedding(max_length, width, name="positions")
        self.decoder = [_Block(keep, f"decoder{i}", width, cells) for i in range(blocks)]
        self.final_norm = L.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.drop = L.Dropout(dropout)
        self.block_layers = owned  # so Keras tracks (saves, loads) the blocks' layers too

    def build(self, input_shapes):
        for layer, shape in self._shapes(input_shapes[0][-1]):
            layer.build(shape)

    def _shapes(self, channels):
        w = self.width
        yield self.image_in, (None, None, channels)
        yield self.memory_norm, (None, None, w)
        yield self.words, (None, None)
        yield self.positions, (None, None)
        yield self.final_norm, (None, None, w)
        if not self.tie:
            yield self.out, (None, None, w)
        if self.cell_positions is not None:
            yield self.cell_positions, (None,)
        for block in [*self.encoder, *self.decoder]:
            for layer in block.norms:
                yield layer, (None, None, w)
            for layer in (block.q, block.k, block.v, block.o, block.ff1):
                yield layer, (None, None, w)
            yield block.ff2, (None, None, 4 * w)
            for layer in [*block.cross, *(getattr(block, n) for n in ("cq", "co") if hasattr(block, n))]:
                yield layer, (None, None, w)

    # --- the halves inference uses ----------------------------------------------------------
    def memory(self, cells, training=False):
        """The image cells (B, P, C) → (B, P, width), through the encoder block when there is a grid."""
        m = self.image_in(cells)
        if self.cell_positions is not None:
            m = m + self.cell_positions(ops.arange(self.cells))[None]
        for block in self.encoder:
            h = block.norms[0](m)
            m = m + self.drop(block.o(attend(block.q(h), block.k(h), block.v(h), self.heads)[0]), training=training)
            m = block.feed_forward(m, self.drop, training)
        return self.memory_norm(m)

    @property
    def cross_per_block(self) -> int:
        """Arrays of the memory each block's cross-attention reads: keys and values (one cell: values)."""
        return len(self.decoder[0].cross)

    def cross_keys(self, memory) -> list:
        """Each decoder block's cross-attention keys and values of the memory: computed once per image."""
        return [layer(memory) for block in self.decoder for layer in block.cross]

    def _cross_of(self, cross, i):
        n = self.cross_per_block
        return cross[n * i:n * (i + 1)]

    def step(self, tokens, position, cross, cache, training=False):
        """One word for each row at ``position`` (B,): tokens (B,), ``cross`` from ``cross_keys``,
        ``cache`` each block's self-attention keys and values (B, max_length, width), zero beyond
        the position. Returns (probs (B, V), the new cache, each block's cross-attention averaged over
        its heads (B, blocks, P))."""
        here = ops.one_hot(position, self.max_length)  # (B, max_length): where this word's key goes
        x = self.words(tokens) + self.positions(position)
        seen = (ops.arange(self.max_length)[None, :] <= position[:, None])[:, None, None, :]
        new_cache, maps = [], []
        for i, block in enumerate(self.decoder):
            h = block.norms[0](x)[:, None, :]
            keys = cache[2 * i] + here[:, :, None] * block.k(h)
            values = cache[2 * i + 1] + here[:, :, None] * block.v(h)
            new_cache += [keys, values]
            x = x + block.o(attend(block.q(h), keys, values, self.heads, seen)[0])[:, 0]
            out, weights = block.attend_cells(x[:, None, :], self._cross_of(cross, i), self.heads)
            x = x + out[:, 0]
            maps.append(ops.mean(weights[:, :, 0, :], axis=1))
            x = block.feed_forward(x, self.drop, training)
        return self._probs(self.final_norm(x)), new_cache, ops.stack(maps, axis=1)

    def _probs(self, x):
        return ops.softmax(self.words(x, reverse=True) if self.tie else self.out(x), axis=-1)

    def call(self, inputs, training=False):
        cells, caption = inputs
        memory = self.memory(cells, training)
        steps = ops.shape(caption)[1]
        positions = ops.arange(steps)
        x = self.drop(self.words(caption) + self.positions(positions)[None], training=training)
        causal = (positions[None, :] <= positions[:, None])[None, None]  # (1, 1, T, T): no peeking ahead
        cross = self.cross_keys(memory)
        for i, block in enumerate(self.decoder):
            h = block.norms[0](x)
            x = x + self.drop(block.o(attend(block.q(h), block.k(h), block.v(h), self.heads, causal)[0]),
                              training=training)
            x = x + self.drop(block.attend_cells(x, self._cross_of(cross, i), self.heads)[0],
                              training=training)
            x = block.feed_forward(x, self.drop, training)
        return self._probs(self.final_norm(x))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], input_shapes[1][1], self.vocab_size)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_length": self.max_length,
                "cells": self.cells, "width": self.width, "blocks": self.blocks, "heads": self.heads,
                "dropout": self.dropout_rate, "tie": self.tie}
