"""Experiment: how wide the second model's beam search must be (not a test).

    python bench/proposers.py --run work/ii --run work/ii-s1 --run work/ii-s2 [--widths 0,4,8,16]

The recommended decoding re-ranks the finished captions of two beam searches: the run's model.keras
and its model before self-critical tuning (cross_entropy.keras). Each search costs the same, so the
second one halves the throughput. For each run, on the dev images, this decodes with model.keras's
beam 16 and cross_entropy.keras's beam of each ``--widths`` (0: model.keras's captions alone,
``--candidates model``), re-ranks as ``captioning evaluate`` does, and prints dev BLEU-4 / CIDEr
(pycocoevalcap) and captions/s per run, with the mean over runs.
"""

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.data.formats import load_captions  # noqa: E402
from captioning.data.text import tokenize  # noqa: E402
from captioning.features import FeatureStore  # noqa: E402
from captioning.inference import BeamSearch, Captioner, decoding  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def bleu4_cider(refs: list, hyps: list) -> tuple:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h or "<empty>"] for i, h in enumerate(hyps)}
    with contextlib.redirect_stdout(io.StringIO()):
        return Bleu(4).compute_score(gts, res)[0][3], Cider().compute_score(gts, res)[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="a run folder trained by `captioning fit`")
    p.add_argument("--captions", default=str(SHARED / "flickr8k"))
    p.add_argument("--features", default=str(SHARED / "flickr8k" / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--widths", default="0,4,8,16", help="cross_entropy.keras's beam widths to try (0: none)")
    a = p.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    data = load_captions(a.captions)
    refs_raw = data.references("dev")
    store = FeatureStore.open(a.features)
    images = [i for i in refs_raw if i in store]
    features = store[images].astype(np.float32)
    recipe = decoding.RECOMMENDED
    results = {}
    for run in a.run:
        cap = Captioner.load(run)
        refs = [[" ".join(tokenize(c, cap.vocab.cleaning)) for c in refs_raw[i]] for i in images]
        full = cap.search(recipe)
        cap.caption_features(features[:32], full)  # compile and load before timing
        for width in widths:
            if width == 0:
                search = cap.search(dataclasses.replace(recipe, candidates="model"))
            else:
                search = dataclasses.replace(full, proposer_search=BeamSearch(width, recipe.length_penalty))
            t = time.perf_counter()
            caps = cap.caption_features(features, search)
            rate = len(features) / (time.perf_counter() - t)
            b4, cider = bleu4_cider(refs, [c.text for c in caps])
            results.setdefault(width, []).append((b4, cider, rate))
            print(f"{run}: cross_entropy.keras beam {width}: BLEU-4 {b4:.4f} CIDEr {cider:.4f}, {rate:.1f} captions/s",
                  flush=True)
    print(f"\n| cross_entropy.keras's beam | {' | '.join(a.run)} | mean BLEU-4 / CIDEr | captions/s |")
    print(f"|---|{'---|' * len(a.run)}---|---|")
    for width, rows in results.items():
        cells = [f"{b:.3f} / {c:.3f}" for b, c, _ in rows]
        mean = np.mean(rows, axis=0)
        name = "none (`--candidates model`)" if width == 0 else str(width)
        print(f"| {name} | {' | '.join(cells)} | {mean[0]:.4f} / {mean[1]:.4f} | {mean[2]:.1f} |")


if __name__ == "__main__":
    main()
