"""Pretrained CNNs from ``keras.applications``, each with its own input size and preprocessing, and
image models saved as ``.keras`` files (``keras_file``) and keras-hub presets (``hub``)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

from captioning import hardware
from captioning.features import hub, keras_file
from captioning.backend import import_keras, set_random_seed
from captioning.errors import CaptioningError


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    module: str  # keras.applications submodule holding preprocess_input
    input_size: int
    pooled_layer: str | None = None  # a named layer instead of global pooling (VGG16's fc2)

    @property
    def preprocessing(self) -> str:
        return f"keras.applications.{self.module}.preprocess_input"

    def preprocess(self, x):
        """Scale a float32 batch of RGB 0..255 pixels the way this network was trained."""
        keras = import_keras()
        return getattr(keras.applications, self.module).preprocess_input(x)


BACKBONES = {b.name: b for b in [
    Backbone("xception", "Xception", "xception", 299),
    Backbone("inception_v3", "InceptionV3", "inception_v3", 299),
    Backbone("resnet50", "ResNet50", "resnet50", 224),
    Backbone("resnet101", "ResNet101", "resnet", 224),
    Backbone("vgg16", "VGG16", "vgg16", 224, pooled_layer="fc2"),
    Backbone("densenet201", "DenseNet201", "densenet", 224),
    Backbone("efficientnet_b0", "EfficientNetB0", "efficientnet", 224),
    Backbone("efficientnet_b1", "EfficientNetB1", "efficientnet", 240),
    Backbone("efficientnet_b2", "EfficientNetB2", "efficientnet", 260),
    Backbone("efficientnet_b3", "EfficientNetB3", "efficientnet", 300),
    Backbone("inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2", 299),
    Backbone("mobilenet", "MobileNet", "mobilenet", 224),
    Backbone("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224),
    Backbone("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224),
    Backbone("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224),
]}

POOLINGS = ("avg", "max", "spatial")


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name.lower().replace("-", "_")]
    except KeyError:
        raise CaptioningError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, or the path of "
                              "an image model saved as .keras") from None


def backbone_for_spec(spec):
    """The backbone that made a store's features (``FeatureSpec``): a keras.applications one, or a
    ``.keras`` file's, whose image size the store recorded."""
    if spec.backbone == keras_file.NAME:
        return keras_file.KerasFileBackbone(spec.input_size)
    if spec.backbone == hub.NAME:
        return hub.HubBackbone(spec.input_size)
    return get_backbone(spec.backbone)


def external(name):
    """The module that loads ``name`` when it is no keras.applications name: ``keras_file`` for
    PATH.keras, ``hub`` for hub:PRESET; else None. Both have ``load(name, pooling, image_size)``
    and ``describe(name)``."""
    return keras_file if keras_file.is_keras_file(name) else hub if hub.is_hub(name) else None


