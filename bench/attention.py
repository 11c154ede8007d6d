"""Attention decoder vs merge on the sample set, plus where attention looks (not a test).

    python bench/attention.py [--images 600] [--backbone resnet50]

Makes the sample set, extracts pooled and --spatial features with the same random-init backbone,
fits merge and attention decoders, and prints test BLEU-4 (greedy, beam 3) for both, and the
"side rate": for each generated shape word whose object is unambiguous, how often its attention
map puts more mass on that shape's half of the grid (chance: 0.5), for one- and two-shape scenes.
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
from captioning.evaluation.localisation import side_rate  # noqa: E402
from captioning.features import FeatureStore, extract_features  # noqa: E402
from captioning.inference import Captioner  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402


def side_rate_of(run, data, features, split):
    cap, store = Captioner.load(run), FeatureStore.open(features)
    images = load_captions(data).images(split)
    scenes = json.loads((Path(data) / "scenes.json").read_text())
    return side_rate(images, cap.caption_features(store[images], "greedy"), scenes, cap.feature_spec.grid)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--epochs", type=int, default=25)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = make_sample(tmp / "sample", images=a.images)
    pooled = extract_features(data / "Images", backbone=a.backbone, weights="none", out=tmp / "pooled.h5",
                              show_progress=False).store.path
    grid = extract_features(data / "Images", backbone=a.backbone, weights="none", pooling="spatial",
                            dtype="float16", out=tmp / "grid.h5", show_progress=False).store.path
    # one rate for both (1e-3, the recurrent decoders' default), so only the decoder differs
    sizes = dict(epochs=a.epochs, batch_size=16, units=128, embed_dim=64, dropout=0.3, learning_rate=1e-3)
    rows = []
    for decoder, features in (("merge", pooled), ("attention", grid)):
        run = tmp / decoder
        r = fit(data, features, run, FitOptions(decoder=decoder, attention_dim=64, **sizes), verbose=0)
        g = evaluate(run, data, features, decoding="greedy", out=run / "eg").metrics["BLEU-4"]
        b = evaluate(run, data, features, decoding={"beam": 3, "rerank": 0}, out=run / "eb")
        rows.append((decoder, r.best_val_loss, g, b.metrics["BLEU-4"], b.baseline["BLEU-4"]))
    print(f"\nsample set ({a.images} images), {a.backbone} random init, {a.epochs} epochs, units 128, embed 64")
    print(f"{'decoder':<11}{'val loss':>9}{'BLEU-4 greedy':>15}{'BLEU-4 beam3':>14}{'constant':>10}")
    for name, vl, g, b, c in rows:
        print(f"{name:<11}{vl:>9.3f}{g:>15.3f}{b:>14.3f}{c:>10.3f}")
    print("attention side rate: the shape word's map has more mass on that shape's half")
    for split in ("test", "train"):
        print(f"  {split:<5} {side_rate_of(tmp / 'attention', data, grid, split).describe()}")


if __name__ == "__main__":
    main()
