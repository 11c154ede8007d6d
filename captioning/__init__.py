"""Image captioning with Keras 3.

The package reads as the pipeline: ``data`` (captions, cleaning, vocabulary, sample set) →
``features`` (CNN feature cache in HDF5) → ``training`` (decoders, ``fit``) → ``inference``
(greedy / beam / sampling) → ``evaluation`` (BLEU, COCO metrics, figures).

Heavy modules (TensorFlow/Keras) are imported lazily, so ``import captioning`` stays cheap.
"""

__version__ = "0.1.0"

from captioning.errors import CaptioningError

__all__ = ["CaptioningError", "__version__"]
