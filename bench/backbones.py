"""Benchmark: the three sources of image encoders side by side, images/s end to end (not a test).

    python bench/backbones.py [IMAGES_DIR] [--limit 200]

For each encoder, ``captioning extract-features`` (library call, same images, batch 32) into a
fresh store: the stored feature shape (pooled and ``--spatial``), the size on disk of what the
store records (a weights file, a ``.keras`` file or a preset folder), and images/s of the pooled
extraction end to end, as ``captioning extract-features`` runs (loading the encoder included). The sources:
  - keras.applications by name (random init: the speed is the architecture's; MobileNetV2 also
    from the real weights file in ../shared/weights when present);
  - a ``.keras`` file: ../shared/weights/efficientnet_lite2_imagenet_notop.keras when present;
  - keras-hub presets (needs the hub extra), as local preset folders built here from the published
    architectures' configs with random weights (nothing is downloaded): ResNet-50 and ViT-B/16.
Default IMAGES_DIR: ../shared/flickr8k/Images (200 real JPEGs).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.backend import import_keras  # noqa: E402
from captioning.features import FeatureStore, extract_features  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def size_mib(path) -> float:
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 2 ** 20


def hub_presets(root: Path) -> dict:
    """Local preset folders of two published keras-hub architectures, random weights."""
    try:
        import keras_hub
    except ImportError:
        print("keras-hub not installed (pip install -e '.[hub]'): its rows are left out")
        return {}
    m, layers = keras_hub.models, keras_hub.layers
    resnet = m.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                              stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                              stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
                              image_shape=(224, 224, 3))
    resnet.save_to_preset(root / "resnet_50")
    layers.ResNetImageConverter(image_size=(224, 224), scale=1 / 255).save_to_preset(root / "resnet_50")
    vit = m.ViTBackbone(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                        mlp_dim=3072)
    vit.save_to_preset(root / "vit_base_16")
    layers.ViTImageConverter(image_size=(224, 224), scale=1 / 127.5, offset=-1).save_to_preset(root / "vit_base_16")
    return {"keras-hub ResNet-50 (config, random weights)": f"hub:{root / 'resnet_50'}",
            "keras-hub ViT-B/16 (config, random weights)": f"hub:{root / 'vit_base_16'}"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="?", default=str(SHARED / "flickr8k" / "Images"))
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--weights-dir", default=str(SHARED / "weights"), help="where the real encoders' files are")
    p.add_argument("--no-hub", action="store_true", help="leave out the keras-hub rows")
    a = p.parse_args()
    keras = import_keras()
    tmp = Path(tempfile.mkdtemp())
    mobilenet_file = Path(a.weights_dir) / "mobilenet_v2_1.0_224_tf2ptq_imagenet_no_top.h5"
    lite2 = Path(a.weights_dir) / "efficientnet_lite2_imagenet_notop.keras"
    encoders = {"keras.applications mobilenet_v2 (random init)": ("mobilenet_v2", "none"),
                "keras.applications efficientnet_b0 (random init)": ("efficientnet_b0", "none"),
                "keras.applications resnet50 (random init)": ("resnet50", "none")}
    if mobilenet_file.is_file():
        encoders["keras.applications mobilenet_v2 + the shared weights file"] = ("mobilenet_v2", str(mobilenet_file))
    if lite2.is_file():
        encoders["EfficientNet-Lite2 .keras file (ImageNet)"] = (str(lite2), None)
    encoders |= {} if a.no_hub else {name: (spec, None) for name, spec in hub_presets(tmp).items()}
    print(f"\n{a.limit} images from {a.images}, batch 32, {os.cpu_count()} CPUs, Keras {keras.__version__} "
          f"({keras.backend.backend()})")
    print("| encoder | input px | pooled | grid (--spatial) | on disk (MiB) | images/s |\n|---|---|---|---|---|---|")
    for k, (name, (backbone, weights)) in enumerate(encoders.items()):
        grid = extract_features(a.images, backbone=backbone, weights=weights, out=tmp / f"g{k}.h5", limit=4,
                                pooling="spatial", show_progress=False).store
        extract_features(a.images, backbone=backbone, weights=weights, out=tmp / f"w{k}.h5", limit=4,
                         show_progress=False)  # builds and warms the model once, outside the timing
        t = time.perf_counter()
        store = extract_features(a.images, backbone=backbone, weights=weights, out=tmp / f"p{k}.h5",
                                 limit=a.limit, show_progress=False).store
        rate = a.limit / (time.perf_counter() - t)
        recorded = FeatureStore.open(store.path).attrs.get("weights_path")
        disk = f"{size_mib(recorded):.1f}" if recorded else "–"
        print(f"| {name} | {store.attrs['input_size']} | {tuple(store.feature_shape)} | "
              f"{tuple(grid.attrs['grid'])} × {grid.feature_shape[-1]} | {disk} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
