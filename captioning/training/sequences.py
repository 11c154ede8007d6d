"""Keras ``PyDataset``s that feed decoders from a caption table and an HDF5 ``FeatureStore``.

``PairSequence`` is the textbook formulation: each caption becomes partial-caption → next-word
pairs (``startseq`` → ``a``, ``startseq a`` → ``dog``, …, ``startseq a dog runs`` → ``endseq``),
with sparse integer targets. ``CaptionSequence`` feeds whole captions for the teacher-forced fast
path. Both read only the feature rows of the batch from HDF5, pad each batch only as far as its own
longest sequence (``pad_length=None``) or to a fixed length, and reshuffle every epoch from a seed.

``fit`` uses a fixed ``pad_length``: Keras' TensorFlow adapter fixes the batch signature from the
first two batches it sees, so later, differently padded batches would be rejected; fixed shapes
also compile once on every backend.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from captioning.console import import_keras
from captioning.data.text import tokenize

keras = import_keras()


@dataclasses.dataclass
class EncodedCaptions:
    """Token-id captions (start and end included) and the image each belongs to."""

    images: list
    ids: list

    @classmethod
    def from_table(cls, table, vocab, max_length: int) -> "EncodedCaptions":
        images, ids = [], []
        for image, caption in zip(table["image"], table["caption"]):
            words = tokenize(caption, vocab.cleaning)[: max_length - 2]  # long captions are cut
            images.append(image)
            ids.append(np.array(vocab.encode(words), dtype=np.int32))
        return cls(images, ids)

    def pairs(self):
        """Every (caption index, prefix length) of the textbook formulation."""
        return [(c, t) for c, seq in enumerate(self.ids) for t in range(1, len(seq))]


def pad(seqs, length=None, offset=0) -> np.ndarray:
    """Post-padded int32 matrix (pad id 0); ``offset`` leading zeros before each row."""
    length = length or max(len(s) for s in seqs) + offset
    out = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        s = s[: length - offset]
        out[i, offset:offset + len(s)] = s
    return out


class _FeatureBatches(keras.utils.PyDataset):
    def __init__(self, captions: EncodedCaptions, store, batch_size: int, seed: int = 0,
                 shuffle: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.captions, self.store, self.batch_size = captions, store, batch_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.image_ids = list(dict.fromkeys(captions.images))
        by_image = {i: [] for i in self.image_ids}
        for c, image in enumerate(captions.images):
            by_image[image].append(c)
        self.by_image = [by_image[i] for i in self.image_ids]
        self.row_of_caption = np.array([store.index[i] for i in captions.images], dtype=np.int64)
        self._units = self._make_units()
        self._order = self._permutation()

    def _make_units(self):  # what gets shuffled and sliced into batches
        return list(range(len(self.image_ids)))

    def _permutation(self):
        n = len(self._units)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        self._order = self._permutation()

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def __len__(self):
        return math.ceil(len(self._units) / self.batch_size)

    def _batch_units(self, index):
        return [self._units[u] for u in self._order[index * self.batch_size:(index + 1) * self.batch_size]]

    def _captions_of(self, index):
        return [c for u in self._batch_units(index) for c in self.by_image[u]]

    def features(self, caption_indices) -> np.ndarray:
        return self.store.rows(self.row_of_caption[caption_indices]).astype(np.float32, copy=False)


class CaptionSequence(_FeatureBatches):
    """Fast path: ((features, caption[:-1]), caption[1:], weights) for every caption of N images."""

    def __init__(self, captions, store, batch_size, seed=0, shuffle=True, output_offset=0, pad_length=None,
                 **kwargs):
        self.output_offset, self.pad_length = output_offset, pad_length
        super().__init__(captions, store, batch_size, seed, shuffle, **kwargs)

    def __getitem__(self, index):
        cs = self._captions_of(index)
        seqs = [self.captions.ids[c] for c in cs]
        inputs = pad([s[:-1] for s in seqs], self.pad_length and self.pad_length - 1)
        targets = pad([s[1:] for s in seqs], inputs.shape[1] + self.output_offset, self.output_offset)
        return (self.features(cs), inputs), targets, (targets != 0).astype(np.float32)


class PairSequence(_FeatureBatches):
    """Reference path: ((features, partial caption), next word) pairs.

    ``batch_by="images"`` gives all pairs of ``batch_size`` images per batch; ``"pairs"`` gives
    ``batch_size`` pairs. ``fixed_length`` pads every prefix to that length (the inject decoder
    needs it; ``fit`` uses it for all decoders).
    """

    def __init__(self, captions, store, batch_size, seed=0, shuffle=True, batch_by="images",
                 fixed_length=None, **kwargs):
        if batch_by not in ("images", "pairs"):
            raise ValueError("batch_by must be 'images' or 'pairs'")
        self.batch_by, self.fixed_length = batch_by, fixed_length
        super().__init__(captions, store, batch_size, seed, shuffle, **kwargs)

    def _make_units(self):
        if self.batch_by == "images":
            return list(range(len(self.image_ids)))
        return self.captions.pairs()

    def batch_pairs(self, index):
        if self.batch_by == "pairs":
            return self._batch_units(index)
        return [(c, t) for c in self._captions_of(index) for t in range(1, len(self.captions.ids[c]))]

    def __getitem__(self, index):
        pairs = self.batch_pairs(index)
        prefixes = pad([self.captions.ids[c][:t] for c, t in pairs], self.fixed_length)
        targets = np.array([self.captions.ids[c][t] for c, t in pairs], dtype=np.int32)
        return (self.features([c for c, _ in pairs]), prefixes), targets
