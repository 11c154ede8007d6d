"""Soft attention over the CNN grid ("Show, Attend and Tell"): one layer whose ``call`` (teacher
forcing) and ``step`` (one token) share code; see ``soft_attention.AttentionDecoder``."""

from __future__ import annotations

import numpy as np

from captioning.backend import import_keras
from captioning.decoders.base import Decoder
from captioning.decoders.steps import StepModel, log_probs, run_rows


class Attention(Decoder):
    name = "attention"
    help = "soft attention over a --spatial grid (Show, Attend and Tell)"
    needs_spatial = True
    can_tie = False  # its deep output layer reads [h, context, word], not one vector in word space
    # Adam at 5e-4: on real Flickr8k grids every seed beat 1e-3's best on BLEU-4 (docs/results.md)
    defaults = {"learning_rate": 5e-4}

    def has_attention_maps(self, cfg):
        return True

    def build(self, cfg, sequences=False):
        keras = import_keras()
        from captioning.decoders.layers import FeatureStandardization, LastValidStep
        from captioning.decoders.soft_attention import AttentionDecoder
        grid = keras.Input((cfg.grid_size, cfg.feature_dim), name="image")
        caption = keras.Input((None,), dtype="int32", name="caption")
        probs = AttentionDecoder(cfg.vocab_size, cfg.embed_dim, cfg.units, cfg.attention_dim, cfg.dropout,
                                 cfg.doubly_stochastic, name="attention")(
            [FeatureStandardization(name="image_norm")(grid), caption])
        if not sequences:
            probs = LastValidStep(0, name="last_step")([probs, caption])
        return keras.Model([grid, caption], probs, name=f"attention_{'sequences' if sequences else 'next_word'}")

    def step_model(self, model, cfg):
        return AttentionSteps(model)


class AttentionSteps(StepModel):
    """The attention decoder one word at a time; the state carries every step's attention map."""

    def __init__(self, model):
        self.layer, self.norm = model.get_layer("attention"), model.get_layer("image_norm")

    def _start(self, inputs):
        grid = self.norm(inputs[0])
        return [grid, self.layer.grid_attention(grid), *self.layer.initial_state(grid)]

    def start(self, features):
        grid, projected, h, c = run_rows(self._start, [np.asarray(features, np.float32)])
        return [grid, projected, h, c, np.zeros((len(features), 0, grid.shape[1]), np.float32)]

    def step(self, tokens, state):
        grid, projected, h, c, alphas = state
        probs, h, c, alpha = run_rows(lambda x: self.layer.step(*x),
                                      [grid, projected, np.asarray(tokens, np.int32), h, c])
        return log_probs(probs), [grid, projected, h, c, np.concatenate([alphas, alpha[:, None, :]], axis=1)]

    def extras(self, state):
        return state[-1]  # (rows, steps so far, grid cells)
