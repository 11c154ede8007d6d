"""Image captioning with Keras 3.

The package reads as the pipeline: ``data`` (captions, cleaning, vocabulary, sample set) →
``features`` (CNN feature cache in HDF5) → ``training`` (``fit``) → ``inference`` (decoding recipes,
greedy / beam / sampling, re-ranking) → ``evaluation`` (a split scored). Below them sit what several
need: ``decoders`` (one module per decoder, a registry), ``run`` (the run folder format), ``metrics``
(BLEU, CIDEr-D, the COCO metrics) and ``figures``. docs/design.md draws the map.

Importing the package loads no Keras (the CLI answers at once); its custom Keras layers are registered
as soon as Keras is imported, so ``import captioning; keras.saving.load_model("run/model.keras",
safe_mode=True)`` works.
"""

__version__ = "0.9.0"

from captioning.errors import CaptioningError
from captioning import backend, decoders  # noqa: E402

backend.when_keras_loads(decoders.register_layers)

__all__ = ["CaptioningError", "decoders", "__version__"]
