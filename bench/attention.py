"""Attention decoder vs merge on the sample set, plus where attention looks (not a test).

    python bench/attention.py [--images 300] [--backbone efficientnet_b0]

Makes the sample set, extracts pooled and --spatial features with the same random-init backbone,
fits merge and attention decoders, and prints test BLEU-4 (greedy, beam 3) for both, and the
"side rate": on single-shape test/train images whose caption names the shape, how often the
attention map for that word puts more mass on the shape's half of the grid (chance: 0.5).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.data import load_captions, make_sample  # noqa: E402
from captioning.evaluation import evaluate  # noqa: E402
from captioning.features import FeatureStore, extract_features  # noqa: E402
from captioning.inference import BeamSearch, Captioner, Greedy  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402


def side_rate(run, data, features, split):
    cap, store = Captioner.load(run), FeatureStore.open(features)
    scenes = json.loads((Path(data) / "scenes.json").read_text())
    images = [i for i in load_captions(data).images(split) if len(scenes[i]) == 1]
    h, w = cap.config["features"]["grid"]
    hits = n = 0
    for image, c in zip(images, cap.caption_features(store[images], Greedy())):
        obj = scenes[image][0]
        if obj["shape"] in c.words:
            a = c.attention[c.words.index(obj["shape"])].reshape(h, w)
            hits += (a[:, : w // 2].sum() > a[:, (w + 1) // 2:].sum()) == (obj["side"] == "left")
            n += 1
    return hits, n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--backbone", default="efficientnet_b0")
    p.add_argument("--epochs", type=int, default=25)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = make_sample(tmp / "sample", images=a.images)
    pooled = extract_features(data / "Images", backbone=a.backbone, weights="none", out=tmp / "pooled.h5",
                              show_progress=False).store.path
    grid = extract_features(data / "Images", backbone=a.backbone, weights="none", pooling="spatial",
                            dtype="float16", out=tmp / "grid.h5", show_progress=False).store.path
    sizes = dict(epochs=a.epochs, batch_size=16, units=128, embed_dim=64, dropout=0.3)
    rows = []
    for decoder, features in (("merge", pooled), ("attention", grid)):
        run = tmp / decoder
        r = fit(data, features, run, FitOptions(decoder=decoder, attention_dim=64, **sizes), verbose=0)
        g = evaluate(run, data, features, out=run / "eg").metrics["BLEU-4"]
        b = evaluate(run, data, features, strategy=BeamSearch(3), out=run / "eb")
        rows.append((decoder, r.best_val_loss, g, b.metrics["BLEU-4"], b.baseline["BLEU-4"]))
    print(f"\nsample set ({a.images} images), {a.backbone} random init, {a.epochs} epochs, units 128, embed 64")
    print(f"{'decoder':<11}{'val loss':>9}{'BLEU-4 greedy':>15}{'BLEU-4 beam3':>14}{'constant':>10}")
    for name, vl, g, b, c in rows:
        print(f"{name:<11}{vl:>9.3f}{g:>15.3f}{b:>14.3f}{c:>10.3f}")
    for split in ("test", "train"):
        hits, n = side_rate(tmp / "attention", data, grid, split)
        print(f"attention side rate ({split}, single-shape images naming their shape): {hits}/{n} = "
              f"{hits / max(n, 1):.2f} (chance 0.50)")


if __name__ == "__main__":
    main()
