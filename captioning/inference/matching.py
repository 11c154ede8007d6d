"""Image–caption matching: how well a caption fits *this* photo, as a second voice in re-ranking.

Consensus re-ranking (``consensus``) asks what photos like this one are usually called, so it
favours the captions of the photo's neighbourhood; it cannot tell two photos of that neighbourhood
apart. A two-tower matcher (Frome et al. 2013, Kiros et al. 2014; trained contrastively like
VSE++/CLIP on the train images and their captions by ``captioning.training.matching``) maps a
photo's features and a caption's words into one space where the right caption lies closest. Its
cosine, added to the consensus score, lifted dev CIDEr by 0.02–0.03 for each of three runs tried
(docs/results.md).

``fit`` writes the matcher into the run folder as ``matcher.keras`` (safe-mode loadable: stock
layers only, the feature standardisation inside).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from captioning.backend import import_keras

FILE = "matcher.keras"
DIMENSIONS = 512


def build(feature_dim: int, vocab_size: int, max_length: int, mean, std, dropout: float = 0.3):
    """The two towers as one model: ([features (N, D), caption ids (N, max_length), 0-padded]) →
    [image vectors, caption vectors], both unit length."""
    keras = import_keras()
    layers = keras.layers
    image = keras.Input((feature_dim,), name="image")
    x = layers.Normalization(mean=np.asarray(mean), variance=np.square(np.asarray(std)), name="standardise")(image)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(1024, activation="relu", name="image_hidden")(x)
    x = layers.Dropout(dropout)(x)
    image_vector = layers.UnitNormalization(name="image_vector")(layers.Dense(DIMENSIONS, name="image_out")(x))
    caption = keras.Input((max_length,), dtype="int32", name="caption")
    w = layers.Embedding(vocab_size, 300, mask_zero=True, name="words")(caption)  # <pad> is id 0
    w = layers.GlobalAveragePooling1D(name="mean_word")(w)
    w = layers.Dense(1024, activation="relu", name="caption_hidden")(w)
    caption_vector = layers.UnitNormalization(name="caption_vector")(layers.Dense(DIMENSIONS, name="caption_out")(w))
    return keras.Model([image, caption], [image_vector, caption_vector], name="matcher")


def padded(captions, max_length: int) -> np.ndarray:
    """Word-id lists (no start token; an end token and what follows are dropped) as a 0-padded array."""
    out = np.zeros((len(captions), max_length), np.int32)
    for i, ids in enumerate(captions):
        ids = list(ids)[:max_length]
        out[i, :len(ids)] = ids
    return out


class Matcher:
    """A trained matcher, ready to score candidate captions of photos. Its two towers run apart, so
    each photo's vector is computed once, not once per candidate caption."""

    def __init__(self, model, end_id: int):
        keras = import_keras()
        self.model, self.end_id = model, end_id
        self._lock = threading.Lock()  # re-ranking's two threads: one tower call at a time (each uses every core)
        self.max_length = int(model.inputs[1].shape[1])
        self._image_tower = keras.Model(model.inputs[0], model.outputs[0])
        self._caption_tower = keras.Model(model.inputs[1], model.outputs[1])

    @classmethod
    def load(cls, path, vocab, feature_dim: int) -> "Matcher":
        """The run's matcher; one made for other words or other features (another run's) is refused."""
        from captioning.errors import CaptioningError
        from captioning.run import load_model
        instead = "Or caption without the matcher (--matching 0)."
        try:
            model = load_model(Path(path))
        except CaptioningError as e:
            raise CaptioningError(f"{e} {instead}") from None
        try:
            image, words = model.inputs[0].shape[-1], model.get_layer("words").input_dim
        except (ValueError, AttributeError, IndexError):
            raise CaptioningError(f"{path} is not an image–caption matcher (no 'words' layer): copy the run folder "
                                  f"again, or run `captioning fit ... --resume` to write it. {instead}") from None
        if image != feature_dim or words != len(vocab):
            raise CaptioningError(f"{path} was made for {image}-number features and {words} words, and this run has "
                                  f"{feature_dim} and {len(vocab)}: it is another run's matcher. {instead}")
        return cls(model, vocab.end_id)

    def scores(self, features, candidates: list) -> list:
        """``features``: one per photo, pooled (N, D) or a grid (N, cells, D) that is averaged as in
        training; ``candidates``: per photo, a list of word-id lists. Returns per photo an array
        of cosines between the photo and each candidate."""
        return self.cosines(self.image_vectors(features), candidates)

    def cosines(self, image_vectors: np.ndarray, candidates: list) -> list:
        """``scores`` for photos whose vectors (``image_vectors``) are already known."""
        owner = np.repeat(np.arange(len(candidates)), [len(c) for c in candidates])
        if not len(owner):
            return [np.zeros(0) for _ in candidates]
        texts = self.caption_vectors([c for cs in candidates for c in cs])
        cosine = (image_vectors[owner] * texts).sum(axis=1)
        return np.split(cosine, np.cumsum([len(c) for c in candidates])[:-1])

    def image_vectors(self, features) -> np.ndarray:
        """(N, 512) unit vectors of photos (pooled or grid features, a grid averaged as in training)."""
        from captioning.inference.consensus import pooled
        with self._lock:
            return _in_chunks(self._image_tower, pooled(features), 1024)

    def caption_vectors(self, captions: list) -> np.ndarray:
        """(N, 512) unit vectors of captions (word-id lists)."""
        ids = padded([self._words(c) for c in captions], self.max_length)
        with self._lock:
            return _in_chunks(self._caption_tower, ids, 2048)

    def _words(self, ids):
        ids = list(ids)
        return ids[:ids.index(self.end_id)] if self.end_id in ids else ids


def _in_chunks(model, x: np.ndarray, rows: int) -> np.ndarray:
    """``model`` over ``x`` in chunks of ``rows``. ``predict_on_batch``, not ``predict``: re-ranking
    calls the towers on a few captions per batch of photos, and ``predict`` builds a tf.data pipeline
    each call (about 40 ms, most of re-ranking's time for a photo or two, as a server captions them)."""
    out = np.zeros((len(x), DIMENSIONS), np.float32)  # filled in place: COCO's train captions take 1.2 GB
    for i in range(0, len(x), rows):
        out[i:i + rows] = np.asarray(model.predict_on_batch(x[i:i + rows]))
    return out
