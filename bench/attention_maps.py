"""Do a trained run's attention maps point at the evidence its decoder uses? (not a test)

    python bench/attention_maps.py --run RUN --captions data/flickr8k --features grid.h5 [--split dev] [--k 5] [--block N]

Captions each image of the split greedily with its maps, then, for every object word and function
word of those captions, hides the word's k most-attended grid cells (then k random cells, then the k
least-attended), re-scores the same caption and prints how much the word's log-probability dropped
(``captioning.evaluation.deletion``), overall and for the most frequent object words.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from captioning.atomic import write_text  # noqa: E402
from captioning.data import load_captions  # noqa: E402
from captioning.evaluation.deletion import OBJECT_WORDS, deletion_drops  # noqa: E402
from captioning.features import FeatureStore  # noqa: E402
from captioning.inference import Captioner  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--split", default="dev")
    p.add_argument("--k", type=int, default=5, help="cells hidden per word (default: 5)")
    p.add_argument("--words", type=int, default=8, help="object words listed one by one (default: 8)")
    p.add_argument("--block", type=int, help="a grid transformer's decoder block to read maps from (default: the last)")
    p.add_argument("--out", help="write the numbers as JSON here")
    a = p.parse_args()
    t0 = time.perf_counter()
    cap, store = Captioner.load(a.run), FeatureStore.open(a.features)
    if a.block:
        cap.draw_maps_from_block(a.block)
    images = [i for i in load_captions(a.captions).images(a.split) if i in store]
    grids = store[images].astype(np.float32)
    captions = cap.caption_features(grids, "greedy")
    drops = deletion_drops(cap.steps, grids, captions, cap.vocab.start_id, k=a.k)
    print(f"{a.run}{f' block {a.block}' if a.block else ''}: {len(images)} {a.split} images, greedy captions, {time.perf_counter() - t0:.0f} s")
    print(drops.describe())
    # which object word each occurrence was, in the order deletion_drops met them
    said = [w for c in captions for w in c.words if w in OBJECT_WORDS]
    counts = {w: said.count(w) for w in set(said)}
    print(f"  by object word (top / random / bottom, nats):")
    per_word = {}
    for w in sorted(counts, key=lambda w: -counts[w])[:a.words]:
        at = np.array([x == w for x in said])
        per_word[w] = {m: float(drops.drops["object"][m][at].mean()) for m in ("top", "random", "bottom")}
        print(f"    {w:<8} ({counts[w]:>4}) {per_word[w]['top']:.3f} / {per_word[w]['random']:.3f} / "
              f"{per_word[w]['bottom']:.3f}")
    if a.out:
        summary = {"run": a.run, "block": a.block, "split": a.split, "images": len(images), "k": a.k, "per_object_word": per_word,
                   **{c: {"count": drops.count(c), "top_beats_random": drops.top_beats_random(c),
                          "top_mass": float(np.mean(drops.top_mass[c])),
                          **{m: drops.mean(c, m) for m in ("top", "random", "bottom")}} for c in drops.drops}}
        write_text(a.out, json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
