"""Benchmark: captions per second at the real Flickr8k vocabulary (not a test).

    python bench/decode.py [--run RUN_DIR ...] [--images 1000] [--notebook-images 5] [--epochs 2]
    python bench/decode.py --sample          # the former toy variant: the 29-word sample set

Without ``--run`` it trains a merge and an init-inject decoder on the real Flickr8k captions in
``../shared/flickr8k`` (all words: vocabulary ~7,300) for ``--epochs`` epochs, on the real feature
store in ``../shared/flickr8k/features/`` when present, else on stand-in random features; speed
does not depend on how well the decoder is trained, only on its sizes and caption lengths. Then,
for each run, on the dev images:
  (a) the common notebook beam search, k=3: one ``predict`` per beam per step on the padded prefix;
  (b) greedy; (c) beam k=3; (d) beam k=5 — batched, stateful, top-k inside the compiled step;
and the decoder step alone (model calls × rows per second), the ceiling the searches run against.
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

from captioning.console import import_keras  # noqa: E402
from captioning.data import load_captions, make_sample  # noqa: E402
from captioning.features import FeatureStore, extract_features  # noqa: E402
from captioning.features.store import FeatureStoreWriter  # noqa: E402
from captioning.inference import BeamSearch, Captioner, Greedy  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402

keras = import_keras()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"


def notebook_beam(model, photo, vocab, max_length, k=3):
    """The tutorial version: a Python list of beams, model.predict per beam per step."""
    beams = [([vocab.start_id], 0.0)]
    for _ in range(max_length - 1):
        candidates = []
        for seq, score in beams:
            if seq[-1] == vocab.end_id:
                candidates.append((seq, score))
                continue
            probs = model.predict([photo[None], np.array([seq])], verbose=0)[0]
            for w in np.argsort(probs)[-k:]:
                candidates.append((seq + [int(w)], score + float(np.log(probs[w] + 1e-12))))
        beams = sorted(candidates, key=lambda c: c[1])[-k:]
        if all(s[-1] == vocab.end_id for s, _ in beams):
            break
    return vocab.decode(beams[-1][0])


def stand_in_store(data, path) -> Path:
    """Random 1280-d features for the train and dev images, when the real store is absent."""
    ds = load_captions(data)
    ids = ds.images("train") + ds.images("dev")
    w = FeatureStoreWriter(path, {"backbone": "stand-in", "weights": "none (random features)", "pooling": "avg",
                                  "input_size": 224, "feature_shape": [1280], "dtype": "float16"})
    w.write_batch(ids, np.random.default_rng(0).normal(size=(len(ids), 1280)).astype("float16"))
    return w.finalize(True).path


def step_limit(cap, rows: int, k: int, calls: int = 20) -> float:
    """Rows per second through the decoder's compiled step alone, at the batch beam search uses."""
    feats = np.repeat(cap_features[:rows // k], k, axis=0)
    state = cap.steps.start(feats)
    tokens = np.full(len(feats), cap.vocab.start_id, np.int32)
    cap.steps.step_topk(tokens, state, 2 * k)
    t = time.perf_counter()
    for _ in range(calls):
        cap.steps.step_topk(tokens, state, 2 * k)
    return calls * len(feats) / (time.perf_counter() - t)


def measure(run, feats, notebook_images):
    global cap_features
    cap_features = feats
    cap = Captioner.load(run)
    max_length = cap.decoder.max_length
    cap.caption_features(feats[:16], Greedy())  # warm up the compiled step functions
    cap.caption_features(feats[:16], BeamSearch(3))
    cap.caption_features(feats[:16], BeamSearch(5))
    t = time.perf_counter()
    for f in feats[:notebook_images]:
        notebook_beam(cap.model, f, cap.vocab, max_length)
    rates = {"notebook": notebook_images / (time.perf_counter() - t)}
    lengths = {}
    for name, strategy in (("greedy", Greedy()), ("beam3", BeamSearch(3)), ("beam5", BeamSearch(5))):
        t = time.perf_counter()
        caps = cap.caption_features(feats, strategy)
        rates[name] = len(caps) / (time.perf_counter() - t)
        lengths[name] = np.mean([len(c.tokens) for c in caps])
    limit = step_limit(cap, 3 * len(feats), 3)
    return cap, rates, lengths, limit


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", help="a trained run folder (repeatable); default: train two")
    p.add_argument("--images", type=int, default=1000, help="dev images captioned by (b)–(d)")
    p.add_argument("--notebook-images", type=int, default=5, help="images for the slow baseline (a)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs when no --run is given")
    p.add_argument("--sample", action="store_true", help="the toy variant: the built-in 29-word sample set")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if a.sample:
        data = make_sample(tmp / "sample", images=300)
        store = extract_features(data / "Images", backbone="efficientnet_b0", weights="none", out=tmp / "f.h5",
                                 show_progress=False).store.path
    else:
        data = SHARED
        real = SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"
        store = real if real.is_file() else stand_in_store(data, tmp / "stand_in.h5")
    runs = a.run or []
    if not runs:
        for decoder in ("merge", "init-inject"):
            # min_count 1: every word of the captions (~7,300), the largest output layer users can get
            fit(data, store, tmp / decoder, FitOptions(decoder=decoder, epochs=a.epochs, min_count=1), verbose=0)
            runs.append(tmp / decoder)
    st = FeatureStore.open(store)
    dev = [i for i in load_captions(data).images("dev") if i in st]
    feats = st[dev]
    feats = np.concatenate([feats] * (1 + a.images // len(feats)))[: a.images].astype(np.float32)
    print(f"\n{os.cpu_count()} CPUs, Keras {keras.__version__} ({keras.backend.backend()}), features {Path(store).name}, "
          f"{a.images} images")
    for run in runs:
        cap, r, lengths, limit = measure(run, feats, a.notebook_images)
        print(f"\n{cap.decoder.type} decoder: vocabulary {len(cap.vocab)}, max length {cap.decoder.max_length}, "
              f"units {cap.decoder.units} ({run})")
        print("| method | captions/s | mean words |\n|---|---|---|")
        print(f"| (a) notebook beam k=3, predict per beam per step ({a.notebook_images} images) | {r['notebook']:.2f} | |")
        print(f"| (b) greedy | {r['greedy']:.0f} | {lengths['greedy']:.1f} |")
        print(f"| (c) beam k=3 | {r['beam3']:.0f} | {lengths['beam3']:.1f} |")
        print(f"| (d) beam k=5 | {r['beam5']:.0f} | {lengths['beam5']:.1f} |")
        steps3 = 3 * (lengths["beam3"] + 1)  # row-steps a beam-3 caption needs at least
        print(f"decoder step alone: {limit:,.0f} rows/s at {3 * len(feats)} rows → at most "
              f"{limit / steps3:.0f} beam-3 captions/s; (c) reaches {r['beam3'] * steps3 / limit:.0%} of it")
        print(f"ratios: (c)/(b÷3) = {r['beam3'] / (r['greedy'] / 3):.2f}   (c)/(a) = {r['beam3'] / r['notebook']:.0f}   "
              f"(b)/(a) = {r['greedy'] / r['notebook']:.0f}")


if __name__ == "__main__":
    main()
