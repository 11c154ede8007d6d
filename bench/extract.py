"""Benchmark: feature extraction, images/s (not a test).

    python bench/extract.py [IMAGES_DIR] [--backbone inception_v3] [--limit 200]

Same images, same backbone object, one run:
  (a) the common notebook loop: load_img + img_to_array + preprocess_input + model.predict per image;
  (b) the backbone alone, batched predict_on_batch on already-decoded arrays (the ceiling);
  (c) captioning's extract_features end to end (decode threads, batching, HDF5 writes).
Where the machine has a fast reduced precision (a GPU, or a CPU with bfloat16 instructions), (b)
and (c) run again with --mixed-precision; (a) stays the notebook's float32.
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

from captioning.backend import import_keras  # noqa: E402
from captioning.features import extract as extract_mod  # noqa: E402
from captioning.errors import CaptioningError  # noqa: E402
from captioning.features.backbones import build_model, get_backbone, mixed_precision_policy  # noqa: E402
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

    def ceiling(model):  # (b): the model alone on decoded arrays
        model.predict_on_batch(np.zeros((a.batch_size, size, size, 3), np.float32))  # warm up
        t = time.perf_counter()
        for s in range(0, len(ids), a.batch_size):
            x = np.zeros((a.batch_size, size, size, 3), np.float32)
            chunk = arrays[s:s + a.batch_size]
            x[: len(chunk)] = chunk
            model.predict_on_batch(pre(x))
        return len(ids) / (time.perf_counter() - t)

    def end_to_end(model, mixed):  # (c)
        extract_mod.build_model = lambda *args, **kw: model  # same network object, no rebuild cost
        t = time.perf_counter()
        r = extract_mod.extract_features(root, backbone=a.backbone, weights="none", out=tmp / f"f{mixed}.h5",
                                         batch_size=a.batch_size, limit=a.limit, mixed_precision=mixed,
                                         show_progress=False)
        assert len(r.store) + len(r.failed) == len(ids)
        return len(ids) / (time.perf_counter() - t)

    rows = [("(a) notebook loop: load_img + predict per image", rate_a),
            ("(b) backbone alone, batched, decoded arrays (ceiling)", ceiling(model)),
            ("(c) captioning extract-features, end to end", end_to_end(model, False))]
    try:
        policy = mixed_precision_policy()
    except CaptioningError as e:
        policy, note = None, f"mixed precision not measured: {e}"
    if policy:
        mixed = build_model(bb, "none", "avg", policy=policy)
        rows += [(f"(b') backbone alone, {policy}", ceiling(mixed)),
                 (f"(c') extract-features --mixed-precision ({policy})", end_to_end(mixed, True))]

    print(f"\n{a.backbone}, {len(ids)} images from {root}, batch {a.batch_size}, {os.cpu_count()} CPUs, "
          f"Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"{'method':<58}{'images/s':>10}")
    for name, rate in rows:
        print(f"{name:<58}{rate:>10.1f}")
    r = dict(zip("abc", (rate for _, rate in rows[:3])))
    print(f"ratios: (c)/(b) = {r['c'] / r['b']:.2f}   (c)/(a) = {r['c'] / r['a']:.2f}")
    if policy:
        b2, c2 = rows[3][1], rows[4][1]
        print(f"        (c')/(b') = {c2 / b2:.2f}   (c')/(a) = {c2 / r['a']:.2f}")
    else:
        print(note)


if __name__ == "__main__":
    main()
