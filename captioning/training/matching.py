"""Training the image–caption matcher (``captioning.inference.matching``) that re-ranking consults.

Contrastive, as in VSE++ and CLIP: a batch holds B train images with one of each image's captions
drawn at random; the B × B cosines, scaled by a learned temperature, are read as B-way
classifications both ways (each photo picks its caption, each caption its photo). It takes about
40 s for Flickr8k's 6,000 train images on 2 CPU cores; the run's seed fixes the initial weights and
every batch.
"""

from __future__ import annotations

import numpy as np

from captioning import interrupt
from captioning.backend import import_keras
from captioning.console import count, progress
from captioning.inference import matching
from captioning.inference.consensus import pooled_features
from captioning.run import save_model

keras = import_keras()
ops = keras.ops

BATCH = 128
EPOCHS = 60  # passes over the train images; 30 or 100 did no better on Flickr8k dev (docs/experiments.md)


class ContrastiveLogits(keras.layers.Layer):
    """(image vectors, caption vectors) → the scaled cosine matrix and its transpose, stacked (2B, B)."""

    def build(self, input_shape):
        self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(float(np.log(1 / 0.07))),
                                         name="log_scale")

    def call(self, inputs):
        images, captions = inputs
        scale = ops.exp(ops.minimum(self.log_scale, float(np.log(100.0))))  # CLIP's cap on the temperature
        logits = scale * ops.matmul(images, ops.transpose(captions))
        return ops.concatenate([logits, ops.transpose(logits)], axis=0)


class PairBatches(keras.utils.PyDataset):
    """``passes`` passes over the images as one Keras epoch (Keras' per-epoch overhead, paid
    sixty times, cost more than the steps on a small set). Each pass shuffles the images into
    batches of ``batch`` (the remainder dropped: every batch must be square), each image with one
    of its captions drawn at random; the pass's seed alone decides, so it repeats exactly."""

    def __init__(self, features, captions: list, batch: int, max_length: int, seed: int, passes: int):
        super().__init__()
        self.features, self.captions, self.batch, self.max_length = features, captions, batch, max_length
        self.seed, self.passes, self.per_pass = seed, passes, len(features) // batch
        self.labels = np.tile(np.arange(batch, dtype=np.int32), 2)
        self._pass = None

    def __len__(self):
        return self.passes * self.per_pass

    def __getitem__(self, i):
        n, i = divmod(i, self.per_pass)
        if n != self._pass:
            rng = np.random.default_rng([self.seed, n])
            self.order = rng.permutation(len(self.features))
            self.pick, self._pass = [int(rng.integers(len(c))) for c in self.captions], n
        rows = self.order[i * self.batch:(i + 1) * self.batch]
        ids = matching.padded([self.captions[r][self.pick[r]] for r in rows], self.max_length)
        return (self.features[rows], ids), self.labels


def train_matcher(features, captions: list, vocab_size: int, max_length: int, path, seed: int = 0,
                  epochs: int = EPOCHS, bar: bool | None = None):
    """``features``: (N, D) the train images'; ``captions``: per image, its captions as word-id lists
    without start and end tokens. Saves the matcher to ``path`` (written whole, then renamed)."""
    features = np.asarray(features, np.float32)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    keras.utils.set_random_seed(seed)
    model = matching.build(features.shape[1], vocab_size, max_length, mean, std)
    logits = ContrastiveLogits(name="contrastive")(model.outputs)
    trainer = keras.Model(model.inputs, logits)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = PairBatches(features, captions, min(BATCH, len(features)), max_length, seed, epochs)
    shown = progress(total=len(batches), desc="matcher", unit="batch", disable=None if bar else True)
    tick = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda step, logs: (shown.update(1), shown.set_postfix(loss=f"{logs['loss']:.3f}")))
    try:
        trainer.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[tick, interrupt.keras_callback()])
    finally:
        shown.close()
    save_model(model, path)
    return model


def write(p, verbose="auto") -> None:
    """The matcher of a ``fit`` plan's train images, into its run folder (``verbose`` as Keras' fit);
    with ``--matcher-epochs 0`` none (and an older one is removed: it would belong to other epochs)."""
    if not p.options.matcher_epochs:
        (p.out / matching.FILE).unlink(missing_ok=True)
        return
    images = sorted(p.train_references)
    rows = {}
    for image, ids in zip(p.train.images, p.train.ids):
        rows.setdefault(image, []).append([int(i) for i in ids[1:-1]])  # without start and end
    features = pooled_features(p.store, images)
    if verbose != 0:
        print(f"Training the image–caption matcher for re-ranking on {count(len(images), 'train image')}.",
              flush=True)
    train_matcher(features, [rows[i] for i in images], len(p.run.vocab), p.run.decoder.max_length,
                  p.out / matching.FILE, seed=p.options.seed, epochs=p.options.matcher_epochs, bar=verbose == 1)
