"""``fit``: stage 2, a decoder trained on cached features; its options are ``FitOptions``' fields."""

from __future__ import annotations

import sys

from captioning.cli.common import Renamed
from captioning.options import add_arguments, namespace_options
from captioning.training.options import FitOptions


def fit(a):
    from captioning.training.fitting import fit as train
    typed = namespace_options(a, FitOptions)
    result = train(a.captions, a.features, a.out, FitOptions(**typed), format=a.format, resume=a.resume,
                   verbose=1 if sys.stdout.isatty() else 2, given=set(typed) - {"epochs", "distribute"})
    if result is None:
        print(f"This worker's share of the training is done; the chief worker wrote the run folder {a.out}.")
        return
    print(result.summary())


def add_commands(add):
    from captioning.cli.data import add_format_option
    p = add("fit", help="train a decoder on cached features into a run folder")
    p.add_argument("--captions", required=True, metavar="DATA", help="data-set folder or captions file")
    add_format_option(p)
    p.add_argument("--features", required=True, metavar="FILE.h5", help="the store of extract-features")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write (or --resume)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--model", action=Renamed, instead="--decoder NAME")
    add_arguments(p.add_argument_group("training options"), FitOptions)
    p.set_defaults(func=fit)
