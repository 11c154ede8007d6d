"""Benchmark: the whole pipeline at MS-COCO size on one machine, and how each stage grows (not a test).

    python bench/scale.py [--sizes 0.125 0.5 1] [--steps 400] [--folder 500] [--out work/scale]

For each size (a fraction of COCO's Karpathy split: 123,287 images, 5 captions each, 5,000 val and
5,000 test, the rest train) it builds a data set in the Karpathy JSON layout and a pooled feature
store (1,280 numbers per image, float16), then runs, each in a fresh process:
  fit       ``captioning fit``'s library stages with the defaults (init-inject, 1 self-critical
            epoch, the 60-pass matcher), 1 cross-entropy epoch; the cross-entropy and self-critical
            epochs stop after ``--steps`` batches (``fit --steps-per-epoch``) and the table gives their
            rate and what a whole epoch would take;
  evaluate  ``captioning evaluate --split test --coco`` with the recommended decoding;
  caption   ``captioning caption FOLDER --json`` on ``--folder`` photos (the run's backbone,
            MobileNetV2, random-init: the data set's features are made up, so only speed counts).
Each row: wall time, peak RSS, disk written and the per-item rate. Nothing needs the network.

The data set is made up but shaped like COCO: each image has a subject, an attribute, an action, an
object and a place, each drawn at a Zipf–Mandelbrot rate from its own word list (about 9,500 invented
words, so the vocabulary at --min-count 5 and its long tail look like COCO's); its five captions
say them through varied templates, an annotator now and then naming a neighbouring word instead;
its features are a ReLU of the sum of those words' random vectors and noise, so a decoder can learn
to caption them.
"""

import argparse
import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COCO_IMAGES, COCO_HOLDOUT, CAPTIONS_PER_IMAGE, FEATURE_DIM = 123_287, 5_000, 5, 1280
CATEGORIES = {"subject": 2500, "attribute": 1500, "action": 1500, "object": 2500, "place": 1500}
SALIENCE = {"subject": 1.0, "attribute": 0.35, "action": 0.45, "object": 0.7, "place": 0.55}  # in the features
TEMPLATES = [
    "a {attribute} {subject} {action} a {object} in the {place}",
    "the {subject} is {action} near the {place}",
    "a {subject} with a {object} on the {place}",
    "there is a {attribute} {subject} {action} the {object}",
    "a {subject} {action} a {attribute} {object} at the {place} with a {object2}",
    "two {subject} {action} in front of a {object}",
    "a close up of a {attribute} {subject} and a {object}",
    "{subject} {action} on a {place}",
]


