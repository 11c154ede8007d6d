"""Benchmark: each export format's size, speed and dev scores against the Keras run (not a test).

    python bench/export.py --run RUN_DIR [--weights FILE] [--images DIR] [--captions DATA] [--limit 1000]

Exports RUN_DIR as a bundle, a SavedModel and TFLite models in float32, float16 and int8, then
captions the same ``--limit`` dev photos (``--images``, default ../shared/flickr8k/Images224) with
each and scores them against the dev references (BLEU-4 and CIDEr, pycocoevalcap). The decoding is
the same for all rows of a comparison: greedy (the TFLite host loop's, docs/examples/caption_tflite.py),
and beam 16 (the bundle without re-ranking, the SavedModel in its graph), beside the bundle's
recommended decoding (beam 16 + re-ranking, which only the bundle has). Latency: milliseconds per
photo, one photo at a time (file in, caption out), median over the first 50; throughput: photos/s
over all of them in batches of 32 (the TFLite loop runs one photo at a time).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioning.data import load_captions, tokenize  # noqa: E402
from captioning.export import export  # noqa: E402
from captioning.inference import Captioner  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
LATENCY_PHOTOS = 50


def scores(refs: dict, captions: dict) -> dict:
    """BLEU-4 and CIDEr as pycocoevalcap computes them (METEOR, which needs Java, is left out)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    res = {k: [captions[k] or "<empty>"] for k in refs}
    return {"BLEU-4": Bleu(4).compute_score(refs, res, verbose=0)[0][3], "CIDEr": Cider().compute_score(refs, res)[0]}


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def timed(caption_one, caption_all, paths):
    """(captions of all paths, median ms per photo one at a time, photos/s over all)."""
    one = []
    for p in paths[:LATENCY_PHOTOS]:
        start = time.perf_counter()
        caption_one(p)
        one.append(time.perf_counter() - start)
    start = time.perf_counter()
    captions = caption_all(paths)
    return captions, 1000 * float(np.median(one)), len(paths) / (time.perf_counter() - start)


class TFLiteCaptioner:
    """docs/examples/caption_tflite.py's greedy host loop, as an object."""

    def __init__(self, folder: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
        self.meta = json.loads((folder / "export.json").read_text())
        self.words = json.loads((folder / "vocab.json").read_text())["tokens"]
        self.encode = Interpreter(model_path=str(folder / "encoder.tflite"), num_threads=2).get_signature_runner("encode")
        self.step = Interpreter(model_path=str(folder / "step.tflite"), num_threads=2).get_signature_runner("step")

    def __call__(self, path) -> str:
        m, size = self.meta, self.meta["image_size"]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)[None]
        state, token, words = self.encode(pixels=pixels), m["start_id"], []
        for _ in range(m["max_length"] - 1):
            out = self.step(token=np.array([token], np.int32), **state)
            log_probs = out.pop("log_probs")[0]
            log_probs[m["never_emit"]] = -np.inf
            token = int(np.argmax(log_probs))
            if token == m["end_id"]:
                break
            words.append(self.words[token])
            state = out
        return " ".join(words)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--weights", help="the backbone's weights file, if the run's recorded one has moved")
    ap.add_argument("--images", default=SHARED / "flickr8k" / "Images224", type=Path)
    ap.add_argument("--captions", default=SHARED / "flickr8k")
    ap.add_argument("--limit", type=int, default=1000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    data = load_captions(a.captions, images_dir=a.images)
    refs_raw = data.references("dev")
    ids = [i for i in refs_raw if (a.images / i).is_file()][: a.limit]
    paths = [str(a.images / i) for i in ids]
    print(f"{len(ids)} dev photos from {a.images}; exports in {tmp}")

    started = time.perf_counter()
    sizes = {}
    for name, fmt, precision in [("bundle", "bundle", None), ("saved_model", "saved_model", None),
                                 ("tflite float32", "tflite", "float32"), ("tflite float16", "tflite", "float16"),
                                 ("tflite int8", "tflite", "int8")]:
        out = tmp / name.replace(" ", "_")
        export(a.run if fmt == "bundle" else tmp / "bundle", out, fmt,
               weights=a.weights if fmt == "bundle" else None, precision=precision)
        sizes[name] = size_mib(out)
    print(f"exports written in {time.perf_counter() - started:.0f} s")

    bundle = Captioner.load(tmp / "bundle")
    vocab = bundle.vocab
    refs = {i: [" ".join(tokenize(c, vocab.cleaning)) for c in refs_raw[i]] for i in ids}

    def keras(decoding):
        return (lambda p: bundle.caption([p], decoding),
                lambda ps: [c.text for _, c in bundle.caption_files(ps, decoding)])

    import tensorflow as tf
    saved = tf.saved_model.load(str(tmp / "saved_model"))

    def graph(signature):
        fn = saved.signatures[signature]

        def run(ps):
            out = []
            for s in range(0, len(ps), 32):
                images = tf.constant([open(p, "rb").read() for p in ps[s:s + 32]])
                out += [c.decode() for c in fn(images=images)["caption"].numpy()]
            return out
        return (lambda p: run([p]), run)

    rows = [("Keras run (bundle)", "greedy", "bundle", keras("greedy")),
            ("SavedModel", "greedy", "saved_model", graph("greedy"))]
    for precision in ("float32", "float16", "int8"):
        host = TFLiteCaptioner(tmp / f"tflite_{precision}")
        rows.append((f"TFLite {precision}", "greedy", f"tflite {precision}", (host, lambda ps, h=host: [h(p) for p in ps])))
    rows += [("Keras run (bundle)", "beam 16", "bundle", keras("beam")),
             ("SavedModel (serving_default)", "beam 16", "saved_model", graph("serving_default")),
             ("Keras run (bundle)", "beam 16 + re-ranking (recommended)", "bundle", keras("recommended"))]
    print("\n| artifact | decoding | size (MiB) | ms per photo | photos/s | BLEU-4 | CIDEr | same captions as Keras |")
    print("|---|---|---|---|---|---|---|---|")
    reference = {}
    for name, decoding, artifact, (one, many) in rows:
        captions, ms, rate = timed(one, many, paths)
        score = scores(refs, dict(zip(ids, captions)))
        same = ""
        if name.startswith("Keras"):
            reference[decoding] = captions
        elif decoding in reference:
            same = f"{sum(a == b for a, b in zip(captions, reference[decoding]))}/{len(ids)}"
        print(f"| {name} | {decoding} | {sizes[artifact]:.1f} | {ms:.0f} | {rate:.1f} | {score['BLEU-4']:.3f} | "
              f"{score['CIDEr']:.3f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
