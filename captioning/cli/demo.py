"""``demo``: the whole pipeline on the built-in sample set, offline."""

from __future__ import annotations

from captioning.cli.common import Renamed, backbone_name, ranged
from captioning.cli.data import SCENES


def demo(a):
    from captioning.demo import run_demo
    run_demo(a.out, images=a.scenes, backbone=a.backbone, epochs=a.epochs)


def add_commands(add):
    p = add("demo", help="the whole pipeline on the built-in sample set, offline")
    p.add_argument("--out", default="demo", metavar="DIR", help="folder for the data, features and run")
    p.add_argument("--scenes", type=SCENES, default=300, help="sample scenes to draw")
    p.add_argument("--images", action=Renamed, instead="--scenes N")
    p.add_argument("--backbone", type=backbone_name, default="resnet50", metavar="NAME",
                   help="as for extract-features")
    p.add_argument("--epochs", type=ranged(int, 1), default=30, help="the most epochs (early stopping)")
    p.set_defaults(func=demo)
