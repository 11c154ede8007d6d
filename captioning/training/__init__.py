"""Stage 2: decoders trained on cached features (``fit``)."""

# Importing the layer modules registers their classes, so .keras files load in safe mode.
from captioning.training import attention, layers  # noqa: F401
from captioning.training.decoders import DECODERS, DecoderConfig, build_decoder
from captioning.training.fit import FitOptions, FitResult, fit

__all__ = ["DECODERS", "DecoderConfig", "build_decoder", "FitOptions", "FitResult", "fit"]
