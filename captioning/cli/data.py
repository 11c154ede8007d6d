"""``make-sample`` and ``info``: the data before any model."""

from __future__ import annotations

from captioning.cli.common import Renamed, ranged
from captioning.training.options import FitOptions

SCENES = ranged(int, 3, what=" (one per split)")


def make_sample(a):
    from captioning.data import load_captions, make_sample
    out = make_sample(a.out_dir, images=a.scenes, seed=a.seed)
    ds = load_captions(out)
    counts = ", ".join(f"{s} {len(ds.images(s))}" for s in ("train", "dev", "test"))
    print(f"Wrote {a.scenes} images and {len(ds.table)} captions to {out} "
          f"(Flickr8k layout: Images/, Flickr8k.token.txt, split lists; {counts}).")


def info(a):
    from captioning.data import load_captions, summarize
    ds = load_captions(a.data, format=a.format, images_dir=a.images)
    print(summarize(ds, min_count=a.min_count))


def add_format_option(p):
    from captioning.data.formats import FORMATS
    p.add_argument("--format", choices=FORMATS, help="the captions' layout (default: told from the files)")


def add_commands(add):
    p = add("make-sample", help="write the built-in synthetic sample data set")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (Images/ and captions.txt)")
    p.add_argument("--scenes", type=SCENES, default=300, help="scenes to draw, split 70/15/15 into train/dev/test")
    p.add_argument("--images", action=Renamed, instead="--scenes N")
    p.add_argument("--seed", type=ranged(int, 0, 2 ** 32, high_open=True), default=0,
                   help="the same seed draws the same data set")
    p.set_defaults(func=make_sample)

    p = add("info", help="summarise a data set: splits, vocabulary, lengths, missing images")
    p.add_argument("data", metavar="DATA", help="data-set folder or captions file")
    add_format_option(p)
    p.add_argument("--images", metavar="DIR", help="images folder (default: found next to the captions)")
    p.add_argument("--min-count", type=ranged(int, 1), default=FitOptions.min_count,
                   help="vocabulary summary: words seen at least this often in the train captions")
    p.set_defaults(func=info)
