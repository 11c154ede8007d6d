"""Keras ``PyDataset``s that feed decoders from a caption table and an HDF5 ``FeatureStore``.

``PairSequence`` is the textbook formulation: each caption becomes partial-caption → next-word
pairs (``startseq`` → ``a``, ``startseq a`` → ``dog``, …, ``startseq a dog runs`` → ``endseq``),
with sparse integer targets. ``CaptionSequence`` feeds whole captions for the teacher-forced fast
path, in batches of captions of similar length so that little of the work is padding. Both read
only the feature rows of the batch from HDF5 and reshuffle every epoch from a seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from captioning.backend import import_keras
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

    def by_image(self) -> list:
        """Caption indices grouped by image, images in first-seen order."""
        groups = {}
        for c, image in enumerate(self.images):
            groups.setdefault(image, []).append(c)
        return list(groups.values())

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
    """Batches of caption indices, re-drawn every epoch from ``(seed, epoch)``; ``limit``: at most that many
    per epoch (the first of that epoch's order)."""

    def __init__(self, captions: EncodedCaptions, store, batch_size: int, seed: int = 0,
                 shuffle: bool = True, multiple_of: int = 1, limit: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.captions, self.store, self.batch_size, self.limit = captions, store, batch_size, limit
        self.seed, self.shuffle, self.multiple_of = seed, shuffle, multiple_of
        self.row_of_caption = np.array([store.index[i] for i in captions.images], dtype=np.int64)
        self.set_epoch(0)

    def _batches(self, rng) -> list:
        """The epoch's batches as lists of units; ``rng`` is None when not shuffling."""
        raise NotImplementedError

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        self._batch_list = self._batches(np.random.default_rng([self.seed, epoch]) if self.shuffle else None)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def __len__(self):
        """The epoch's batches, or its first ``limit`` (``fit --steps-per-epoch``)."""
        return min(len(self._batch_list), self.limit or len(self._batch_list))

    def features(self, caption_indices) -> np.ndarray:
        return self.store.rows(self.row_of_caption[caption_indices]).astype(np.float32, copy=False)

    def padded(self, *arrays):
        """Rows of zeros (weight 0) up to a multiple of ``multiple_of``: a batch sharded over that
        many devices (JAX's DataParallel) must split evenly; the extra rows add nothing to the loss."""
        extra = -len(arrays[0]) % self.multiple_of
        if not extra:
            return arrays
        return tuple(np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) for a in arrays)


def _shuffled(items, rng) -> list:
    items = list(items)
    return [items[i] for i in rng.permutation(len(items))] if rng is not None else items


def _chunks(items, size) -> list:
    return [items[i:i + size] for i in range(0, len(items), size)]


class CaptionSequence(_FeatureBatches):
    """Fast path: ((features, caption[:-1]), caption[1:], weights), captions batched by length.

    A batch holds about as many captions as ``batch_size`` images have. Captions are sorted by
    length (rounded up to ``length_multiple``, random order within a length) and cut into
    batches whose order is shuffled, so each batch is padded only to its own longest caption —
    on Flickr8k 13.5 steps on average instead of the longest caption's 35.
    """

    def __init__(self, captions, store, batch_size, seed=0, shuffle=True, output_offset=0, length_multiple=4,
                 **kwargs):
        self.output_offset = output_offset
        # inputs are captions minus endseq, rounded up to length_multiple (4): few distinct shapes for
        # backends that compile per shape
        lengths = np.array([len(ids) - 1 for ids in captions.ids])
        self._padded_lengths = -(-lengths // length_multiple) * length_multiple
        images = max(1, len(set(captions.images)))
        self.captions_per_batch = max(1, round(batch_size * len(captions.ids) / images))
        super().__init__(captions, store, batch_size, seed, shuffle, **kwargs)

    def input_length(self, caption_indices) -> int:
        """The padded length of a batch: its longest input, rounded up to ``length_multiple``."""
        return int(self._padded_lengths[caption_indices].max())

    def _batches(self, rng):
        n = len(self.captions.ids)
        tiebreak = rng.permutation(n) if rng is not None else np.arange(n)
        order = np.lexsort((tiebreak, self._padded_lengths)).tolist()
        batches = _shuffled(_chunks(order, self.captions_per_batch), rng)
        # Keras' TensorFlow adapter infers which dimensions vary from the first two batches: when
        # lengths differ at all, make those two differ, or a later, longer batch would be refused.
        lengths = [self.input_length(b) for b in batches]
        j = next((j for j, length in enumerate(lengths) if length != lengths[0]), None)
        if j is not None and j > 1:
            batches[1], batches[j] = batches[j], batches[1]
        return batches

    def batch_captions(self, index) -> list:
        return self._batch_list[index]

    def __getitem__(self, index):
        cs = self.batch_captions(index)
        length = self.input_length(cs)
        seqs = [self.captions.ids[c] for c in cs]
        inputs = pad([s[:-1] for s in seqs], length)
        targets = pad([s[1:] for s in seqs], length + self.output_offset, self.output_offset)
        features, inputs, targets = self.padded(self.features(cs), inputs, targets)
        return (features, inputs), targets, (targets != 0).astype(np.float32)


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
        # listed once, not every epoch: an image's captions, or every pair
        self._units = captions.by_image() if batch_by == "images" else captions.pairs()
        super().__init__(captions, store, batch_size, seed, shuffle, **kwargs)

    def _batches(self, rng):
        return _chunks(_shuffled(self._units, rng), self.batch_size)

    def batch_pairs(self, index):
        if self.batch_by == "pairs":
            return self._batch_list[index]
        return [(c, t) for image in self._batch_list[index] for c in image
                for t in range(1, len(self.captions.ids[c]))]

    def __getitem__(self, index):
        pairs = self.batch_pairs(index)
        prefixes = pad([self.captions.ids[c][:t] for c, t in pairs], self.fixed_length)
        targets = np.array([self.captions.ids[c][t] for c, t in pairs], dtype=np.int32)
        features = self.features([c for c, _ in pairs])
        if self.multiple_of == 1:  # the textbook form: (features, prefix) → next word
            return (features, prefixes), targets
        features, prefixes, weights, targets = self.padded(features, prefixes, np.ones(len(targets), np.float32),
                                                           targets)
        return (features, prefixes), targets, weights
