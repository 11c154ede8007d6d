"""A Transformer decoder (as in keras-io's Flickr8k captioning example, and today's captioning code):
the image's grid cells — or its pooled vector as one cell — through an encoder block, then causal
decoder blocks that attend to the words so far and to the cells. The layer is
``transformer_blocks.CaptionTransformer``; its ``step`` decodes one word with a key/value cache, so a
word costs one step, not a re-run over the prefix."""

from __future__ import annotations

import functools

import numpy as np

from captioning.backend import import_keras
from captioning.decoders.base import Decoder
from captioning.decoders.steps import StepModel, run_rows
from captioning.errors import UsageError


class Transformer(Decoder):
    name = "transformer"
    help = "a Transformer over the grid cells (--spatial) or the pooled vector; --blocks, --heads"
    needs_spatial = None  # a grid's cells, or the pooled vector as one cell
    # 0.1: the recurrent decoders' 0.5 would drop half of every residual branch. 256 wide, 4 heads,
    # Adam at 5e-4: the setting measured on real Flickr8k grids (docs/results.md); half as wide as the
    # recurrent decoders, so an epoch on 2 cores takes 3 minutes, not 10
    defaults = {"dropout": 0.1, "units": 256, "embed_dim": 256, "heads": 4, "learning_rate": 5e-4}

    def fit_defaults(self, given):
        filled = super().fit_defaults(given)
        if given.get("embed_dim") is None:  # its word vectors are as wide as its blocks
            filled["embed_dim"] = given.get("units") or filled["embed_dim"]
        return filled

    def has_attention_maps(self, cfg):
        return cfg.grid_size > 1  # a block's cross-attention (the last's unless told), averaged over its heads

    def validate(self, cfg):
        super().validate(cfg)
        if cfg.embed_dim != cfg.units:
            raise UsageError(f"the transformer's word vectors are as wide as its blocks: --embed-dim {cfg.embed_dim} "
                             f"and --units {cfg.units} must be equal (or give --units alone: the word vectors follow it).")
        if cfg.units % cfg.heads:
            raise UsageError(f"--heads {cfg.heads} must divide --units {cfg.units}: each head takes an equal share.")

    def build(self, cfg, sequences=False):
        keras = import_keras()
        from captioning.decoders.layers import FeatureStandardization, LastValidStep
        from captioning.decoders.transformer_blocks import CaptionTransformer
        shape = (cfg.grid_size, cfg.feature_dim) if cfg.grid_size else (cfg.feature_dim,)
        image = keras.Input(shape, name="image")
        caption = keras.Input((None,), dtype="int32", name="caption")
        cells = FeatureStandardization(name="image_norm")(image)
        if not cfg.grid_size:
            cells = keras.layers.Reshape((1, cfg.feature_dim), name="one_cell")(cells)
        probs = CaptionTransformer(cfg.vocab_size, cfg.max_length, max(cfg.grid_size, 1), cfg.units, cfg.blocks,
                                   cfg.heads, cfg.dropout, cfg.tie_embeddings, name="transformer")([cells, caption])
        if not sequences:
            probs = LastValidStep(0, name="last_step")([probs, caption])
        return keras.Model([image, caption], probs, name=f"transformer_{'sequences' if sequences else 'next_word'}")

    def step_model(self, model, cfg):
        return TransformerSteps(model, cfg)