def file_sha256(path) -> str:
    """The content's digest: of a file, or of a folder's files (names and contents, in a stable
    order; a keras-hub preset folder)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()] \
        if path.is_dir() else [(None, path)]
    for name, p in files:
        if name is not None:
            digest.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def describe_weights(weights, seed: int = 0) -> dict:
    """How a store records the weights: ``weights`` is 'imagenet', 'none (random init, seed S, B backend)' or
    'file:NAME sha256:…'; a file also gets its absolute path and full digest, so a run made from it
    can rebuild the backbone later without the user typing the path again."""
    if weights is None or str(weights).lower() == "none":
        # each backend draws other numbers from the same seed, so the backend is part of the weights
        return {"weights": f"none (random init, seed {seed}, {import_keras().backend.backend()} backend)"}
    if str(weights).lower() == "imagenet":
        return {"weights": "imagenet"}
    path = Path(weights)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise CaptioningError(f"--weights {weights}: {what}. Use imagenet, none, or the path of a "
                              "Keras weights file (.h5 or .weights.h5) for this backbone.")
    sha = file_sha256(path)
    return {"weights": f"file:{path.name} sha256:{sha[:16]}", "weights_path": str(path.resolve()),
            "weights_sha256": sha}


def weights_for_spec(spec, override=None, notes: list | None = None):
    """(weights, seed) that rebuild the network a ``FeatureSpec`` describes.

    A weights file is taken from ``override`` when given, else from the recorded path; either
    way its content must match the recorded hash, or the features would come from another network.
    A store that records no hash (another tool's, an early version's) gets the file as given, and a
    line in ``notes`` saying so."""
    record = spec.weights
    if record.startswith("none"):
        if override:  # ignoring it would hide that the features come from no weights file at all
            raise CaptioningError(f"--weights {override}: these features came from a randomly initialised "
                                  f"{spec.backbone} ({record}), which is rebuilt from its seed; leave out --weights.")
        made_by, current = re.search(r"(\w+) backend", record), import_keras().backend.backend()
        if made_by and made_by.group(1) != current:
            raise CaptioningError(f"these features came from a randomly initialised {spec.backbone} built by Keras' "
                                  f"{made_by.group(1)} backend; the {current} backend draws other weights from the "
                                  f"same seed, so its captions would be meaningless. Run with "
                                  f"KERAS_BACKEND={made_by.group(1)}.")
        seed = re.search(r"seed (\d+)", record)
        return "none", int(seed.group(1)) if seed else 0
    if not record.startswith("file:"):
        return (str(override), 0) if override else (record, 0)  # offline: the ImageNet file, downloaded by hand
    candidate = override or spec.weights_path
    recorded = re.search(r"sha256:([0-9a-f]+)", record)
    expected = spec.weights_sha256 or (recorded.group(1) if recorded else None)
    if not candidate or not Path(candidate).exists():  # a file, or a keras-hub preset folder
        where = f" It was at {spec.weights_path}, which is gone." if spec.weights_path else ""
        raise CaptioningError(f"these features came from the weights file {record}.{where} Pass its path with "
                              "--weights PATH (Captioner.load(run, weights=PATH)).")
    if expected is None:  # a store written by another tool or an early version: nothing to check against
        if notes is not None:
            notes.append(f"the feature store records the weights file {record} but not its content (no sha256, "
                         f"as stores of other tools and early versions): {candidate} is used as given; if it is "
                         "not the file the features came from, the captions will be meaningless.")
        return str(candidate), 0
    if not file_sha256(candidate).startswith(expected):
        raise CaptioningError(f"{candidate} is not the weights file the features came from ({record}): its "
                              "content differs. Pass the original file with --weights PATH.")
    return str(candidate), 0


def mixed_precision_policy() -> str:
    """The fast reduced-precision Keras policy this machine has (``hardware.reduced_precision``), or
    a clear error. Variables stay float32 either way, so the network is the same; features differ by
    about 1 %."""
    policy = hardware.reduced_precision()
    if policy is None:
        raise CaptioningError("--mixed-precision needs a GPU, or a CPU with bfloat16 instructions (AVX512-BF16 or "
                              "AMX) under TensorFlow; this machine has neither, so it would only be slower. Run "
                              "without it.")
    return policy


def build_model(backbone: Backbone, weights="imagenet", pooling: str = "avg", seed: int = 0,
                policy: str = "float32"):
    """The feature extractor: images (N, S, S, 3) → (N, D) pooled or (N, H, W, C) spatial.

    Random init (``weights="none"``) is seeded: the same seed gives the same network, so a resumed
    store never mixes two networks and inference can rebuild the one that made the features.
    ``policy`` is the Keras dtype policy of this model only; the global one is left as it was."""
    if isinstance(backbone, keras_file.KerasFileBackbone):  # ``weights`` is the file itself
        own = pooling == keras_file.OWN_VECTOR
        return keras_file.load(weights, "avg" if own else pooling, backbone.input_size or None)[1]
    if isinstance(backbone, hub.HubBackbone):  # ``weights``: the preset's folder, or preset:NAME
        return hub.load(weights, pooling, backbone.input_size or None)[1]
    keras = import_keras()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return _build_model(keras, backbone, weights, pooling, seed)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_model(keras, backbone, weights, pooling, seed):
    if pooling not in POOLINGS:
        raise CaptioningError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    w = None if weights is None or str(weights).lower() == "none" else weights
    if w is None:
        set_random_seed(seed)
    constructor = getattr(keras.applications, backbone.constructor)
    use_top = backbone.pooled_layer is not None and pooling != "spatial"
    kwargs = dict(include_top=use_top, weights=w,
                  input_shape=(backbone.input_size, backbone.input_size, 3))
    if not use_top:
        kwargs["pooling"] = None if pooling == "spatial" else pooling
    try:
        model = constructor(**kwargs)
    except Exception as e:  # noqa: BLE001 — turned into an explanation, original chained
        if w == "imagenet":
            raise CaptioningError(
                f"could not load ImageNet weights for {backbone.name} ({type(e).__name__}: {e}).\n"
                "  Keras downloads them on first use, which needs internet. Offline, either\n"
                "  --weights none   (random initialisation: fine for trying the pipeline, poor captions), or\n"
                "  --weights PATH   (a weights file copied from a machine with internet, e.g. from\n"
                "                    ~/.keras/models/ there).") from e
        if w is not None:
            raise CaptioningError(f"could not load the weights file {w} into {backbone.name} "
                                  f"({type(e).__name__}: {str(e)[:200]}). The file must be made for this backbone "
                                  f"({backbone.constructor}, include_top={use_top}, {backbone.input_size} px): "
                                  "a *_no_top file for pooled or spatial features, or pick the backbone the file "
                                  "belongs to.") from e
        raise
    if use_top:
        model = keras.Model(model.input, model.get_layer(backbone.pooled_layer).output, name=backbone.name)
    return model


def embed(model, backbone: Backbone, arrays, pooling: str, batch_size: int | None = None,
          replicas: int = 1) -> np.ndarray:
    """Features of decoded uint8 RGB images, exactly as stored: (n, D) or (n, H·W, C) for spatial.

    ``batch_size`` pads the batch to a fixed shape so the compiled model is never retraced. With
    several ``replicas`` (a model built in a distribution's scope) the batch, padded to split evenly,
    goes through ``predict``, which hands each device its slice."""
    n = len(arrays)
    rows = max(n, batch_size or 0)
    rows += -rows % replicas
    x = np.zeros((rows, backbone.input_size, backbone.input_size, 3), np.float32)
    x[:n] = np.stack(arrays)
    x = backbone.preprocess(x)
    y = model.predict(x, batch_size=rows, verbose=0) if replicas > 1 else model.predict_on_batch(x)
    y = np.asarray(y)[:n].astype(np.float32)
    return y.reshape(n, -1, y.shape[-1]) if pooling == "spatial" else y.reshape(n, -1)
