"""Image captioning with Keras 3.

The package reads as the pipeline: ``data`` (captions, cleaning, vocabulary, sample set) →
``features`` (CNN feature cache in HDF5) → ``training`` (``fit``) → ``inference`` (greedy / beam /
sampling) → ``evaluation`` (BLEU, COCO metrics, figures). Below training and inference sit what both
need: ``decoders`` (one module per decoder, a registry) and ``run`` (the run folder format).

Importing the package registers every custom Keras layer, so
``import captioning; keras.saving.load_model("run/model.keras", safe_mode=True)`` works.
"""

__version__ = "0.8.0"

from captioning.errors import CaptioningError
from captioning import decoders  # noqa: E402  (registers the custom layers with Keras)

__all__ = ["CaptioningError", "decoders", "__version__"]
