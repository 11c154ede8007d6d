"""``captioning`` command line: each subcommand is a thin shell over one library function.

Exit codes: 0 success; 1 a problem explained on stderr (bad input, missing weights, …);
2 wrong usage; 3 finished but some items failed (``extract-features --strict``, ``caption``);
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning import __version__, console
from captioning.errors import CaptioningError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _cmd_make_sample(a):
    from captioning.data import load_captions, make_sample
    out = make_sample(a.out_dir, images=a.images, seed=a.seed)
    ds = load_captions(out)
    counts = ", ".join(f"{s} {len(ds.images(s))}" for s in ("train", "dev", "test"))
    print(f"Wrote {a.images} images and {len(ds.table)} captions to {out} "
          f"(Flickr8k layout: Images/, Flickr8k.token.txt, split lists; {counts}).")


def _cmd_info(a):
    from captioning.data import load_captions, summarize
    ds = load_captions(a.data, format=a.format, images_dir=a.images)
    print(summarize(ds, min_count=a.min_count))


def _cmd_extract(a):
    from captioning.features.extract import extract_features
    result = extract_features(
        a.images_dir, backbone=a.backbone, weights=a.weights, out=a.out, batch_size=a.batch_size,
        pooling="spatial" if a.spatial else a.pooling, dtype=a.dtype, captions=a.captions,
        image_list=a.image_list, limit=a.limit, overwrite=a.overwrite,
        mixed_precision=a.mixed_precision, workers=a.workers, seed=a.seed)
    print(result.summary())
    return EXIT_PARTIAL if (a.strict and result.failed) else EXIT_OK


def _cmd_fit(a):
    from captioning.training.fit import FitOptions, fit
    opts = FitOptions(decoder=a.model, epochs=a.epochs, batch_size=a.batch_size, embed_dim=a.embed_dim,
                      units=a.units, dropout=a.dropout, rnn=a.rnn, learning_rate=a.learning_rate,
                      min_count=a.min_count, max_length_percentile=a.max_length_percentile,
                      patience=a.patience, seed=a.seed, pairs=a.pairs, bidirectional=a.bidirectional,
                      on_missing=a.on_missing, attention_dim=a.attention_dim,
                      doubly_stochastic=a.doubly_stochastic)
    result = fit(a.captions, a.features, a.out, opts, format=a.format, resume=a.resume,
                 verbose=1 if sys.stdout.isatty() else 2)
    print(result.summary())


def _strategy(a):
    from captioning.inference.search import BeamSearch, Greedy, RandomSampler
    if getattr(a, "sample", False):
        return RandomSampler(temperature=a.temperature, top_k=a.top_k, seed=a.seed)
    return BeamSearch(a.beam) if a.beam and a.beam > 1 else Greedy()


def _cmd_caption(a):
    from captioning.inference.captioner import Captioner
    captioner = Captioner.load(a.model)
    if a.attention_figure and captioner.decoder["type"] != "attention":  # before any work is done
        raise CaptioningError("--attention-figure needs a run trained with --model attention")
    results = captioner.caption_files(a.images, _strategy(a), max_length=a.max_length)
    if a.attention_figure:
        from pathlib import Path

        from captioning.evaluation.figures import attention_figure
        good = [(p, r) for p, r in results if not isinstance(r, Exception)]
        grid = captioner.config["features"]["grid"]
        out = Path(a.attention_figure)
        for i, (path, res) in enumerate(good):
            target = out if len(good) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            attention_figure(path, res, grid, target)
            print(f"attention figure for {path}: {target}", file=sys.stderr)
    failed = 0
    for path, res in results:
        if isinstance(res, Exception):
            failed += 1
            print(f"{path}: cannot caption: {res}", file=sys.stderr)
        elif a.json:
            print(json.dumps({"image": str(path), "caption": res.text, "log_prob": res.log_prob}))
        else:
            print(f"{path}\t{res.text}")
    return EXIT_PARTIAL if failed else EXIT_OK


def _cmd_evaluate(a):
    from captioning.evaluation.evaluate import evaluate
    result = evaluate(a.model, a.captions, a.features, split=a.split, strategy=_strategy(a),
                      format=a.format, out=a.out, coco=a.coco, limit=a.limit)
    print(result.summary())


def _cmd_demo(a):
    from captioning.demo import run_demo
    run_demo(a.out, images=a.images, backbone=a.backbone, epochs=a.epochs)


def _add_strategy_options(p):
    p.add_argument("--beam", type=int, default=0, metavar="K", help="beam width (default: greedy)")
    p.add_argument("--sample", action="store_true", help="sample instead of searching")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest words (0: all)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    from captioning.data.formats import FORMATS
    parser = argparse.ArgumentParser(
        prog="captioning", description="Image captioning with Keras: cached CNN features, "
        "merge/inject decoders, greedy/beam/sampling inference, BLEU and COCO metrics.")
    parser.add_argument("--version", action="version", version=f"captioning {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("make-sample", help="write the built-in synthetic sample data set")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_sample)

    p = sub.add_parser("info", help="summarise a data set: splits, vocabulary, lengths, missing images")
    p.add_argument("data", metavar="DATA", help="data-set folder or captions file")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--images", metavar="DIR", help="images folder (default: found next to the captions)")
    p.add_argument("--min-count", type=int, default=5)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("extract-features", help="run a CNN over images and cache vectors in HDF5")
    p.add_argument("images_dir", metavar="IMAGES_DIR")
    p.add_argument("--backbone", required=True, help="xception, inception_v3, resnet50, vgg16, densenet201, …")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a Keras weights file")
    p.add_argument("--out", metavar="FILE.h5", help="default: features/<dataset>_<backbone>.h5")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooling", choices=["avg", "max"], default="avg")
    p.add_argument("--spatial", action="store_true", help="store the last convolutional grid")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--captions", metavar="DATA", help="only the images this data set captions")
    p.add_argument("--image-list", metavar="FILE", help="only the images named in FILE, one a line")
    p.add_argument("--limit", type=int, metavar="N")
    p.add_argument("--overwrite", action="store_true", help="replace a store made differently")
    p.add_argument("--strict", action="store_true", help="exit 3 if any image failed")
    p.add_argument("--mixed-precision", action="store_true",
                   help="float16 compute on a GPU, bfloat16 on CPUs that have it (about 2x faster)")
    p.add_argument("--workers", type=int, default=0, help="decode threads (default: CPU count)")
    p.add_argument("--seed", type=int, default=0, help="random init seed with --weights none")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("fit", help="train a decoder on cached features into a run folder")
    p.add_argument("--captions", required=True, metavar="DATA")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--features", required=True, metavar="FILE.h5")
    p.add_argument("--model", default="merge", choices=["merge", "inject", "init-inject", "pre-inject", "attention"],
                   help="attention needs a --spatial feature store")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--rnn", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--bidirectional", action="store_true", help="inject only: bidirectional final LSTM")
    p.add_argument("--attention-dim", type=int, default=256, help="attention only")
    p.add_argument("--doubly-stochastic", type=float, default=0.02, metavar="LAMBDA",
                   help="attention only: weight of the λ·Σ(1 − Σₜ αₜ)² regulariser")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--max-length-percentile", type=float, default=None)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", action="store_true", help="train on partial-caption pairs (the reference path)")
    p.add_argument("--on-missing", choices=["skip", "error"], default="skip",
                   help="captioned images absent from the feature store")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("caption", help="caption image files with a trained run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, metavar="RUN_DIR")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--attention-figure", metavar="OUT.png", help="attention runs: per-word attention maps")
    _add_strategy_options(p)
    p.set_defaults(func=_cmd_caption)

    p = sub.add_parser("evaluate", help="score a split: BLEU-1..4 (and COCO metrics), eval.json, figure")
    p.add_argument("--model", required=True, metavar="RUN_DIR")
    p.add_argument("--captions", required=True, metavar="DATA")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--features", required=True, metavar="FILE.h5")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", metavar="DIR", help="default: RUN_DIR/eval-<split>")
    p.add_argument("--coco", action="store_true", help="also METEOR/ROUGE-L/CIDEr (needs the coco extra and Java)")
    p.add_argument("--limit", type=int, metavar="N", help="first N images of the split")
    _add_strategy_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="the whole pipeline on the built-in sample set, offline")
    p.add_argument("--out", default="demo", metavar="DIR")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--epochs", type=int, default=30)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.configure(args.verbose)
    try:
        code = args.func(args)
    except CaptioningError as e:
        print(f"captioning {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\ncaptioning {args.command}: interrupted; finished work is kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else code
