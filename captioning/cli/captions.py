"""``caption`` and ``evaluate``: a run folder's captions for photos, or for a split's stored features,
with the decoding recipe of ``captioning.inference.decoding`` (the recommended one unless told)."""

from __future__ import annotations

import json
import sys

from captioning import console
from captioning.cli.common import add_run_option, figure_path, image_files, ranged
from captioning.errors import UsageError

EXIT_OK, EXIT_PARTIAL = 0, 3
MAX_LENGTH = 1000  # tokens: far beyond any caption, and a bound on the steps a never-ending one costs


def decoding(a):
    """The recipe the options ask for: the recommended one, changed only by the options typed."""
    from captioning.inference import decoding
    typed = {k: v for k, v in vars(a).items() if k in decoding.FLAGS and v is not None}
    if getattr(a, "no_rerank", False):
        if typed.get("rerank"):
            raise UsageError("--no-rerank and --rerank N contradict each other; give one of them")
        typed["rerank"] = 0
    recipe = decoding.get("recommended", **typed)
    if getattr(a, "attention_figure", None) and recipe.reranked:
        if "rerank" in typed:
            raise UsageError("--attention-figure draws beam search's own choice, so it cannot be re-ranked: "
                             "leave out --rerank (or give --no-rerank)")
        recipe = decoding.get(recipe, rerank=0)  # the maps belong to beam search's own choice
    return recipe


