"""``CaptionScore``: the dev split's BLEU-4 after every epoch, so training can stop and keep the best
epoch by what users judge (the captions) rather than by validation loss alone.

Greedy decoding of the dev images with the epoch's weights takes a few seconds on Flickr8k; the
score is logged as ``val_bleu4`` beside ``val_loss`` in ``history.csv``.
"""

from __future__ import annotations

import numpy as np

from captioning import decoders
from captioning.backend import import_keras
from captioning.decoders.steps import WithoutTokens
from captioning.metrics.bleu import bleu_scores
from captioning.inference.search import Greedy

keras = import_keras()


class CaptionScore(keras.callbacks.Callback):
    """Placed first among the callbacks, so early stopping and checkpoints see ``val_bleu4``."""

    def __init__(self, plan, max_images: int = 1000):
        super().__init__()
        refs = plan.dev_references
        self.images = sorted(refs)[:max_images]
        self.refs = [refs[i] for i in self.images]
        self.features = plan.store[self.images].astype(np.float32)
        self.plan = plan
        self._next_word = self._steps = None

    def _step_model(self):
        cfg, vocab = self.plan.run.decoder, self.plan.run.vocab
        if self._steps is None:  # built once; set_weights below updates the layers it reads
            self._next_word = decoders.build(cfg) if self.plan.fast else self.model
            self._steps = WithoutTokens(decoders.step_model(self._next_word, cfg),
                                        [vocab.pad_id, vocab.unk_id, vocab.start_id])
        if self._next_word is not self.model:
            self._next_word.set_weights(self.model.get_weights())
        return self._steps

    def on_epoch_end(self, epoch, logs=None):
        vocab = self.plan.run.vocab
        hyps = Greedy()(self._step_model(), self.features, vocab.start_id, vocab.end_id,
                        self.plan.run.decoder.max_length)
        if logs is not None:
            logs["val_bleu4"] = bleu_scores(self.refs, [vocab.decode(t) for t in hyps.tokens])["BLEU-4"]
