"""``evaluate``: caption a split from stored features and score it against every reference."""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path

from captioning.data import load_captions, tokenize
from captioning.errors import CaptioningError
from captioning.evaluation.bleu import bleu_scores
from captioning.evaluation.figures import caption_grid
from captioning.features import FeatureStore
from captioning.inference.captioner import Captioner
from captioning.inference.search import Greedy


@dataclasses.dataclass
class EvalResult:
    metrics: dict
    baseline: dict  # the same metrics for one constant caption (the train split's most common)
    baseline_caption: str
    images: int
    settings: dict
    out_dir: Path
    seconds: float

    def summary(self) -> str:
        fmt = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items() if v is not None)
        base = ", ".join(f"{k} {v:.3f}" for k, v in self.baseline.items())
        missing = [k for k, v in self.metrics.items() if v is None]
        extra = f" ({', '.join(missing)} not computed: needs Java)" if missing else ""
        return (f"Captioned {self.images} {self.settings['split']} images with {self.settings['strategy']} "
                f"decoding in {self.seconds:.1f} s: {fmt}{extra}. A constant caption "
                f"(\"{self.baseline_caption}\") scores {base}. Wrote {self.out_dir / 'eval.json'} "
                f"(metrics, settings, every caption) and {self.out_dir / 'examples.png'}.")


def evaluate(run_dir, captions, features, split: str = "test", strategy=None, format=None, out=None,
             coco: bool = False, limit: int | None = None, captioner: Captioner | None = None) -> EvalResult:
    strategy = strategy or Greedy()
    captioner = captioner or Captioner.load(run_dir)
    vocab = captioner.vocab
    dataset = load_captions(captions, format=format)
    refs_raw = dataset.references(split)
    store = FeatureStore.open(features)
    if store.attrs.get("backbone") != captioner.config["features"]["backbone"]:
        raise CaptioningError(f"{features} holds {store.attrs.get('backbone')} features but the run was trained "
                              f"on {captioner.config['features']['backbone']} features.")
    images = [i for i in refs_raw if i in store]
    if limit:
        images = images[:limit]
    if not images:
        raise CaptioningError(f"no {split} image of {dataset.source} has features in {store.path}")
    start = time.perf_counter()
    generated = captioner.caption_features(store[images], strategy)
    seconds = time.perf_counter() - start
    refs = [[tokenize(c, vocab.cleaning) for c in refs_raw[i]] for i in images]
    hyps = [g.words for g in generated]
    metrics = bleu_scores(refs, hyps)
    if coco:
        from captioning.evaluation.coco import coco_metrics
        metrics = coco_metrics({i: [" ".join(r) for r in rs] for i, rs in zip(images, refs)},
                               {i: " ".join(h) for i, h in zip(images, hyps)})
    train_caps = [" ".join(tokenize(c, vocab.cleaning)) for c in dataset.split("train")["caption"]]
    constant = collections.Counter(train_caps).most_common(1)[0][0] if train_caps else "a"
    baseline = bleu_scores(refs, [constant.split()] * len(images))

    out = Path(out) if out else Path(run_dir) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    settings = {"split": split, **strategy.describe(), "features": str(store.path),
                "captions": str(dataset.source), "images": len(images)}
    record = {"metrics": metrics, "constant_caption_baseline": {"caption": constant, **baseline},
              "settings": settings,
              "captions": [{"image": i, "caption": g.text, "log_prob": g.log_prob, "finished": g.finished,
                            "references": refs_raw[i]} for i, g in zip(images, generated)]}
    (out / "eval.json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    grid = [(dataset.images_root / i, g.text, refs_raw[i]) for i, g in list(zip(images, generated))[:9]]
    caption_grid(grid, out / "examples.png",
                 title=f"{split} split — {settings['strategy']} — BLEU-4 {metrics['BLEU-4']:.3f}")
    return EvalResult(metrics, baseline, constant, len(images), settings, out, seconds)