def tsv_field(path) -> str:
    """A file name as one TSV field: a tab or a line break in it (legal on Linux) would split the line,
    so they are escaped as \\t, \\n and \\r (and a backslash as \\\\), as --json escapes them."""
    text = str(path)
    if not any(c in text for c in "\\\t\n\r"):
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def caption(a):
    from captioning.inference.captioner import Captioner, empty_captions_note
    from captioning.inference.decoding import label
    recipe = decoding(a)  # before the run is loaded
    captioner = Captioner.load(a.run, weights=a.weights, allow_partial=a.allow_partial)
    search = captioner.search(recipe)
    if a.attention_figure and (not captioner.decoder.decoder.has_attention_maps(captioner.decoder) or len(a.run) > 1):
        raise UsageError("--attention-figure needs one run (one --run) trained with --decoder attention, or "
                         "--decoder transformer on --spatial features")  # said before any work
    if a.attention_block is not None:
        if not a.attention_figure:
            raise UsageError("--attention-block chooses the maps of --attention-figure: give both, or neither")
        captioner.draw_maps_from_block(a.attention_block)
    results = captioner.caption_files(image_files(a.images), search, max_length=a.max_length,
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
            print(f"{tsv_field(path)}\t{res.text}")
    sys.stdout.flush()
    good = [(p, r) for p, r in results if not isinstance(r, Exception)]
    empty = empty_captions_note([r for _, r in good], a.run if len(a.run) > 1 else a.run[0])
    if empty:
        print(f"captioning caption: note: {empty}", file=sys.stderr)
    if a.attention_figure:
        from captioning.figures import attention_figure
        out = a.attention_figure
        for i, (path, res) in enumerate(good):
            target = out if len(good) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            attention_figure(path, res, captioner.feature_spec.grid, target)
            print(f"attention figure for {path}: {target}", file=sys.stderr)
    if a.figure:
        from captioning.figures import MAX_GRID, caption_grid
        shown = good[:MAX_GRID]  # a page people can read; thousands of panels would not even render
        caption_grid([(p, r.text, []) for p, r in shown], a.figure, columns=min(3, max(1, len(shown))),
                     title=f"{captioner.decoder.type} — {label(search)}")
        what = (f"the first {len(shown)} of {len(good)} captioned images" if len(shown) < len(good)
                else console.count(len(good), "captioned image"))
        print(f"figure of {what}: {a.figure}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def evaluate(a):
    from captioning.evaluation.evaluate import evaluate as score
    from captioning.inference.captioner import Captioner
    recipe = decoding(a)
    captioner = Captioner.load(a.run, allow_partial=a.allow_partial)
    result = score(a.run, a.captions, a.features, split=a.split, decoding=recipe, format=a.format, out=a.out,
                   coco=a.coco, limit=a.limit, captioner=captioner, images_dir=a.images)
    print(result.summary())


def add_decoding_options(p):
    """The decoding options of caption and evaluate. None means 'not typed': the recipe
    (``captioning.inference.decoding``) then keeps its own value, shown here as the default."""
    from captioning.inference.decoding import RECOMMENDED as R
    g = p.add_argument_group("decoding (default: the recommended recipe, beam 16 + re-ranking)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--beam", type=ranged(int, 0), metavar="K",
                     help=f"beam width (default: {R.beam}); 0 or 1: greedy")
    how.add_argument("--greedy", dest="method", action="store_const", const="greedy",
                     help="the likeliest word at each step: fastest, weakest captions")
    how.add_argument("--sample", dest="method", action="store_const", const="sample",
                     help="sample words at random instead of searching")
    g.add_argument("--length-penalty", type=ranged(float, 0), metavar="ALPHA",
                   help=f"beam: rank finished captions by log p / length**ALPHA (default: {R.length_penalty})")
    g.add_argument("--rerank", type=ranged(int, 0), metavar="N",
                   help="beam: of the finished captions, keep the one the captions of the N train images most like "
                        f"this one agree with most (consensus re-ranking; default: {R.rerank}; 0: off)")
    g.add_argument("--no-rerank", action="store_true",
                   help="beam search's own choice, not re-ranked (about three times as fast; same as --rerank 0)")
    g.add_argument("--matching", type=ranged(float, 0), metavar="W",
                   help="re-ranking: add W × how well each caption fits the photo (the run's image–caption "
                        "matcher, matcher.keras) to the neighbours' consensus, and let the 100 train captions the "
                        f"matcher puts closest to the photo vote at half the neighbours' weight (default: "
                        f"{R.matching:g}; 0: consensus alone)")
    g.add_argument("--likelihood", type=ranged(float, 0), metavar="NU",
                   help="re-ranking: add NU × each caption's log-probability from beam search, so that of captions "
                        f"the neighbours and the matcher rate alike the more fluent one wins (default: {R.likelihood:g})")
    g.add_argument("--candidates", choices=("both", "model"),
                   help="re-ranking chooses among the captions beam search finds with model.keras and with the "
                        "run's model before self-critical tuning (cross_entropy.keras): both; or model.keras's "
                        f"alone (model: faster) (default: {R.candidates})")
    g.add_argument("--proposer-precision", choices=("auto", "float32"),
                   help="re-ranking: the arithmetic of cross_entropy.keras's search, whose captions are only "
                        "candidates: auto computes in bfloat16 or float16 where this machine does that faster "
                        "(a GPU, or a CPU with AVX512-BF16 or AMX under TensorFlow: about 1.5× as fast), float32 "
                        f"always (default: {R.proposer_precision})")
    g.add_argument("--temperature", type=ranged(float, 0, low_open=True),
                   help=f"with --sample (default: {R.temperature:g})")
    g.add_argument("--top-k", type=ranged(int, 0), help="with --sample: the k likeliest words (default: 0, all)")
    g.add_argument("--seed", type=ranged(int, 0, 2 ** 32, high_open=True), help="with --sample (default: 0)")


def add_commands(add):
    from captioning.cli.data import add_format_option
    p = add("caption", help="caption image files with a trained run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    add_run_option(p)
    p.add_argument("--weights", metavar="PATH", help="the backbone's weights file, if the recorded one has moved")
    p.add_argument("--max-length", type=ranged(int, 2, MAX_LENGTH), default=None, metavar="N",
                   help=f"the most tokens a caption may have, start and end included (default: the run's; at most "
                        f"{MAX_LENGTH}: a caption that never ends costs one decoder step per token)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--attention-figure", metavar="OUT.png", type=figure_path,
                   help="attention and grid transformer runs: per-word attention maps (one file per image when several)")
    p.add_argument("--attention-block", type=ranged(int, 1, None), metavar="N",
                   help="grid transformer runs: draw decoder block N's cross-attention (1 = the first; default: the "
                        "last), averaged over its heads")
    p.add_argument("--figure", metavar="OUT.png", type=figure_path,
                   help="a grid of the images with their captions (PNG, or PDF/SVG/… by the suffix)")
    add_decoding_options(p)
    p.set_defaults(func=caption)

    p = add("evaluate", help="score a split: BLEU-1..4 (and COCO metrics), eval.json, figure")
    add_run_option(p)
    p.add_argument("--captions", required=True, metavar="DATA", help="data-set folder or captions file")
    add_format_option(p)
    p.add_argument("--features", required=True, metavar="FILE.h5",
                   help="a store made like the run's (same backbone and weights)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"], help="the images to caption and score")
    p.add_argument("--out", metavar="DIR", help="default: RUN_DIR/eval-<split>")
    p.add_argument("--coco", action="store_true", help="also METEOR/ROUGE-L/CIDEr (needs the coco extra and Java)")
    p.add_argument("--limit", type=ranged(int, 1), metavar="N", help="first N images of the split")
    p.add_argument("--images", metavar="DIR", help="images folder for examples.png (default: beside the captions)")
    add_decoding_options(p)
    p.set_defaults(func=evaluate)
