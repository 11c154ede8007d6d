"""Stage 2: decoders trained on cached features (``fit``)."""

from captioning.training.decoders import DECODERS, DecoderConfig, build_decoder
from captioning.training.fit import FitOptions, FitResult, fit

__all__ = ["DECODERS", "DecoderConfig", "build_decoder", "FitOptions", "FitResult", "fit"]
