"""``captioning`` command line: each subcommand is a thin shell over one library function.

Exit codes: 0 success; 1 a problem explained on stderr (bad input, missing weights, …);
2 wrong usage; 3 finished but some items failed (``extract-features --strict``, ``caption``);
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import functools
import json
import os
import sys

from captioning import __version__, console
from captioning.errors import CaptioningError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CLOSED_PIPE = 141  # what a shell reports for a program stopped by SIGPIPE, as `yes | head` is


def _cmd_make_sample(a):
    from captioning.data import load_captions, make_sample
    out = make_sample(a.out_dir, images=a.scenes, seed=a.seed)
    ds = load_captions(out)
    counts = ", ".join(f"{s} {len(ds.images(s))}" for s in ("train", "dev", "test"))
    print(f"Wrote {a.scenes} images and {len(ds.table)} captions to {out} "
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
        mixed_precision=a.mixed_precision, workers=a.workers, seed=a.seed, shard=a.shard,
        distribute=a.distribute)
    print(result.summary())
    return EXIT_PARTIAL if (a.strict and result.failed) else EXIT_OK


def _cmd_merge_features(a):
    from captioning.features.store import merge_features
    out, parts = a.out, a.parts
    if out is None:  # the form before 0.3.2: OUT.h5 first among the positional names
        if len(parts) < 2:
            raise UsageError("name the merged store with --out OUT.h5 (and the shard stores after it)")
        out, parts = parts[0], parts[1:]
        print(f"captioning merge-features: note: the merged store goes after --out now, as in the other commands: "
              f"`captioning merge-features --out {out} {' '.join(parts)}` (the old form goes in the next release).",
              file=sys.stderr)
    store, notes = merge_features(out, parts, overwrite=a.overwrite)
    print(f"Merged {console.count(len(parts), 'store')} into {store.describe()}."
          + "".join(f"\n  note: {n}" for n in notes))
    return EXIT_OK if store.attrs.get("completed") else EXIT_PARTIAL


def _shard(text):
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 2/4)") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text} is out of range: K must be between 1 and N")
    return k, n


def _cmd_fit(a):
    from captioning.training.fit import FitOptions, fit
    opts = FitOptions(decoder=a.decoder, epochs=a.epochs, batch_size=a.batch_size, embed_dim=a.embed_dim,
                      units=a.units, dropout=a.dropout, rnn=a.rnn, learning_rate=a.learning_rate,
                      min_count=a.min_count, max_length_percentile=a.max_length_percentile,
                      patience=a.patience, seed=a.seed, pairs=a.pairs, bidirectional=a.bidirectional,
                      tie_embeddings=a.tie_embeddings,
                      on_missing=a.on_missing, attention_dim=a.attention_dim,
                      doubly_stochastic=a.doubly_stochastic, monitor=a.monitor, distribute=a.distribute,
                      self_critical_epochs=a.self_critical_epochs,
                      self_critical_learning_rate=a.self_critical_learning_rate)
    result = fit(a.captions, a.features, a.out, opts, format=a.format, resume=a.resume,
                 verbose=1 if sys.stdout.isatty() else 2)
    if result is None:
        print(f"This worker's share of the training is done; the chief worker wrote the run folder {a.out}.")
        return
    print(result.summary())


def _strategy(a, captioner):
    from captioning.inference.search import BeamSearch, Greedy, RandomSampler
    vocab_size = len(captioner.vocab)
    if a.sample:
        if a.top_k > vocab_size:
            raise UsageError(f"--top-k must be at most the vocabulary size ({vocab_size}); got {a.top_k}")
        return RandomSampler(temperature=a.temperature, top_k=a.top_k, seed=a.seed)
    if a.beam <= 1:
        return Greedy()
    search = BeamSearch(a.beam, a.length_penalty)
    if a.rerank and not getattr(a, "attention_figure", None):  # the maps belong to beam search's own choice
        return captioner.reranked(search, a.rerank, a.matching, a.candidates, a.likelihood)
    return search


def _describe(strategy) -> str:
    d = strategy.describe()
    how = d["strategy"] + (f" {d['k']}" if "k" in d else "")
    return how + (" + re-ranking" if "rerank" in d else "")


def _cmd_caption(a):
    from captioning.inference.captioner import Captioner, empty_captions_note
    _refuse_options_without_effect(a)  # before the run is loaded
    captioner = Captioner.load(a.run, weights=a.weights)
    strategy = _strategy(a, captioner)
    if a.attention_figure and (captioner.decoder.type != "attention" or len(a.run) > 1):  # before any work
        raise UsageError("--attention-figure needs one run (one --run) trained with --decoder attention")
    results = captioner.caption_files(_image_files(a.images), strategy, max_length=a.max_length,
                                      show_progress=True)  # on a terminal only: stdout stays one line per image
    for note in captioner.notes:
        print(f"captioning caption: note: {note}", file=sys.stderr)
    failed = 0
    for path, res in results:  # the captions first: a figure that cannot be written loses none of them
        if isinstance(res, Exception):
            failed += 1
            print(f"{path}: cannot caption: {res}", file=sys.stderr)
        elif a.json:
            print(json.dumps({"image": str(path), "caption": res.text, "log_prob": res.log_prob}))
        else:
            print(f"{path}\t{res.text}")
    sys.stdout.flush()
    good = [(p, r) for p, r in results if not isinstance(r, Exception)]
    empty = empty_captions_note([r for _, r in good], a.run if len(a.run) > 1 else a.run[0])
    if empty:
        print(f"captioning caption: note: {empty}", file=sys.stderr)
    if a.attention_figure:
        from captioning.evaluation.figures import attention_figure
        out = a.attention_figure
        for i, (path, res) in enumerate(good):
            target = out if len(good) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            attention_figure(path, res, captioner.features.grid, target)
            print(f"attention figure for {path}: {target}", file=sys.stderr)
    if a.figure:
        from captioning.evaluation.figures import MAX_GRID, caption_grid
        shown = good[:MAX_GRID]  # a page people can read; thousands of panels would not even render
        caption_grid([(p, r.text, []) for p, r in shown], a.figure, columns=min(3, max(1, len(shown))),
                     title=f"{captioner.decoder.type} — {_describe(strategy)}")
        what = (f"the first {len(shown)} of {len(good)} captioned images" if len(shown) < len(good)
                else console.count(len(good), "captioned image"))
        print(f"figure of {what}: {a.figure}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def _image_files(args) -> list:
    """The IMAGE arguments with each folder replaced by the images in it (and below), in a stable order."""
    from pathlib import Path

    from captioning.features.extract import list_images
    paths = []
    for arg in args:
        folder = Path(arg)
        if not folder.is_dir():
            paths.append(arg)
            continue
        found = [str(folder / i) for i in list_images(folder)]
        if not found:
            raise CaptioningError(f"{folder}: a folder with no image files in it (looked for the usual photo "
                                  "suffixes, .jpg .png …, in it and below)")
        paths += found
    return paths


def _cmd_evaluate(a):
    from captioning.evaluation.evaluate import evaluate
    from captioning.inference.captioner import Captioner
    _refuse_options_without_effect(a)
    captioner = Captioner.load(a.run)
    result = evaluate(a.run, a.captions, a.features, split=a.split, strategy=_strategy(a, captioner),
                      format=a.format, out=a.out, coco=a.coco, limit=a.limit, captioner=captioner,
                      images_dir=a.images)
    print(result.summary())


def _cmd_demo(a):
    from captioning.demo import run_demo
    run_demo(a.out, images=a.scenes, backbone=a.backbone, epochs=a.epochs)


def _ranged(kind, low, high=None, low_open=False, what="", high_open=False):
    """An argparse type that refuses values outside [low, high] (either end open on request) with the range named."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and v in (float("inf"), float("-inf")):  # --matching inf would make every score nan
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        above = high is not None and (v >= high if high_open else v > high)
        if v != v or (v <= low if low_open else v < low) or above:
            rng = f"{'>' if low_open else '≥'} {low}" + (f" and {'<' if high_open else '≤'} {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {rng}{what}")
        return v
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _figure_path(text):
    from captioning.evaluation.figures import figure_path
    try:
        return figure_path(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _backbone_name(text):
    from captioning.features.backbones import get_backbone
    try:
        return get_backbone(text).name
    except CaptioningError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_run_option(p):
    p.add_argument("--run", metavar="RUN_DIR", action="append",
                   help="the run folder written by `captioning fit` (required); give it more than once to "
                        "caption with an ensemble of runs trained on the same captions")
    p.add_argument("--model", dest="run_deprecated", metavar="RUN_DIR", help=argparse.SUPPRESS)


class _Given(argparse.Action):
    """Stores the value and remembers that it was typed, so an option that would have no effect is refused."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", set()) | {option_string}


def _add_strategy_options(p):
    p.add_argument("--beam", type=_ranged(int, 0), default=0, metavar="K", action=_Given,
                   help="beam width; 0 or 1: greedy; 16, re-ranked, is the recommended decoding")
    p.add_argument("--length-penalty", type=_ranged(float, 0), default=0.7, metavar="ALPHA", action=_Given,
                   help="beam: rank finished captions by log p / length**ALPHA")
    p.add_argument("--rerank", type=_ranged(int, 0), default=40, metavar="N", action=_Given,
                   help="beam: of the finished captions, keep the one the captions of the N train images most "
                        "like this one agree with most (consensus re-ranking; 0: beam search's own choice)")
    p.add_argument("--matching", type=_ranged(float, 0), default=1.0, metavar="W", action=_Given,
                   help="re-ranking: add W × how well each caption fits the photo (the run's image–caption "
                        "matcher, matcher.keras) to the neighbours' consensus, and let the 100 train captions the "
                        "matcher puts closest to the photo vote at half the neighbours' weight; 0: consensus alone")
    p.add_argument("--likelihood", type=_ranged(float, 0), default=0.02, metavar="NU", action=_Given,
                   help="re-ranking: add NU × each caption's log-probability from beam search, so that of captions "
                        "the neighbours and the matcher rate alike the more fluent one wins; 0: leave it out")
    p.add_argument("--candidates", choices=("both", "model"), default="both", action=_Given,
                   help="re-ranking chooses among the captions beam search finds with model.keras and with the "
                        "run's model before self-critical tuning (cross_entropy.keras): both; or model.keras's "
                        "alone (model: fewer captions to score, about 40 %% faster)")
    p.add_argument("--sample", action="store_true", help="sample instead of searching")
    p.add_argument("--temperature", type=_ranged(float, 0, low_open=True), default=1.0, action=_Given,
                   help="with --sample")
    p.add_argument("--top-k", type=_ranged(int, 0), default=0, action=_Given,
                   help="with --sample: the k likeliest words (0: all)")
    p.add_argument("--seed", type=int, default=0, action=_Given, help="with --sample")


def _refuse_options_without_effect(a) -> None:
    given = getattr(a, "given", set())
    beam = a.beam > 1 and not a.sample
    if a.sample and a.beam > 1:
        raise UsageError("--sample and --beam are two ways to decode; give one of them")
    unused = [o for o in ("--temperature", "--top-k", "--seed") if o in given and not a.sample]
    unused += [o for o in ("--length-penalty",) if o in given and not beam]
    if "--rerank" in given and a.rerank and not beam:
        unused.append("--rerank")
    reranking = {"--matching": a.matching, "--likelihood": a.likelihood, "--candidates": True}  # what only re-ranking reads (--matching 0: off)
    unused += [o for o, on in reranking.items() if o in given and on and not beam]
    if unused:
        needs = "--sample" if unused[0] in ("--temperature", "--top-k", "--seed") else "--beam K (K ≥ 2)"
        raise UsageError(f"{unused[0]} has no effect without {needs}; add it or leave {unused[0]} out")
    for option, on in reranking.items():
        if option in given and on and not a.rerank:
            raise UsageError(f"{option} is a re-ranking option, and --rerank 0 turns re-ranking off: give --rerank N "
                             f"(N ≥ 1) or leave {option} out")
    if "--rerank" in given and a.rerank and getattr(a, "attention_figure", None):
        raise UsageError("--attention-figure draws beam search's own choice, so it cannot be re-ranked: "
                         "leave out --rerank (or give --rerank 0)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default shown, except where there is none to show (None, an unset flag) or the help
    already says it in words."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from captioning import decoders
    from captioning.data.formats import FORMATS
    from captioning.distribute import CHOICES as DISTRIBUTE
    from captioning.training.fit import DEFAULT_EPOCHS, MONITORS, FitOptions
    d = FitOptions()
    parser = argparse.ArgumentParser(formatter_class=_HelpFormatter,
        prog="captioning", description="Image captioning with Keras: cached CNN features, "
        "merge/inject decoders, greedy/beam/sampling inference, BLEU and COCO metrics.")
    parser.add_argument("--version", action="version", version=f"captioning {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's log output and tracebacks")
    common = argparse.ArgumentParser(add_help=False)  # so `captioning fit ... --verbose` works too
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's log output and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add = functools.partial(sub.add_parser, formatter_class=_HelpFormatter,
                            parents=[common])

    p = add("make-sample", help="write the built-in synthetic sample data set")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (Images/ and captions.txt)")
    p.add_argument("--scenes", type=_ranged(int, 3, what=" (one per split)"), default=300,
                   help="scenes to draw, split 70/15/15 into train/dev/test")
    p.add_argument("--images", dest="scenes_deprecated", type=_ranged(int, 3, what=" (one per split)"),
                   help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same data set")
    p.set_defaults(func=_cmd_make_sample)

    p = add("info", help="summarise a data set: splits, vocabulary, lengths, missing images")
    p.add_argument("data", metavar="DATA", help="data-set folder or captions file")
    p.add_argument("--format", choices=FORMATS, help="the captions' layout (default: told from the files)")
    p.add_argument("--images", metavar="DIR", help="images folder (default: found next to the captions)")
    p.add_argument("--min-count", type=_ranged(int, 1), default=5,
                   help="vocabulary summary: words seen at least this often in the train captions")
    p.set_defaults(func=_cmd_info)

    p = add("extract-features", help="run a CNN over images and cache vectors in HDF5")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images (sub-folders included)")
    p.add_argument("--backbone", required=True, type=_backbone_name, metavar="NAME",
                   help="xception, inception_v3, resnet50, resnet101, vgg16, densenet201, efficientnet_b0…b3, "
                        "inception_resnet_v2, mobilenet, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a Keras weights file")
    p.add_argument("--out", metavar="FILE.h5", help="default: features/<dataset>_<backbone>.h5")
    p.add_argument("--batch-size", type=_ranged(int, 1), default=32, help="images per forward pass")
    p.add_argument("--pooling", choices=["avg", "max"], default="avg", help="how the grid becomes one vector")
    p.add_argument("--spatial", action="store_true", help="store the last convolutional grid")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="stored precision (float16: half the disk, captions unchanged in practice)")
    p.add_argument("--captions", metavar="DATA", help="only the images this data set captions")
    p.add_argument("--image-list", metavar="FILE", help="only the images named in FILE, one a line")
    p.add_argument("--limit", type=_ranged(int, 1), metavar="N", help="only the first N images")
    p.add_argument("--overwrite", action="store_true", help="replace a store made differently")
    p.add_argument("--strict", action="store_true", help="exit 3 if any image failed")
    p.add_argument("--mixed-precision", action="store_true",
                   help="float16 compute on a GPU, bfloat16 on CPUs that have it (about 2x faster)")
    p.add_argument("--workers", type=_ranged(int, 0), default=0, help="decode threads (0: one per CPU)")
    p.add_argument("--seed", type=int, default=0, help="random init seed with --weights none")
    p.add_argument("--shard", type=_shard, metavar="K/N", help="only every N-th image from the K-th: run N of these "
                   "(on N GPUs or machines), then merge-features")
    p.add_argument("--distribute", choices=("auto", "none", "mirrored"), default="auto",
                   help="split each batch over this machine's devices: mirrored: every GPU (or logical CPU; "
                        "JAX: every device); auto: mirrored when there are several GPUs")
    p.set_defaults(func=_cmd_extract)

    p = add("merge-features", help="join the stores of a sharded extraction (same network required)")
    p.add_argument("parts", nargs="+", metavar="PART.h5", help="the stores of extract-features --shard K/N")
    p.add_argument("--out", metavar="OUT.h5", help="the merged store to write (required)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.h5 if it was made differently")
    p.set_defaults(func=_cmd_merge_features)

    p = add("fit", help="train a decoder on cached features into a run folder")
    p.add_argument("--captions", required=True, metavar="DATA", help="data-set folder or captions file")
    p.add_argument("--format", choices=FORMATS, help="the captions' layout (default: told from the files)")
    p.add_argument("--features", required=True, metavar="FILE.h5", help="the store of extract-features")
    p.add_argument("--decoder", default=d.decoder, choices=decoders.names(),
                   help="; ".join(f"{n}: {decoders.get(n).help}" for n in decoders.names()))
    p.add_argument("--model", dest="decoder_deprecated", choices=decoders.names(), help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write (or --resume)")
    p.add_argument("--epochs", type=_ranged(int, 1), default=None,
                   help=f"the most epochs (early stopping) (default: {DEFAULT_EPOCHS}; with --resume, the run's own)")
    p.add_argument("--batch-size", type=_ranged(int, 1), default=d.batch_size,
                   help="images per batch on each device (a step takes batch size × devices)")
    p.add_argument("--embed-dim", type=_ranged(int, 1), default=d.embed_dim, help="word embedding size")
    p.add_argument("--units", type=_ranged(int, 1), default=d.units, help="RNN state size")
    p.add_argument("--dropout", type=_ranged(float, 0, 1, high_open=True), default=d.dropout,
                   help="dropout rate in the decoder (cross-entropy epochs only)")
    p.add_argument("--rnn", choices=["lstm", "gru"], default="lstm", help="the recurrent cell")
    p.add_argument("--bidirectional", action="store_true", help="inject only: bidirectional final LSTM")
    p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=d.tie_embeddings,
                   help="the word vectors double as the output layer (default: on for init-inject and inject, "
                        "where it measured better, off for merge and pre-inject; not for attention)")
    p.add_argument("--attention-dim", type=_ranged(int, 1), default=d.attention_dim, help="attention only")
    p.add_argument("--doubly-stochastic", type=_ranged(float, 0), default=d.doubly_stochastic, metavar="LAMBDA",
                   help="attention only: weight of the λ·Σ(1 − Σₜ αₜ)² regulariser")
    p.add_argument("--learning-rate", type=_ranged(float, 0, low_open=True), default=d.learning_rate,
                   help="Adam's, for the cross-entropy epochs (halved when the validation loss stalls)")
    p.add_argument("--min-count", type=_ranged(int, 1), default=d.min_count,
                   help="keep words seen at least this often in the train captions")
    p.add_argument("--max-length-percentile", type=_ranged(float, 0, 100, low_open=True),
                   default=d.max_length_percentile,
                   help="cut captions longer than this percentile of train caption lengths (100: no cut)")
    p.add_argument("--patience", type=_ranged(int, 1), default=d.patience, help="early stopping, in epochs")
    p.add_argument("--monitor", choices=MONITORS, default=d.monitor,
                   help="what early stopping and the kept epoch follow: validation loss, or the dev split's "
                        "greedy BLEU-4 (a few seconds per epoch)")
    p.add_argument("--self-critical-epochs", type=_ranged(int, 0), default=d.self_critical_epochs, metavar="N",
                   help="then N epochs of self-critical training on CIDEr-D (Rennie et al. 2017; about as long "
                        "as a cross-entropy epoch each; 0: none)")
    p.add_argument("--self-critical-learning-rate", type=_ranged(float, 0, low_open=True),
                   default=d.self_critical_learning_rate, help="Adam's, for the self-critical epochs")
    p.add_argument("--seed", type=int, default=d.seed, help="initial weights, batch order, dropout, sampling")
    p.add_argument("--pairs", action="store_true", help="train on partial-caption pairs (the reference path)")
    p.add_argument("--on-missing", choices=["skip", "error"], default="skip",
                   help="captioned images absent from the feature store")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--distribute", choices=DISTRIBUTE, default=d.distribute,
                   help="none: one device; mirrored: every GPU of this machine (or its logical CPUs; JAX: "
                        "DataParallel over its devices); multi-worker: the machines in TF_CONFIG; auto: "
                        "mirrored when there are several GPUs (multi-worker when TF_CONFIG is set)")
    p.set_defaults(func=_cmd_fit)

    p = add("caption", help="caption image files with a trained run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    _add_run_option(p)
    p.add_argument("--weights", metavar="PATH", help="the backbone's weights file, if the recorded one has moved")
    p.add_argument("--max-length", type=_ranged(int, 2), default=None, help="default: the run's")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--attention-figure", metavar="OUT.png", type=_figure_path,
                   help="attention runs: per-word attention maps (one file per image when several)")
    p.add_argument("--figure", metavar="OUT.png", type=_figure_path,
                   help="a grid of the images with their captions (PNG, or PDF/SVG/… by the suffix)")
    _add_strategy_options(p)
    p.set_defaults(func=_cmd_caption)

    p = add("evaluate", help="score a split: BLEU-1..4 (and COCO metrics), eval.json, figure")
    _add_run_option(p)
    p.add_argument("--captions", required=True, metavar="DATA", help="data-set folder or captions file")
    p.add_argument("--format", choices=FORMATS, help="the captions' layout (default: told from the files)")
    p.add_argument("--features", required=True, metavar="FILE.h5",
                   help="a store made like the run's (same backbone and weights)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"], help="the images to caption and score")
    p.add_argument("--out", metavar="DIR", help="default: RUN_DIR/eval-<split>")
    p.add_argument("--coco", action="store_true", help="also METEOR/ROUGE-L/CIDEr (needs the coco extra and Java)")
    p.add_argument("--limit", type=_ranged(int, 1), metavar="N", help="first N images of the split")
    p.add_argument("--images", metavar="DIR", help="images folder for examples.png (default: beside the captions)")
    _add_strategy_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = add("demo", help="the whole pipeline on the built-in sample set, offline")
    p.add_argument("--out", default="demo", metavar="DIR", help="folder for the data, features and run")
    p.add_argument("--scenes", type=_ranged(int, 3, what=" (one per split)"), default=300,
                   help="sample scenes to draw")
    p.add_argument("--images", dest="scenes_deprecated", type=_ranged(int, 3, what=" (one per split)"),
                   help=argparse.SUPPRESS)
    p.add_argument("--backbone", type=_backbone_name, default="resnet50", metavar="NAME",
                   help="as for extract-features")
    p.add_argument("--epochs", type=_ranged(int, 1), default=30, help="the most epochs (early stopping)")
    p.set_defaults(func=_cmd_demo)
    return parser


def _renamed_options(parser, args) -> None:
    """--model meant the decoder in fit and the run folder elsewhere, --images a number of scenes in
    make-sample and demo; the old spellings still work."""
    for new, old, flag in (("decoder", "decoder_deprecated", "--decoder"), ("run", "run_deprecated", "--run")):
        if getattr(args, old, None) is not None:
            print(f"captioning {args.command}: note: --model is deprecated here; use {flag} "
                  "(the old spelling goes in the next release).", file=sys.stderr)
            value = getattr(args, old)
            setattr(args, new, [value] if new == "run" else value)
    if getattr(args, "scenes_deprecated", None) is not None:
        print(f"captioning {args.command}: note: --images is deprecated here; use --scenes (--images names an "
              "images folder in the other commands; the old spelling goes in the next release).", file=sys.stderr)
        args.scenes = args.scenes_deprecated
    if hasattr(args, "run_deprecated") and not args.run:
        parser.error(f"{args.command}: the following arguments are required: --run RUN_DIR")


def _unknown_options(parser, args, extra: list) -> None:
    """argparse reports a subcommand's unknown option with the top-level usage; name the command,
    show its usage and point at the option the user probably meant."""
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    known = [s for a in command._actions for s in a.option_strings]
    hints = []
    for token in (t.split("=", 1)[0] for t in extra if t.startswith("-")):
        names = {k.lstrip("-"): k for k in known}  # the dashes alone would make any two options look alike
        near = [names[n] for n in difflib.get_close_matches(token.lstrip("-"), names, n=1, cutoff=0.6)] or \
            [k for k in known if len(token) == 2 and k.startswith("-" + token)][:1]
        hints += [f"{near[0]} instead of {token}"] if near else []
    hint = f" (did you mean {' and '.join(hints)}?)" if hints else ""
    command.error(f"unrecognized arguments: {' '.join(extra)}{hint}; see `captioning {args.command} --help`")


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_options(parser, args, extra)
    _renamed_options(parser, args)
    console.configure(args.verbose)
    try:
        code = args.func(args)
    except UsageError as e:
        print(f"captioning {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CaptioningError as e:
        print(f"captioning {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `captioning caption DIR | head -3`: the reader took what it wanted; no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return EXIT_CLOSED_PIPE
    except OSError as e:  # read-only folders, a full disk, a path that is a folder or a file
        if args.verbose:
            raise
        out = getattr(args, "out", None)
        where = f"{e.filename}: " if e.filename else (f"writing {out}: " if out and e.errno == errno.ENOSPC else "")
        print(f"captioning {args.command}: error: {where}{e.strerror or e}. Check that the path exists, is "
              "writable and that the disk has space; nothing finished was lost. Run again with --verbose "
              "for the traceback.", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\ncaptioning {args.command}: interrupted; finished work is kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else code
