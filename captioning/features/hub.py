"""keras-hub presets as encoders: ``extract-features --backbone hub:PRESET`` (the ``hub`` extra).

A preset is a name keras-hub knows (``resnet_50_imagenet``), a ``kaggle://`` or ``hf://`` handle, or
a local folder written by ``save_to_preset``. Its own image converter (resize, scale, offset) is the
preprocessing, so photos go in as RGB 0–255 like every other encoder here. What comes out:

- a CNN (ResNet, EfficientNet, MobileNet…): its last feature map, pooled (avg | max) or kept as the
  grid (``--spatial``);
- a ViT-style encoder (ViT, DINOv2, the CLIP and SigLIP vision towers): its tokens; the vector is
  the class token where there is one (else the mean of the patch tokens), the grid the patch
  tokens laid out as the patches were. CLIP and SigLIP presets hold a text tower too; only the
  vision tower is used.

The store records a local folder like a weights file (its path and one sha256 over its files), a
named preset by its name (keras-hub caches what it downloads).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from captioning.backend import import_keras
from captioning.errors import CaptioningError, UsageError

NAME = "keras_hub"
PREFIX = "hub:"
INSTALL = 'pip install "captioning[hub]"  (in a checkout: pip install -e ".[hub]")'


def is_hub(name) -> bool:
    return str(name).startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class HubBackbone:
    input_size: int = 0
    name: str = NAME
    preprocessing: str = "the preset's image converter (RGB 0-255 in)"

    def preprocess(self, x):
        return x  # the converter is inside the model


def preset_of(name: str) -> str:
    """``hub:PRESET`` (or a store's ``preset:PRESET`` record) → what keras-hub loads."""
    for prefix in (PREFIX, "preset:"):
        if str(name).startswith(prefix):
            return str(name)[len(prefix):]
    return str(name)


def _local(preset: str) -> Path | None:
    path = Path(preset)
    return path if "://" not in preset and path.exists() else None


def describe(name: str) -> dict:
    """How a store records the preset: a local folder by content, like a weights file; a name as it is."""
    preset = preset_of(name)
    folder = _local(preset)
    if folder is None:
        return {"weights": f"preset:{preset}"}
    from captioning.features.backbones import file_sha256
    sha = file_sha256(folder)
    return {"weights": f"file:{folder.name} sha256:{sha[:16]}", "weights_path": str(folder.resolve()),
            "weights_sha256": sha}


def require_keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise UsageError(f"--backbone hub:…: keras-hub presets need the keras-hub package, which is not "
                         f"installed. Install it with: {INSTALL}") from None
    return keras_hub


def load(name: str, pooling: str, image_size: int | None = None):
    """(``HubBackbone``, the encoder as one model: RGB 0–255 (N, S, S, 3) → (N, D) or the grid,
    the pooling to record)."""
    keras, keras_hub = import_keras(), require_keras_hub()
    preset = preset_of(name)
    if not preset:
        raise UsageError("--backbone hub: names no preset; give hub:NAME, hub:kaggle://…, hub:hf://… or hub:FOLDER")
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as e:  # noqa: BLE001 — keras-hub raises many kinds; the explanation names the preset
        where = "a folder written by save_to_preset" if _local(preset) else "a keras-hub preset name or handle"
        raise CaptioningError(f"--backbone hub:{preset}: cannot load it as an image backbone with its image "
                              f"converter ({type(e).__name__}: {str(e)[:300]}). Give {where} that has both "
                              "(config.json, model.weights.h5 and image_converter.json).") from e
    encoder = getattr(backbone, "vision_encoder", backbone)  # CLIP, SigLIP: the vision tower alone
    size = _size(encoder, converter, preset, image_size)
    image = keras.Input((size, size, 3), name="image")
    out = encoder(converter(image))
    out = out[0] if isinstance(out, (list, tuple)) else out
    if isinstance(out, dict):
        raise CaptioningError(f"hub:{preset} gives several outputs ({', '.join(out)}); an image encoder gives one "
                              "feature map or one sequence of tokens.")
    if len(out.shape) == 4:  # a CNN's feature map
        if pooling != "spatial":
            pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}[pooling]
            out = pool(name=f"{pooling}_pool")(out)
    elif len(out.shape) == 3:  # a transformer's tokens
        out = _from_tokens(keras, out, _patch_size(encoder), size, pooling, preset)
    else:
        raise CaptioningError(f"hub:{preset} outputs {tuple(out.shape)}: neither a feature map nor tokens.")
    return HubBackbone(size), keras.Model(image, out, name=f"hub_{Path(preset).name}"), pooling


def _size(encoder, converter, preset, image_size) -> int:
    sizes = [s for s in (getattr(converter, "image_size", None), tuple(encoder.inputs[0].shape[1:3])) if s]
    fixed = next((tuple(s) for s in sizes if None not in tuple(s)), None)
    if fixed is None:
        if not image_size:
            raise UsageError(f"hub:{preset} takes images of any size: give the size with --image-size N.")
        return int(image_size)
    if fixed[0] != fixed[1]:
        raise CaptioningError(f"hub:{preset} takes {fixed[0]}×{fixed[1]} images; photos are resized to a square here.")
    if image_size and int(image_size) != fixed[0]:
        raise UsageError(f"--image-size {image_size}: hub:{preset} takes {fixed[0]}×{fixed[0]} images; leave it out.")
    return int(fixed[0])


def _patch_size(encoder) -> int | None:
    patch = getattr(encoder, "patch_size", None)
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch) if patch else None


def _from_tokens(keras, tokens, patch, size, pooling, preset):
    """Tokens (N, T, D) → the class token (or the patches' mean), or the patch tokens as a grid."""
    count = int(tokens.shape[1])
    side = size // patch if patch else math.isqrt(count)
    prefix = count - side * side  # the class token, and DINOv2's register tokens
    if prefix < 0:
        raise CaptioningError(f"hub:{preset} gives {count} tokens for a {side}×{side} patch grid.")
    patches = tokens[:, prefix:, :]
    if pooling == "spatial":
        return keras.layers.Reshape((side, side, int(tokens.shape[-1])), name="patch_grid")(patches)
    if pooling == "max":
        return keras.ops.max(patches, axis=1)
    return tokens[:, 0, :] if prefix else keras.ops.mean(patches, axis=1)
