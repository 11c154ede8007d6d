"""``evaluate``: caption a split from stored features and score it against every reference."""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from captioning import atomic
from captioning.data import load_captions, tokenize
from captioning.errors import CaptioningError
from captioning.metrics.bleu import bleu_scores
from captioning.figures import caption_grid
from captioning.features import FeatureStore
from captioning.inference.captioner import Captioner, empty_captions_note, run_dirs
from captioning.inference.decoding import label


@dataclasses.dataclass
class EvalResult:
    metrics: dict
    baseline: dict  # the same metrics for one constant caption (the train split's most common)
    baseline_caption: str
    images: int
    settings: dict
    out_dir: Path
    seconds: float
    notes: list = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        fmt = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items() if v is not None)
        base = ", ".join(f"{k} {v:.3f}" for k, v in self.baseline.items())
        missing = [k for k, v in self.metrics.items() if v is None]
        extra = f" ({', '.join(missing)} not computed: needs Java)" if missing else ""
        return (f"Captioned {self.images} {self.settings['split']} images with {self.settings['decoding']} "
                f"in {self.seconds:.1f} s: {fmt}{extra}. A constant caption "
                f"(\"{self.baseline_caption}\") scores {base}. Wrote {self.out_dir / 'eval.json'} "
                f"(metrics, settings, every caption) and {self.out_dir / 'examples.png'}."
                + "".join(f"\n  note: {n}" for n in self.notes))


def evaluate(run_dir, captions, features, split: str = "test", decoding="recommended", format=None, out=None,
             coco: bool = False, limit: int | None = None, captioner: Captioner | None = None,
             images_dir=None, show_progress: bool = True) -> EvalResult:
    """Caption ``split``'s images from ``features`` and score them against all their references.
    ``run_dir`` is a run folder, or a list of them to caption with their ensemble; ``decoding`` a
    recipe's name, a dict, a ``Decoding`` or a search object (``captioning.inference.decoding``).

    Writes ``eval.json`` (metrics, settings, every caption) and ``examples.png`` (the first nine
    images with their captions; photos are read from ``images_dir`` or the data set's images folder)."""
    runs = run_dirs(run_dir)
    captioner = captioner or Captioner.load(runs)
    search = captioner.search(decoding)
    vocab = captioner.vocab
    if images_dir is not None and not Path(images_dir).is_dir():
        raise CaptioningError(f"--images {images_dir}: no such folder (it is only for examples.png; leave it out "
                              "to use the images folder beside the captions)")
    dataset = load_captions(captions, format=format, images_dir=images_dir)
    refs_raw = dataset.references(split)
    store = FeatureStore.open(features)
    captioner.feature_spec.require_compatible(store.spec, f"the features run {runs[0]} was trained on", str(features))
    asked = list(refs_raw)[:limit] if limit else list(refs_raw)
    images = [i for i in asked if i in store]
    if not images:
        raise CaptioningError(f"no {split} image of {dataset.source} has features in {store.path}")
    notes = list(captioner.notes)
    if len(images) < len(asked):
        missing = [i for i in asked if i not in store]
        notes.append(f"scored {len(images)} of the {len(asked)} {split} images: {len(missing)} have no features in "
                     f"{store.path} (e.g. {', '.join(missing[:3])}); scores cover only the rest.")
    features = store[images]
    bad = ~np.isfinite(features.reshape(len(images), -1)).all(axis=1)
    if bad.any():
        raise CaptioningError(f"{store.path}: non-finite feature values (NaN or inf) for {int(bad.sum())} {split} "
                              f"images, e.g. {', '.join(np.asarray(images)[bad][:3])}; their captions would be "
                              "meaningless. Re-extract them (extract-features --overwrite).")
    start = time.perf_counter()
    generated = captioner.caption_features(features, search, show_progress=show_progress)
    seconds = time.perf_counter() - start
    notes += [n for n in [empty_captions_note(generated, run_dir)] if n]
    refs = [[tokenize(c, vocab.cleaning) for c in refs_raw[i]] for i in images]
    hyps = [g.words for g in generated]
    metrics = bleu_scores(refs, hyps)
    if coco:
        from captioning.metrics.coco import coco_metrics
        metrics = coco_metrics({i: [" ".join(r) for r in rs] for i, rs in zip(images, refs)},
                               {i: " ".join(h) for i, h in zip(images, hyps)})
    train_caps = [" ".join(tokenize(c, vocab.cleaning)) for c in dataset.split("train")["caption"]]
    constant = collections.Counter(train_caps).most_common(1)[0][0] if train_caps else "a"
    baseline = bleu_scores(refs, [constant.split()] * len(images))

    out = Path(out) if out else runs[0] / f"eval-{split}{'-ensemble' if len(runs) > 1 else ''}"
    out.mkdir(parents=True, exist_ok=True)
    settings = {"split": split, "decoding": label(search), **search.describe(), "runs": [str(r) for r in runs], "features": str(store.path),
                "captions": str(dataset.source), "images": len(images)}
    record = {"metrics": metrics, "constant_caption_baseline": {"caption": constant, **baseline},
              "settings": settings,
              "captions": [{"image": i, "caption": g.text, "log_prob": g.log_prob, "finished": g.finished,
                            "references": refs_raw[i]} for i, g in zip(images, generated)]}
    grid = [(dataset.images_root / i, g.text, refs_raw[i]) for i, g in list(zip(images, generated))[:9]]
    absent = [p for p, _, _ in grid if not p.is_file()]
    if absent:  # features travel without their photos (a shared store, a Colab session without the images)
        notes.append(f"examples.png shows {len(absent)} of its {len(grid)} photos as 'image unavailable': "
                     f"{absent[0]} is not there; give --images with the folder that holds the photos")
    record["notes"] = notes
    atomic.write_text(out / "eval.json", json.dumps(record, indent=1, ensure_ascii=False))
    caption_grid(grid, out / "examples.png",
                 title=f"{split} split — {settings['decoding']} — BLEU-4 {metrics['BLEU-4']:.3f}")
    return EvalResult(metrics, baseline, constant, len(images), settings, out, seconds, notes)
