"""Benchmark: captions per second at the real Flickr8k vocabulary, for each decoding recipe (not a test).

    python bench/decode.py [--run RUN_DIR ...] [--images 1000] [--notebook-images 5] [--epochs 2]
    python bench/decode.py --sample          # the toy variant: the 29-word sample set

Without ``--run`` it trains an init-inject decoder (``fit``'s defaults, so with its self-critical
epoch and the re-ranking files) on the real Flickr8k captions in ``../shared/flickr8k`` for
``--epochs`` epochs, on the real feature store in ``../shared/flickr8k/features/`` when present,
else on stand-in random features; speed depends on the decoder's sizes and caption lengths, not on
how well it is trained. Then, for each run, on ``--images`` dev images (repeated when fewer), in one
process:
  (a) the common notebook beam search, k=3: one ``predict`` per beam per step on the padded prefix;
  (b) greedy; (c) beam 16 without re-ranking (``--no-rerank``), model.keras alone; (d) the beam 16
      search of cross_entropy.keras, the second model the recommended recipe searches, in the
      precision the recipe gives it (bfloat16 on CPUs with AVX512-BF16 under TensorFlow);
  (e) the recommended decoding (``captioning caption``'s default: (c) and (d), then re-ranking);
with peak memory after each, the share of (e) spent outside its searches, and the ratio (e)/(c) that issue #33's
target (≥ 0.5) is about.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from captioning.backend import import_keras  # noqa: E402
from captioning.data import load_captions, make_sample  # noqa: E402
from captioning.features import FeatureStore, extract_features  # noqa: E402
from captioning.features.writer import FeatureStoreWriter  # noqa: E402
from captioning.inference import Captioner, decoding  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402

keras = import_keras()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"
BATCH = 256  # images per search call


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


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed:
    """Wraps a search object and adds up the seconds spent in it."""

    def __init__(self, search):
        self.search, self.seconds = search, 0.0

    def __call__(self, *args):
        t = time.perf_counter()
        out = self.search(*args)
        self.seconds += time.perf_counter() - t
        return out

    def describe(self):
        return self.search.describe()


def scorers(cap, feats) -> tuple:
    """Seconds per photo of re-ranking's consensus scoring, vectorised (``Consensus.scores``) and the
    scalar CIDEr-D it replaced (0.8: one dictionary walk per caption pair), on the same candidates."""
    from captioning.metrics.cider import CiderD
    search = cap.search("recommended")
    hyps = search(cap.steps, feats, cap.vocab.start_id, cap.vocab.end_id, cap.decoder.max_length)
    words = [[cap.vocab.decode(t) for t, _, _ in pool] for pool in hyps.alternatives]
    con = search.consensus
    near, rows = con.neighbours(feats, search.neighbours), search._retrieved(search.matcher.image_vectors(feats))
    t = time.perf_counter()
    con.scores(words, near, rows)
    vectorised = (time.perf_counter() - t) / len(feats)
    references = [[con.captions[r] for r in range(a, b)] for a, b in zip(con.index.first_row[:-1],
                                                                          con.index.first_row[1:])]
    at = [(image, slot) for image, refs in enumerate(references) for slot in range(len(refs))]
    cider = CiderD(dict(enumerate(references)))  # built once at load in 0.8: not timed
    t = time.perf_counter()
    for ws, n, r in zip(words, near, rows):
        for w in ws:
            np.mean([cider.score(int(j), w) for j in n])
            np.mean([cider.similarities(at[i][0], w, [at[i][1]])[0] for i in r])
    return vectorised, (time.perf_counter() - t) / len(feats), np.mean([len(w) for w in words])


def measure(run, feats, notebook_images):
    cap = Captioner.load(run)
    recommended = cap.search("recommended")
    warm = feats[:32]
    for recipe in ("greedy", "beam", "recommended"):  # compile the step functions, load the re-ranking files
        cap.caption_features(warm, recipe)
    rows = []
    t = time.perf_counter()
    for f in feats[:notebook_images]:
        notebook_beam(cap.model, f, cap.vocab, cap.decoder.max_length)
    rows.append(("(a) notebook beam k=3, predict per beam per step", notebook_images / (time.perf_counter() - t),
                 None, peak_mib()))
    searches = [("(b) greedy (`--greedy`)", cap.search("greedy"), cap.steps),
                ("(c) beam 16, model.keras (`--no-rerank`)", cap.search("beam"), cap.steps)]
    proposers = getattr(recommended, "proposers", [])
    if proposers:
        searches.append((f"(d) beam 16, cross_entropy.keras in {recommended.proposer_precision}", cap.search("beam"),
                         proposers[0]))
    rates = {}
    for name, search, steps in searches:
        t = time.perf_counter()
        tokens = []
        for i in range(0, len(feats), BATCH):  # in the batches Captioner.caption_features uses
            tokens += search(steps, feats[i:i + BATCH], cap.vocab.start_id, cap.vocab.end_id,
                             cap.decoder.max_length).tokens
        rates[name[:3]] = len(feats) / (time.perf_counter() - t)
        rows.append((name, rates[name[:3]], np.mean([len(x) for x in tokens]), peak_mib()))
    inner = Timed(recommended.search)  # the beam searches inside the recommended recipe
    recommended.search = inner
    t = time.perf_counter()
    caps = cap.caption_features(feats, recommended, batch_size=BATCH)
    seconds = time.perf_counter() - t
    recommended.search = inner.search
    rates["(e)"] = len(feats) / seconds
    rows.append((f"(e) the recommended decoding ({decoding.RECOMMENDED.describe()})", rates["(e)"],
                 np.mean([len(c.tokens) for c in caps]), peak_mib()))
    return cap, rows, rates, 1 - inner.seconds / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", help="a trained run folder (repeatable); default: train one")
    p.add_argument("--images", type=int, default=1000, help="dev images captioned by (b)–(e)")
    p.add_argument("--notebook-images", type=int, default=5, help="images for the slow baseline (a)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs when no --run is given")
    p.add_argument("--sample", action="store_true", help="the toy variant: the built-in 29-word sample set")
    p.add_argument("--scalar-images", type=int, default=50,
                   help="photos whose candidates are also scored by the scalar CIDEr-D of 0.8 (0: skip)")
    p.add_argument("--captions", default=str(SHARED), help="the data set whose dev images are captioned")
    p.add_argument("--features", help="its feature store (default: the real Flickr8k store, else stand-in features)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if a.sample:
        data = make_sample(tmp / "sample", images=300)
        store = extract_features(data / "Images", backbone="efficientnet_b0", weights="none", out=tmp / "f.h5",
                                 show_progress=False).store.path
    else:
        data = Path(a.captions)
        real = Path(a.features) if a.features else SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"
        store = real if real.is_file() else stand_in_store(data, tmp / "stand_in.h5")
    runs = a.run or []
    if not runs:
        fit(data, store, tmp / "init-inject", FitOptions(epochs=a.epochs), verbose=0)
        runs.append(tmp / "init-inject")
    st = FeatureStore.open(store)
    dev = [i for i in load_captions(data).images("dev") if i in st]
    feats = st[dev]
    feats = np.concatenate([feats] * (1 + a.images // len(feats)))[: a.images].astype(np.float32)
    print(f"\n{os.cpu_count()} CPUs, Keras {keras.__version__} ({keras.backend.backend()}), features {Path(store).name}, "
          f"{a.images} images")
    for run in runs:
        cap, rows, rates, rerank_share = measure(run, feats, a.notebook_images)
        print(f"\n{cap.decoder.type} decoder: vocabulary {len(cap.vocab)}, max length {cap.decoder.max_length}, "
              f"units {cap.decoder.units} ({run})")
        print("| method | captions/s | mean tokens | peak RSS after (MiB) |\n|---|---|---|---|")
        for name, rate, length, peak in rows:
            print(f"| {name} | {rate:.1f} | {'' if length is None else f'{length:.1f}'} | {peak:,.0f} |")
        both = 1 / (1 / rates["(c)"] + 1 / rates.get("(d)", float("inf")))
        print(f"the recommended decoding: {rates['(e)'] / rates['(c)']:.2f}× the throughput of beam 16 without "
              f"re-ranking, {rates['(e)'] / both:.2f}× that of the beam searches it runs ((c) and (d) together: "
              f"{both:.1f} captions/s); {rerank_share:.0%} of its time is outside its beam searches (re-ranking "
              "that did not run beside the next batch's searches)")
        if a.scalar_images:
            fast, slow, per = scorers(cap, feats[:a.scalar_images])
            print(f"consensus scoring of {per:.1f} candidates per photo against 40 neighbours' and 100 retrieved "
                  f"captions ({a.scalar_images} photos): {fast * 1e3:.2f} ms per photo vectorised, {slow * 1e3:.1f} ms "
                  f"with the scalar CIDEr-D of 0.8 ({slow / fast:.0f}×)")


if __name__ == "__main__":
    main()
