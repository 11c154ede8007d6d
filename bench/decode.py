"""Benchmark: captions per second for decoding strategies (not a test).

    python bench/decode.py [--images 200] [--notebook-images 10]

One run trains a merge decoder on the built-in sample set (efficientnet_b0, random init, ~1 min),
then captions test-split features with:
  (a) the common notebook beam search: one model.predict per beam per step on the padded prefix, k=3;
  (b) captioning greedy (batched, stateful one-token steps);
  (c) captioning beam search k=3 (batched over images × beams, stateful).
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
from captioning.data import make_sample  # noqa: E402
from captioning.features import extract_features  # noqa: E402
from captioning.inference import BeamSearch, Captioner, Greedy  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402

keras = import_keras()


def notebook_beam(model, photo, vocab, max_length, k=3):
    """The tutorial version: a Python list of beams, model.predict per beam per step."""
    beams = [([vocab.start_id], 0.0)]
    for _ in range(max_length - 1):
        candidates = []
        for seq, score in beams:
            if seq[-1] == vocab.end_id:
                candidates.append((seq, score))
                continue
            prefix = keras.utils.pad_sequences([seq], maxlen=max_length - 1, padding="post")
            probs = model.predict([photo[None], prefix], verbose=0)[0]
            for w in np.argsort(probs)[-k:]:
                candidates.append((seq + [int(w)], score + float(np.log(probs[w] + 1e-12))))
        beams = sorted(candidates, key=lambda c: c[1])[-k:]
        if all(s[-1] == vocab.end_id for s, _ in beams):
            break
    return vocab.decode(beams[-1][0])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=200, help="captions to generate for (b) and (c)")
    p.add_argument("--notebook-images", type=int, default=10, help="captions for the slow baseline (a)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = make_sample(tmp / "sample", images=300)
    store = extract_features(data / "Images", backbone="efficientnet_b0", weights="none", out=tmp / "f.h5",
                             show_progress=False).store
    fit(data, store.path, tmp / "run", FitOptions(epochs=15, batch_size=16), verbose=0)
    cap = Captioner.load(tmp / "run")
    feats = store.rows(np.arange(len(store)))
    feats = np.concatenate([feats] * (1 + a.images // len(feats)))[: a.images]
    max_length = cap.decoder["max_length"]

    t = time.perf_counter()
    for f in feats[: a.notebook_images]:
        notebook_beam(cap.model, f, cap.vocab, max_length)
    rate_a = a.notebook_images / (time.perf_counter() - t)
    cap.caption_features(feats[:8], Greedy())  # warm up compiled step functions
    cap.caption_features(feats[:8], BeamSearch(3))
    rates = {}
    for name, strategy in (("greedy", Greedy()), ("beam", BeamSearch(3))):
        t = time.perf_counter()
        caps = cap.caption_features(feats, strategy)
        rates[name] = len(caps) / (time.perf_counter() - t)
    print(f"\nmerge decoder (vocab {len(cap.vocab)}, max length {max_length}), {os.cpu_count()} CPUs, "
          f"Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"{'method':<62}{'captions/s':>12}")
    for name, rate in [(f"(a) notebook beam search k=3, predict per beam per step ({a.notebook_images} images)", rate_a),
                       (f"(b) captioning greedy, batched + stateful ({a.images} images)", rates["greedy"]),
                       (f"(c) captioning beam k=3, batched + stateful ({a.images} images)", rates["beam"])]:
        print(f"{name:<62}{rate:>12.1f}")
    print(f"ratios: (c)/(a) = {rates['beam'] / rate_a:.0f}   (b)/(a) = {rates['greedy'] / rate_a:.0f}")


if __name__ == "__main__":
    main()
