"""Export: a run made portable — a self-contained bundle (``bundle``), a TensorFlow SavedModel that
captions JPEG/PNG bytes in one call (``saved_model``), LiteRT/TFLite models (``tflite``). Export
reads the run format and inference; nothing below imports it.
"""

from captioning.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    **{n: "captioning.export.bundle" for n in ("Export", "export_bundle", "is_export")},
    "export": "captioning.export.formats",
})
