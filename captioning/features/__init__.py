"""Stage 1: pretrained CNN features cached in HDF5."""

from captioning.features.backbones import BACKBONES, Backbone, get_backbone
from captioning.features.store import FeatureStore


def extract_features(*args, **kwargs):
    from captioning.features.extract import extract_features as _extract
    return _extract(*args, **kwargs)


extract_features.__doc__ = "See ``captioning.features.extract.extract_features``."
__all__ = ["BACKBONES", "Backbone", "get_backbone", "FeatureStore", "extract_features"]