class TransformerSteps(StepModel):
    """State: the position (rows,), each block's cross-attention keys and values of the image, each
    block's self-attention cache, and (for a grid) the attention maps so far, kept outside the graph.
    The maps are block ``map_block``'s (0 = the first; by default -1, the last): the step gives every
    block's, so choosing another needs no new graph."""

    map_block = -1

    def __init__(self, model, cfg):
        keras = import_keras()
        layer, norm = model.get_layer("transformer"), model.get_layer("image_norm")
        self.layer, self.grid = layer, cfg.grid_size > 1
        blocks, width, length = layer.blocks, layer.width, layer.max_length
        image = keras.Input(model.inputs[0].shape[1:], name="image")
        cells = norm(image)
        if not cfg.grid_size:
            cells = model.get_layer("one_cell")(cells)
        self.starter = keras.Model([image], _Call(layer.cross_keys, "cross_keys")(_Call(layer.memory, "memory")(cells)))
        token = keras.Input((), dtype="int32", name="token")
        position = keras.Input((), dtype="int32", name="position")
        cross = [keras.Input((layer.cells, width), name=f"cross_{i}") for i in range(layer.cross_per_block * blocks)]
        cache = [keras.Input((length, width), name=f"cache_{i}") for i in range(2 * blocks)]
        self._inputs = [token, position, *cross, *cache]
        probs, new_cache, alpha = _Step(layer)(self._inputs)
        self._outputs = (probs, new_cache, alpha)
        log_p = keras.ops.log(keras.ops.maximum(probs, 1e-12))
        self.stepper = keras.Model(self._inputs, [log_p, alpha, *new_cache], name="one_step")
        self._log_p = log_p
        self._topk = {}
        self._sizes = (2 * blocks, length, width)  # self-attention keys and values: the cache

    def start(self, features):
        cross = run_rows(self.starter.predict_on_batch, [np.asarray(features, np.float32)])
        n, (pairs, length, width) = len(features), self._sizes
        cache = [np.zeros((n, length, width), np.float32) for _ in range(pairs)]
        maps = [np.zeros((n, 0, cross[0].shape[1]), np.float32)] if self.grid else []
        return [np.zeros(n, np.int32), *cross, *cache, *maps]

    def _advance(self, model, tokens, state):
        position, rest = state[0], state[1:]
        maps = [rest.pop()] if self.grid else []
        out = run_rows(model.predict_on_batch, [np.asarray(tokens, np.int32), position, *rest])
        pairs, ncross = self._sizes[0], len(rest) - self._sizes[0]
        cross, heads, alpha, cache = rest[:ncross], out[:-pairs - 1], out[-pairs - 1], out[-pairs:]
        maps = [np.concatenate([maps[0], alpha[:, None, self.map_block]], axis=1)] if self.grid else []
        return heads, [position + 1, *cross, *cache, *maps]

    def step(self, tokens, state):
        (log_p,), state = self._advance(self.stepper, tokens, state)
        return log_p, state

    def step_topk(self, tokens, state, n):
        """Selection inside the compiled step: only (rows, n) leave the graph, not (rows, vocabulary)."""
        if n not in self._topk:
            keras = import_keras()
            values, ids = keras.ops.top_k(self._log_p, min(n, self._log_p.shape[-1]))
            self._topk[n] = keras.Model(self._inputs, [values, ids, self._outputs[2], *self._outputs[1]],
                                        name=f"one_step_top{n}")
        (values, ids), state = self._advance(self._topk[n], tokens, state)
        return values, ids, state

    def extras(self, state):
        return state[-1] if self.grid else None  # (rows, steps so far, grid cells)


@functools.cache
def _layer_class():
    keras = import_keras()

    class Call(keras.layers.Layer):
        """A method of the trained layer as a layer of an inference graph (never saved)."""

        def __init__(self, fn, name):
            super().__init__(name=name)
            self.fn = fn

        def call(self, inputs):
            return self.fn(inputs)

    class Step(keras.layers.Layer):
        def __init__(self, layer):
            super().__init__(name="step")
            self.layer = layer

        def call(self, inputs):
            ncross = self.layer.cross_per_block * self.layer.blocks
            token, position, rest = inputs[0], inputs[1], inputs[2:]
            return self.layer.step(token, position, rest[:ncross], rest[ncross:])

    return Call, Step


def _Call(fn, name):
    return _layer_class()[0](fn, name)


def _Step(layer):
    return _layer_class()[1](layer)
