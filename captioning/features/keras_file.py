"""An image encoder saved as ``.keras``: a fine-tuned CNN, one built by hand, EfficientNet-Lite2.

``extract-features --backbone PATH.keras`` loads the file in safe mode (stock layers only, no Python
code from the file) and feeds it RGB pixels 0–255 as float32: the model's own preprocessing (a
``Rescaling`` or ``Normalization`` layer) must be inside it, as it is in Lite2's file. Its output
is either a feature map (N, H, W, C), pooled to one vector or kept as a grid, or a vector (N, D),
used as it is. The store records the file as it records a weights file (name, path and sha256), so
a run trained on those features rebuilds the same encoder to caption a new photo, and refuses a
file whose content has changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from captioning.backend import import_keras
from captioning.errors import CaptioningError, UsageError

NAME = "keras_file"  # the store's backbone name; the file itself is its "weights"
PREPROCESSING = "inside the model (RGB 0-255 float32 in)"
OWN_VECTOR = "none"  # the pooling a store records when the model outputs vectors itself


def is_keras_file(name) -> bool:
    return str(name).lower().endswith(".keras")


def describe(path) -> dict:
    """How a store records the file: like a weights file, by name, path and sha256."""
    from captioning.features.backbones import describe_weights
    return describe_weights(path)


@dataclasses.dataclass(frozen=True)
class KerasFileBackbone:
    """What extraction and captioning need to know of a ``.keras`` encoder; ``input_size`` is
    read from the file (``size_for``) or, for a model that takes any size, given by the person."""

    input_size: int = 0
    name: str = NAME
    preprocessing: str = PREPROCESSING

    def preprocess(self, x):
        return x  # inside the model


def load(path, pooling: str, image_size: int | None = None):
    """(``KerasFileBackbone``, the encoder as a model: images (N, S, S, 3) → (N, D) or (N, H, W, C),
    the pooling to record).

    ``pooling``: avg | max (over the feature map) | spatial (the map itself); for a model that
    outputs vectors, avg and max mean its own vector (recorded as pooling ``none``)."""
    keras = import_keras()
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"--backbone {path}: {'a folder' if path.is_dir() else 'no such file'}. Give the "
                              "path of an image model saved with model.save('encoder.keras').")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 — any loader failure becomes the explanation below, original chained
        raise CaptioningError(f"{path} cannot be loaded as a Keras model in safe mode ({type(e).__name__}: "
                              f"{str(e)[:300]}). It must be a file written by model.save(...) with stock Keras "
                              "layers (a Lambda layer holds Python code, which safe mode refuses).") from e
    size = size_for(model, path, image_size)
    out = model.outputs[0] if len(model.outputs) == 1 else None
    if out is None or len(out.shape) not in (2, 4):
        shapes = ", ".join(str(tuple(o.shape)) for o in model.outputs)
        raise CaptioningError(f"{path} outputs {shapes}: an encoder outputs one feature map (N, H, W, C) or one "
                              "vector (N, D) per image. Save a model that ends at the features you want.")
    if len(out.shape) == 2:
        if pooling == "spatial":
            raise UsageError(f"--spatial: {path} outputs one vector per image {tuple(out.shape)}, not a grid. Save "
                             "the model up to its last feature map to use the attention decoders.")
        return KerasFileBackbone(size), model, OWN_VECTOR
    if pooling == "spatial":
        return KerasFileBackbone(size), model, pooling
    layer = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}[pooling]
    pooled = keras.Model(model.inputs, layer(name=f"{pooling}_pool")(out), name=model.name)
    return KerasFileBackbone(size), pooled, pooling


def size_for(model, path, image_size: int | None) -> int:
    """The square image size the model takes: its own, or ``image_size`` when it takes any."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
        shapes = ", ".join(str(tuple(i.shape)) for i in model.inputs)
        raise CaptioningError(f"{path} is not an image model: it takes {shapes}, and an encoder takes one batch of "
                              "RGB images (N, height, width, 3), channels last.")
    height, width = model.inputs[0].shape[1:3]
    if height is None or width is None:
        if not image_size:
            raise UsageError(f"{path} takes images of any size: give the size to resize them to with --image-size "
                             "N (the size the network was trained at, e.g. 224).")
        return int(image_size)
    if height != width:
        raise CaptioningError(f"{path} takes {height}×{width} images; photos are resized to a square here. Save "
                              "the model with a square input (or with None × None and give --image-size).")
    if image_size and int(image_size) != height:
        raise UsageError(f"--image-size {image_size}: {path} takes {height}×{height} images only; leave out "
                         "--image-size.")
    return int(height)
