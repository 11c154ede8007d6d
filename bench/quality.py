"""Benchmark: caption quality on real Flickr8k features, per decoder, with the default settings (not a test).

    python bench/quality.py [--decoders merge,init-inject,pre-inject,inject] [--out work/quality]
                            [--beam 16] [--rerank 40] [--matching 1] [--ensemble init-inject,merge] [--ablations]
                            [--set epochs=30 --set units=512 ...]

Trains each decoder with ``captioning fit``'s defaults on the real MobileNetV2 feature store in
``../shared/flickr8k/features/`` (6,000 train images), then scores the **dev** split (1,000 images,
5 references each) with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr, greedy, beam search,
and beam search re-ranked as ``captioning evaluate --beam 16`` does by default (among the captions
of both the run's model and its model before self-critical tuning); with ``--ablations`` also
re-ranked by the neighbours' consensus alone (``--matching 0 --candidates model``) and by the
consensus plus the image–caption matcher among model.keras's captions alone (``--candidates model``).
The Flickr8k test split is withheld on these machines, so every number here is a dev score. A run
folder that already holds ``model.keras`` is evaluated again, not retrained (one from before
version 0.5 first gets its ``matcher.keras`` and ``cross_entropy.keras`` through ``fit --resume``). About 13 minutes per
decoder on 2 CPU cores, 2 of them decoding at beam 16 (inject, with two LSTMs, about 25);
``--ablations`` adds about 2 minutes per decoder.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.evaluation import evaluate  # noqa: E402
from captioning.inference import Captioner, decoding  # noqa: E402
from captioning.run import CROSS_ENTROPY_FILE, Run  # noqa: E402
from captioning.training import FitOptions, fit  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"
ANCHORS = [  # Flickr8k test split, 5 references: (name, BLEU-4, METEOR, CIDEr)
    ("Show, Attend and Tell, hard attention (Xu et al. 2015)", 0.213, 0.203, None),
    ("Show, Attend and Tell, soft attention (Xu et al. 2015)", 0.195, 0.189, None),
    ("merge / inject (Tanti et al. 2018)", "0.18–0.19", None, "0.47–0.48"),
    ("Karpathy & Fei-Fei 2015", 0.160, None, None),
    ("the well-known tutorial merge model", 0.13, None, None),
]
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", default="merge,init-inject,pre-inject,inject")
    p.add_argument("--captions", default=str(SHARED))
    p.add_argument("--features", default=str(SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--out", default="work/quality")
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--length-penalty", type=float, default=None, help="default: BeamSearch's")
    p.add_argument("--rerank", type=int, default=40, help="consensus re-ranking's neighbours (the CLI's default)")
    p.add_argument("--matching", type=float, default=1.0, help="the matcher's weight in re-ranking (the CLI's default)")
    p.add_argument("--ensemble", action="append", default=[], metavar="RUN,RUN",
                   help="also score these runs (folders under --out, or paths) captioning together, beam + re-ranking")
    p.add_argument("--ablations", action="store_true",
                   help="also score re-ranking by the consensus alone and among model.keras's captions alone")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a FitOptions field")
    a = p.parse_args()
    overrides = dict(kv.split("=", 1) for kv in a.set)
    overrides = {k: _value(v) for k, v in overrides.items()}
    recommended = decoding.get("recommended", beam=a.beam, rerank=a.rerank, matching=a.matching,
                               **({} if a.length_penalty is None else {"length_penalty": a.length_penalty}))
    rows = []
    for decoder in a.decoders.split(","):
        run = Path(a.out) / decoder
        options = dataclasses.replace(FitOptions(decoder=decoder), **overrides)
        seconds = None
        if not (run / "model.keras").is_file():
            start = time.perf_counter()
            print(fit(a.captions, a.features, run, options, verbose=2).summary(), flush=True)
            seconds = time.perf_counter() - start
        elif not (run / "matcher.keras").is_file() or "self_critical_kept_epoch" not in Run.load(run).results:
            fit(a.captions, a.features, run, options, resume=True, verbose=0)  # writes what 0.4 and 0.5 add
        captioner = Captioner.load(run)
        recipes = [(decoding.get("greedy"), "greedy"), (decoding.get(recommended, rerank=0), "beam")]
        if a.ablations:
            recipes.append((decoding.get(recommended, matching=0.0, candidates="model"), "consensus"))
            if a.matching and (run / CROSS_ENTROPY_FILE).is_file():
                recipes.append((decoding.get(recommended, candidates="model"), "rerank-model"))
        recipes.append((recommended, "rerank"))  # `captioning evaluate`'s default
        for recipe, name in recipes:
            result = evaluate(run, a.captions, a.features, split="dev", decoding=recipe, coco=True,
                              captioner=captioner, out=run / f"eval-dev-{name}")
            print(result.summary(), flush=True)
            rows.append((decoder, result.settings, result.metrics, seconds))
    for members in a.ensemble:
        runs = [Path(a.out) / m if (Path(a.out) / m).is_dir() else Path(m) for m in members.split(",")]
        captioner = Captioner.load(runs)
        result = evaluate(runs, a.captions, a.features, split="dev", decoding=recommended, coco=True,
                          captioner=captioner)
        print(result.summary(), flush=True)
        rows.append((f"ensemble of {' + '.join(r.name for r in runs)}", result.settings, result.metrics, None))
    print(f"\nFlickr8k **dev** split (1,000 images), features {Path(a.features).name}; "
          f"settings: FitOptions defaults{', ' + ', '.join(a.set) if a.set else ''}\n")
    print("| decoder | decoding | " + " | ".join(METRICS) + " | training s |")
    print("|---" * (len(METRICS) + 3) + "|")
    for decoder, settings, m, seconds in rows:
        how = "greedy" if settings["search"] == "greedy" else f"beam {settings['k']} (α {settings['alpha']})"
        if "rerank" in settings:
            how += f" + re-ranking ({settings['neighbours']} neighbours" + (
                f", matching {settings['matching']:g}" if "matching" in settings else "") + (
                f", likelihood {settings['likelihood']:g})" if "likelihood" in settings else ")")
            how += ", both models' captions" if settings.get("candidates") == "both" else ""
        cells = " | ".join("n/a" if m.get(k) is None else f"{m[k]:.3f}" for k in METRICS)
        print(f"| {decoder} | {how} | {cells} | {'' if seconds is None else f'{seconds:.0f}'} |")
    print("\nPublished anchors (Flickr8k **test** split): " + "; ".join(
        f"{name}: BLEU-4 {b4}" + (f", METEOR {me}" if me else "") + (f", CIDEr {ci}" if ci else "")
        for name, b4, me, ci in ANCHORS))
    (Path(a.out) / "quality.json").write_text(json.dumps(
        [{"decoder": d, "settings": s, "metrics": m, "training_seconds": t} for d, s, m, t in rows], indent=1))


if __name__ == "__main__":
    main()
