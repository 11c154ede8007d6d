"""Benchmark: feature extraction, images/s (not a test).

    python bench/extract.py [IMAGES_DIR] [--backbone inception_v3] [--limit 200]

Same images, same backbone object, one run:
  (a) the common notebook loop: load_img + img_to_array + preprocess_input + model.predict per image;
  (b) the backbone alone, batched predict_on_batch on already-decoded arrays (the ceiling);
  (c) captioning's extract_features end to end (decode threads, batching, HDF5 writes).
Default IMAGES_DIR: ../shared/flickr8k/Images (200 real JPEGs); pass --generated for sample scenes.
Random-init weights (weights=None): this measures speed, not quality.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from captioning.console import import_keras  # noqa: E402
from captioning.features import extract as extract_mod  # noqa: E402
from captioning.features.backbones import build_model, get_backbone  # noqa: E402
from captioning.features.images import load_image  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("images", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/flickr8k/Images"))
    p.add_argument("--backbone", default="inception_v3")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--generated", action="store_true", help="use generated sample scenes instead")
    a = p.parse_args()
    keras = import_keras()
    tmp = Path(tempfile.mkdtemp())
    if a.generated:
        from captioning.data import make_sample
        a.images = str(make_sample(tmp / "sample", images=a.limit) / "Images")
    root = Path(a.images)
    ids = extract_mod.list_images(root)[: a.limit]
    bb = get_backbone(a.backbone)
    keras.utils.set_random_seed(0)
    model = build_model(bb, "none", "avg")
    size = bb.input_size
    pre = getattr(keras.applications, bb.module).preprocess_input
    model.predict_on_batch(np.zeros((a.batch_size, size, size, 3), np.float32))  # warm up
    model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)

    t = time.perf_counter()  # (a) notebook loop
    for i in ids:
        img = keras.utils.img_to_array(keras.utils.load_img(root / i, target_size=(size, size)))
        model.predict(pre(img[None]), verbose=0)
    rate_a = len(ids) / (time.perf_counter() - t)

    arrays = np.stack([load_image(root / i, size) for i in ids]).astype(np.float32)
    t = time.perf_counter()  # (b) ceiling: the model alone on decoded arrays
    for s in range(0, len(ids), a.batch_size):
        x = np.zeros((a.batch_size, size, size, 3), np.float32)
        chunk = arrays[s:s + a.batch_size]
        x[: len(chunk)] = chunk
        model.predict_on_batch(pre(x))
    rate_b = len(ids) / (time.perf_counter() - t)

    extract_mod.build_model = lambda *args, **kw: model  # same network object, no rebuild cost
    t = time.perf_counter()  # (c) end to end
    r = extract_mod.extract_features(root, backbone=a.backbone, weights="none", out=tmp / "f.h5",
                                     batch_size=a.batch_size, limit=a.limit, show_progress=False)
    rate_c = len(ids) / (time.perf_counter() - t)
    assert len(r.store) + len(r.failed) == len(ids)

    print(f"\n{a.backbone}, {len(ids)} images from {root}, batch {a.batch_size}, {os.cpu_count()} CPUs, "
          f"Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"{'method':<58}{'images/s':>10}")
    for name, rate in [("(a) notebook loop: load_img + predict per image", rate_a),
                       ("(b) backbone alone, batched, decoded arrays (ceiling)", rate_b),
                       ("(c) captioning extract-features, end to end", rate_c)]:
        print(f"{name:<58}{rate:>10.1f}")
    print(f"ratios: (c)/(b) = {rate_c / rate_b:.2f}   (c)/(a) = {rate_c / rate_a:.2f}")


if __name__ == "__main__":
    main()
