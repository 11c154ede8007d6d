"""``extract-features`` and ``merge-features``: stage 1, the CNN's features cached in HDF5."""

from __future__ import annotations

import argparse

from captioning import console
from captioning.cli.common import backbone_name, ranged
from captioning.errors import UsageError

EXIT_OK, EXIT_PARTIAL = 0, 3


def extract(a):
    from captioning.features.extract import extract_features
    result = extract_features(
        a.images_dir, backbone=a.backbone, weights=a.weights, out=a.out, batch_size=a.batch_size,
        pooling="spatial" if a.spatial else a.pooling, dtype=a.dtype, captions=a.captions,
        image_list=a.image_list, limit=a.limit, overwrite=a.overwrite,
        mixed_precision=a.mixed_precision, workers=a.workers, seed=a.seed, shard=a.shard,
        distribute=a.distribute, image_size=a.image_size)
    print(result.summary())
    return EXIT_PARTIAL if (a.strict and result.failed) else EXIT_OK


def merge(a):
    from captioning.features.merge import merge_features
    if a.out is None:
        raise UsageError("name the merged store with --out OUT.h5 (and the shard stores after it: "
                         "`captioning merge-features --out OUT.h5 PART.h5 ...`)")
    store, notes = merge_features(a.out, a.parts, overwrite=a.overwrite)
    print(f"Merged {console.count(len(a.parts), 'store')} into {store.describe()}."
          + "".join(f"\n  note: {n}" for n in notes))
    return EXIT_OK if store.attrs.get("completed") else EXIT_PARTIAL


def shard(text):
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 2/4)") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text} is out of range: K must be between 1 and N")
    return k, n


def add_commands(add):
    from captioning.features.backbones import BACKBONES
    p = add("extract-features", help="run a CNN over images and cache vectors in HDF5")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images (sub-folders included)")
    p.add_argument("--backbone", required=True, type=backbone_name, metavar="NAME|PATH.keras|hub:PRESET",
                   help=f"{', '.join(BACKBONES)}; or an image model saved as .keras (RGB 0-255 in, its preprocessing "
                        "inside); or a keras-hub preset (a name, kaggle://…, hf://… or a local folder; needs the "
                        "hub extra). See docs/backbones.md")
    p.add_argument("--weights", help="imagenet (the default) | none | PATH to a Keras weights file for NAME")
    p.add_argument("--image-size", type=ranged(int, 8, 4096), metavar="N",
                   help="the square size photos are resized to, for a .keras model that takes any size")
    p.add_argument("--out", metavar="FILE.h5", help="default: features/<dataset>_<backbone>.h5")
    p.add_argument("--batch-size", type=ranged(int, 1), default=32, help="images per forward pass")
    p.add_argument("--pooling", choices=["avg", "max"], default="avg", help="how the grid becomes one vector")
    p.add_argument("--spatial", action="store_true", help="store the last convolutional grid")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="stored precision (float16: half the disk, captions unchanged in practice)")
    p.add_argument("--captions", metavar="DATA", help="only the images this data set captions")
    p.add_argument("--image-list", metavar="FILE", help="only the images named in FILE, one a line")
    p.add_argument("--limit", type=ranged(int, 1), metavar="N", help="only the first N images")
    p.add_argument("--overwrite", action="store_true", help="replace a store made differently")
    p.add_argument("--strict", action="store_true", help="exit 3 if any image failed")
    p.add_argument("--mixed-precision", action="store_true",
                   help="float16 compute on a GPU, bfloat16 on CPUs that have it (about 2x faster)")
    p.add_argument("--workers", type=ranged(int, 0), default=0, help="decode threads (0: one per CPU)")
    p.add_argument("--seed", type=ranged(int, 0, 2 ** 32, high_open=True), default=0,
                   help="random init seed with --weights none")
    p.add_argument("--shard", type=shard, metavar="K/N", help="only every N-th image from the K-th: run N of these "
                   "(on N GPUs or machines), then merge-features")
    p.add_argument("--distribute", choices=("auto", "none", "mirrored"), default="auto",
                   help="split each batch over this machine's devices: mirrored: every GPU (or logical CPU; "
                        "JAX: every device); auto: mirrored when there are several GPUs")
    p.set_defaults(func=extract)

    p = add("merge-features", help="join the stores of a sharded extraction (same network required)")
    p.add_argument("parts", nargs="+", metavar="PART.h5", help="the stores of extract-features --shard K/N")
    p.add_argument("--out", metavar="OUT.h5", help="the merged store to write (required)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.h5 if it was made differently")
    p.set_defaults(func=merge)