def words(n: int, rng) -> list:
    """``n`` distinct invented words of two or three syllables (none an English function word)."""
    onsets = [c for c in string.ascii_lowercase if c not in "aeiouqxy"] + ["br", "st", "pl", "ch", "tr", "sh"]
    syllables = [o + v for o in onsets for v in "aeiou"]
    out, seen = [], {"the", "a", "is", "on", "in", "of", "with", "at", "and", "two", "near"}
    while len(out) < n:
        w = "".join(rng.choice(syllables, size=rng.integers(2, 4)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def zipf(n: int, exponent: float = 1.05, shift: float = 2.7) -> np.ndarray:
    p = 1.0 / (np.arange(n) + shift) ** exponent
    return p / p.sum()


def make_dataset(folder: Path, fraction: float, seed: int = 0) -> dict:
    """``dataset_coco.json`` and ``features.h5`` in ``folder``; returns sizes and timings."""
    from captioning.features.backbones import describe_weights, get_backbone
    from captioning.features.writer import FeatureStoreWriter
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    n, holdout = round(COCO_IMAGES * fraction), round(COCO_HOLDOUT * fraction)
    lexicon = words(sum(CATEGORIES.values()), rng)
    lists, at = {}, 0
    for name, size in CATEGORIES.items():
        lists[name], at = lexicon[at:at + size], at + size
    draws = {name: rng.choice(len(lists[name]), size=n, p=zipf(len(lists[name]))) for name in CATEGORIES}
    draws["object2"] = rng.choice(len(lists["object"]), size=n, p=zipf(len(lists["object"])))
    folder.mkdir(parents=True, exist_ok=True)
    slots = ("subject", "attribute", "action", "object", "place", "object2")
    templates = np.argsort(rng.random((n, len(TEMPLATES))), axis=1)[:, :CAPTIONS_PER_IMAGE]
    # now and then another annotator's word: a neighbour in the list
    shift = np.where(rng.random((n, CAPTIONS_PER_IMAGE, len(slots))) < 0.15,
                     rng.integers(-3, 4, (n, CAPTIONS_PER_IMAGE, len(slots))), 0)
    said = {}
    for j, name in enumerate(slots):
        pool = lists["object" if name == "object2" else name]
        said[name] = np.clip(draws[name][:, None] + shift[:, :, j], 0, len(pool) - 1)
    images = []
    for i in range(n):
        split = "test" if i < holdout else "val" if i < 2 * holdout else "restval" if i % 4 == 0 else "train"
        where = "val2014" if split in ("val", "test", "restval") else "train2014"
        sentences = []
        for c, t in enumerate(templates[i]):
            tokens = TEMPLATES[t].format(**{name: lists["object" if name == "object2" else name][said[name][i, c]]
                                            for name in slots}).split()
            sentences.append({"tokens": tokens, "raw": " ".join(tokens).capitalize() + ".", "imgid": i,
                              "sentid": i * CAPTIONS_PER_IMAGE + c})
        images.append({"filepath": where, "filename": f"COCO_{where}_{i:012d}.jpg", "imgid": i, "split": split,
                       "cocoid": i, "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    text = folder / "dataset_coco.json"
    text.write_text(json.dumps({"images": images, "dataset": "coco"}))
    for im in images:
        del im["sentences"]
    vectors = {name: rng.normal(0, 1, (len(lists[name]), FEATURE_DIM)).astype(np.float32) for name in CATEGORIES}
    backbone = get_backbone("mobilenet_v2")
    attrs = {"backbone": backbone.name, **describe_weights("none", 0), "pooling": "avg",
             "input_size": backbone.input_size, "preprocessing": backbone.preprocessing, "resize": "bilinear",
             "color": "RGB (alpha composited on white)", "dtype": "float16", "feature_shape": [FEATURE_DIM],
             "feature_dim": FEATURE_DIM, "images_root": str(folder.resolve())}
    store = folder / "features.h5"
    writer = FeatureStoreWriter(store, attrs, overwrite=True)
    for lo in range(0, n, 4096):
        rows = np.arange(lo, min(n, lo + 4096))
        x = 0.6 * rng.normal(0, 1, (len(rows), FEATURE_DIM)).astype(np.float32) - 0.5
        for name, weight in SALIENCE.items():
            x += weight * vectors[name][draws[name][rows]]
        names = [f"{images[i]['filepath']}/{images[i]['filename']}" for i in rows]
        writer.write_batch(names, np.maximum(x, 0).astype(np.float16))
    writer.finalize(True).close()
    return {"images": n, "captions": n * CAPTIONS_PER_IMAGE, "seconds": time.perf_counter() - start,
            "bytes": text.stat().st_size + store.stat().st_size}


def make_photos(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` 224-pixel JPEGs of soft colour fields, for ``caption`` to read, resize and embed."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (folder / f"photo_{i:05d}.jpg").exists():
            small = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
            Image.fromarray(small).resize((224, 224), Image.BILINEAR).save(folder / f"photo_{i:05d}.jpg", quality=90)
    return folder


# The fit stage: the library's own steps, each timed, with the process's resident memory sampled.
_FIT = r"""
import json, sys, threading, time
from pathlib import Path
from captioning import interrupt
from captioning.backend import import_keras
from captioning.training import FitOptions, fitting, matching
from captioning.training.self_critical import SelfCritical
keras = import_keras()
data, features, out, steps, passes = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
peak, marks = [0], {}

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def sample():
    while True:
        peak[0] = max(peak[0], rss()); time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()

def stage(name, seconds, items=None, unit=None, whole=None):
    peak[0] = max(peak[0], rss())
    print(json.dumps({"stage": name, "seconds": seconds, "peak": peak[0], "items": items, "unit": unit,
                      "whole": whole}), flush=True)
    peak[0] = rss()

class Clock(keras.callbacks.Callback):  # when the steps end and validation begins
    def on_train_begin(self, logs=None): marks["train"] = time.perf_counter()
    def on_test_begin(self, logs=None): marks.setdefault("test", time.perf_counter())
    def on_test_end(self, logs=None): marks.setdefault("tested", time.perf_counter())
keras_callback = interrupt.keras_callback
def _both():
    inner, clock = keras_callback(), Clock()
    class Both(keras.callbacks.Callback):
        def set_model(self, model): inner.set_model(model); clock.set_model(model)
        def on_train_begin(self, logs=None): clock.on_train_begin(logs)
        def on_test_begin(self, logs=None): clock.on_test_begin(logs)
        def on_test_end(self, logs=None): clock.on_test_end(logs)
        def on_train_batch_end(self, batch, logs=None): inner.on_train_batch_end(batch, logs)
    return Both()
interrupt.keras_callback = _both

dev_seconds = []
real_dev = SelfCritical.dev_cider
def timed_dev(self, refs):
    t = time.perf_counter(); r = real_dev(self, refs); dev_seconds.append(time.perf_counter() - t); return r
SelfCritical.dev_cider = timed_dev

o = FitOptions(epochs=1, steps_per_epoch=steps, matcher_epochs=passes)
t = time.perf_counter()
p = fitting.plan(data, features, out, o)
stage("fit: read captions, vocabulary, encode", time.perf_counter() - t, len(p.train.ids), "caption")
t = time.perf_counter()
fitting.train(p, verbose=0)
steps_s, val_s = marks["test"] - marks["train"], marks["tested"] - marks["test"]
images = steps * o.batch_size
whole_epoch = p.sequences()[0]
whole_epoch.limit = None
whole = len(whole_epoch) / steps * steps_s
stage("fit: cross-entropy epoch", steps_s, images, "train image", whole)
stage("fit: validation", val_s, len(p.dev.ids), "caption")
rest = time.perf_counter() - t - steps_s - val_s
stage("fit: model set-up and checkpoints", rest)
t = time.perf_counter()
fitting.tune(p, verbose=0)
sc = time.perf_counter() - t - sum(dev_seconds)
n_train = len(p.train_references)
stage("fit: self-critical epoch", sc, steps * 32, "train image", n_train / (steps * 32) * sc)
stage("fit: dev CIDEr-D, greedy", sum(dev_seconds),
      len(dev_seconds) * len(p.dev_references), "image")
timings = {}
for module, name in ((fitting, "_write_neighbours"), (matching, "write")):
    real = getattr(module, name)
    def timed(*a, _real=real, _name=name, **k):
        t = time.perf_counter(); r = _real(*a, **k); timings[_name] = time.perf_counter() - t; return r
    setattr(module, name, timed)
t = time.perf_counter()
fitting.export(p, verbose=0)
total = time.perf_counter() - t
stage("fit: neighbours.h5", timings["_write_neighbours"], n_train, "train image")
stage("fit: matcher", timings["write"], n_train * o.matcher_epochs, "train image")
stage("fit: export (model, curves, config)", total - timings["_write_neighbours"] - timings["write"])
"""


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def child(args, log: Path, env=None):
    """Run ``args`` in a fresh process; (seconds, peak RSS in bytes, its output)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds, text = time.perf_counter() - start, log.read_text()
    if status:
        sys.exit(f"{' '.join(map(str, args[:4]))} ... failed; its output ({log}):\n{text[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, text


def gib(b) -> str:
    return f"{b / 2 ** 30:.2f} GiB"


def one_size(fraction: float, a) -> list:
    root = Path(a.out) / f"coco-{fraction:g}"
    data, run = root / "data", root / "run"
    rows = []
    made = make_dataset(data, fraction) if not (data / "features.h5").exists() else None
    if made:
        rows.append({"stage": "making the data set (bench only)", "seconds": made["seconds"], "peak": None,
                     "bytes": made["bytes"], "items": made["captions"], "unit": "caption"})
    if run.exists():
        import shutil
        shutil.rmtree(run)
    seconds, peak, text = child([sys.executable, "-c", _FIT, data, data / "features.h5", run, str(a.steps),
                                 str(a.matcher_epochs)],
                                root / "fit.log")
    for line in text.splitlines():
        if line.startswith('{"stage"'):
            rows.append(json.loads(line))
    rows.append({"stage": "fit (whole process)", "seconds": seconds, "peak": peak, "bytes": folder_bytes(run)})
    evaluation = root / "eval"
    seconds, peak, _ = child([sys.executable, "-m", "captioning", "evaluate", "--run", run, "--captions", data,
                              "--features", data / "features.h5", "--split", "test", "--coco", "--out", evaluation],
                             root / "evaluate.log")
    test = round(COCO_HOLDOUT * fraction)
    rows.append({"stage": "evaluate --split test --coco", "seconds": seconds, "peak": peak,
                 "bytes": folder_bytes(evaluation), "items": test, "unit": "image"})
    photos = make_photos(Path(a.out) / "photos", a.folder)
    seconds, peak, text = child([sys.executable, "-m", "captioning", "caption", photos, "--run", run, "--json"],
                                root / "caption.log")
    rows.append({"stage": "caption FOLDER --json", "seconds": seconds, "peak": peak,
                 "bytes": len(text.encode()), "items": a.folder, "unit": "photo"})
    return rows


def spatial_check(a) -> list:
    """A COCO-sized ``--spatial`` store (7×7×1,280 float16 per image, 15 GB) made as two shards,
    joined by ``merge-features``, then ``fit --decoder attention`` for ``--steps`` batches: each
    process's peak memory must stay far below the store's size."""
    from captioning.features.backbones import describe_weights, get_backbone
    from captioning.features.writer import FeatureStoreWriter
    data, root = Path(a.out) / "coco-1" / "data", Path(a.out) / "spatial"
    if not (data / "dataset_coco.json").exists():
        make_dataset(data, 1.0)
    names = [f"{im['filepath']}/{im['filename']}" for im in json.loads((data / "dataset_coco.json").read_text())["images"]]
    backbone, rng, rows = get_backbone("mobilenet_v2"), np.random.default_rng(1), []
    attrs = {"backbone": backbone.name, **describe_weights("none", 0), "pooling": "spatial", "grid": [7, 7],
             "input_size": backbone.input_size, "preprocessing": backbone.preprocessing, "resize": "bilinear",
             "dtype": "float16", "feature_shape": [49, FEATURE_DIM], "feature_dim": FEATURE_DIM}
    parts = [root / "part1.h5", root / "part2.h5"]
    start, made = time.perf_counter(), [p for p in parts if not p.exists()]
    for k, part in enumerate(parts):
        if part not in made:
            continue
        writer = FeatureStoreWriter(part, {**attrs, "shard": f"{k + 1}/2"}, overwrite=True)
        mine = names[k::2]
        for lo in range(0, len(mine), 512):
            block = rng.random((len(mine[lo:lo + 512]), 49, FEATURE_DIM), dtype=np.float32)
            writer.write_batch(mine[lo:lo + 512], block.astype(np.float16))
        writer.finalize(True).close()
    if made:
        rows.append({"stage": "spatial shards (bench only)", "seconds": time.perf_counter() - start, "peak": None,
                     "bytes": sum(p.stat().st_size for p in made), "items": len(names), "unit": "image"})
    merged = root / "merged.h5"
    merged.unlink(missing_ok=True)
    seconds, peak, _ = child([sys.executable, "-m", "captioning", "merge-features", "--out", merged, *parts],
                             root / "merge.log")
    rows.append({"stage": "merge-features, 2 spatial shards", "seconds": seconds, "peak": peak,
                 "bytes": merged.stat().st_size, "items": len(names), "unit": "image"})
    for part in parts:
        part.unlink()
    run = root / "run"
    if run.exists():
        import shutil
        shutil.rmtree(run)
    seconds, peak, _ = child([sys.executable, "-m", "captioning", "fit", "--captions", data, "--features", merged,
                              "--out", run, "--decoder", "attention", "--epochs", "1", "--steps-per-epoch",
                              str(a.steps), "--self-critical-epochs", "0", "--matcher-epochs", "0"], root / "fit.log")
    rows.append({"stage": f"fit --decoder attention, {a.steps} batches, spatial store", "seconds": seconds,
                 "peak": peak, "bytes": folder_bytes(run)})
    merged.unlink()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="*", default=[0.125, 0.5, 1.0], help="fractions of COCO (none: "
                   "only --spatial)")
    p.add_argument("--steps", type=int, default=400, help="batches per cross-entropy and self-critical epoch")
    p.add_argument("--folder", type=int, default=500, help="photos for the caption stage")
    p.add_argument("--matcher-epochs", type=int, default=60, help="fit's (its default: 60); fewer re-measure "
                   "the other stages sooner (the matcher's rate per image does not change)")
    p.add_argument("--out", default="work/scale")
    p.add_argument("--spatial", action="store_true", help="also the 15 GB spatial store: merge-features and "
                   "fit --decoder attention (needs about 50 GB of free disk for a while)")
    a = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    results = {}
    for fraction in sorted(a.sizes):
        start = time.perf_counter()
        results[fraction] = one_size(fraction, a)
        print(f"COCO × {fraction:g}: {time.perf_counter() - start:.0f} s", flush=True)
        (Path(a.out) / "results.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    if a.spatial:
        results["spatial"] = spatial_check(a)
        (Path(a.out) / "results.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    sizes = {k: v for k, v in results.items() if k != "spatial"}
    print("| stage | " + " | ".join(f"COCO × {f:g}" for f in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name in dict.fromkeys(r["stage"] for rs in sizes.values() for r in rs):
        cells = [next((cell(r) for r in rs if r["stage"] == name), "") for rs in sizes.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for r in results.get("spatial", []):
        print(f"| {r['stage']} | {cell(r)} |")


def cell(r: dict) -> str:
    """'seconds, rate (whole epoch), peak RSS, MiB written' of one stage."""
    text = f"{r['seconds']:.0f} s"
    if r.get("items") and r.get("unit"):
        text += f", {r['items'] / max(r['seconds'], 1e-9):,.0f} {r['unit']}s/s"
    if r.get("whole"):
        text += f" (whole epoch ≈ {r['whole'] / 60:.0f} min)"
    if r.get("peak"):
        text += f", {gib(r['peak'])}"
    if r.get("bytes"):
        text += f", {r['bytes'] / 2 ** 20:,.0f} MiB written"
    return text


if __name__ == "__main__":
    main()
