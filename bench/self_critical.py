"""Benchmark: variants of the self-critical epochs on real Flickr8k features, dev scores (not a test).

    python bench/self_critical.py --run work/quality/init-inject --name default
    python bench/self_critical.py --run work/quality/init-inject --name neighbours --neighbours 10 --weight 0.5 --epochs 2
    python bench/self_critical.py --run work/quality/init-inject --name samples10 --samples 10
    python bench/self_critical.py --run work/quality/init-inject --name matcher --matcher-weight 1
    python bench/self_critical.py --run work/quality/init-inject --name bleu --bleu-weight 1

Starts from the cross-entropy model of a run trained by ``bench/quality.py`` (its
``checkpoints/best.keras``), runs ``captioning.training.self_critical.SelfCritical`` with the
settings given, and after each epoch scores the dev split with pycocoevalcap: greedy, beam 3, beam 3
re-ranking the model's own captions (consensus, plus the matcher where the run has one), and beam 5
re-ranking both its and the cross-entropy model's captions (``captioning evaluate --beam 5``'s
default). With no option the default epoch is
repeated, which reproduces the run's own scores. ``--neighbours K --weight λ`` adds to each
sample's reward λ × its mean CIDEr-D against the captions of the K nearest *other* train images
(the run's ``neighbours.h5``): the consensus that re-ranking uses at caption time, taught during
training instead. ``--matcher-weight λ`` adds λ × the run's matcher cosine between photo and sample
(a discriminability reward). ``--bleu-weight λ`` adds λ × the sample's smoothed sentence BLEU-4
against its references (a mixed reward, for the BLEU side of the targets). One epoch takes about 2 minutes on 2 CPU cores.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning import decoders  # noqa: E402
from captioning.evaluation import evaluate  # noqa: E402
from captioning.inference import Captioner  # noqa: E402
from captioning.inference.consensus import Consensus  # noqa: E402
from captioning.run import Run, load_model, save_model  # noqa: E402
from captioning.training import FitOptions  # noqa: E402
from captioning.training.fitting import plan  # noqa: E402
from captioning.training.self_critical import SelfCritical  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"


class WithNeighbours:
    """A reward: the image's own CIDEr-D plus ``weight`` × the mean CIDEr-D against its neighbours' captions."""

    def __init__(self, own, consensus: Consensus, images: list, vocab, k: int, weight: float):
        sim = consensus.features @ consensus.features.T
        np.fill_diagonal(sim, -np.inf)  # an image is not its own neighbour
        self.near = np.argsort(-sim, axis=1)[:, :k]
        self.row = {image: i for i, image in enumerate(images)}  # neighbours.h5 holds the sorted train images
        self.own, self.consensus, self.vocab, self.weight = own, consensus, vocab, weight

    def scores(self, images, hypotheses) -> np.ndarray:
        agree = self.consensus.scores([[self.vocab.decode(list(h))] for h in hypotheses],
                                      [self.near[self.row[i]] for i in images])
        return self.own.scores(images, hypotheses) + self.weight * np.array([a[0, 0] for a in agree])


class WithMatcher:
    """A reward: the image's own CIDEr-D plus ``weight`` × the run's matcher cosine between photo and
    sample (a discriminability term, in the spirit of Luo et al. 2018)."""

    def __init__(self, own, matcher, store, weight: float):
        self.own, self.matcher, self.store, self.weight = own, matcher, store, weight

    def scores(self, images, hypotheses) -> np.ndarray:
        features = self.store[list(images)].astype(np.float32)
        cosine = np.concatenate(self.matcher.scores(features, [[list(h)] for h in hypotheses]))
        return self.own.scores(images, hypotheses) + self.weight * cosine


class WithBleu:
    """A reward: the image's own CIDEr-D plus ``weight`` × the sample's sentence BLEU-4 against the
    image's references (smoothed, Lin & Och 2004), for a policy that also pleases BLEU."""

    def __init__(self, own, train, weight: float):
        from nltk.translate.bleu_score import SmoothingFunction
        self.own, self.weight, self.smooth = own, weight, SmoothingFunction().method2
        self.refs = {}
        for image, ids in zip(train.images, train.ids):  # token ids without the start and end markers
            self.refs.setdefault(image, []).append([int(t) for t in ids[1:-1]])

    def scores(self, images, hypotheses) -> np.ndarray:
        from nltk.translate.bleu_score import sentence_bleu
        bleu = [sentence_bleu(self.refs[i], list(h), smoothing_function=self.smooth) if len(h) else 0.0
                for i, h in zip(images, hypotheses)]
        return self.own.scores(images, hypotheses) + self.weight * np.array(bleu)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder trained by bench/quality.py")
    p.add_argument("--name", required=True, help="the variant's folders go to work/self-critical/NAME-eN")
    p.add_argument("--captions", default=str(SHARED))
    p.add_argument("--features", default=str(SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=FitOptions.self_critical_learning_rate)
    p.add_argument("--samples", type=int, default=SelfCritical.samples)
    p.add_argument("--images-per-batch", type=int, default=SelfCritical.images_per_batch)
    p.add_argument("--neighbours", type=int, default=0)
    p.add_argument("--weight", type=float, default=0.5)
    p.add_argument("--bleu-weight", type=float, default=0.0, help="add λ × the sample's sentence BLEU-4 to each reward")
    p.add_argument("--matcher-weight", type=float, default=0.0, help="add λ × the matcher's cosine to each reward")
    a = p.parse_args()
    run = Path(a.run)
    trained = Run.load(run).training
    options = FitOptions(**{k: v for k, v in trained.items() if k in FitOptions.__dataclass_fields__})
    fit_plan = plan(a.captions, a.features, Path("work/self-critical/.unused") / a.name, options)
    sc = SelfCritical(fit_plan.run.decoder, fit_plan.run.vocab, fit_plan.store, fit_plan.train, a.learning_rate,
                      a.samples, a.images_per_batch, seed=options.seed)
    sc.load_weights(load_model(run / "checkpoints" / "best.keras").get_weights())
    if a.neighbours:
        sc.cider = WithNeighbours(sc.cider, Consensus.load(run / "neighbours.h5"), sc.images, fit_plan.run.vocab,
                                  a.neighbours, a.weight)
    if a.bleu_weight:
        sc.cider = WithBleu(sc.cider, fit_plan.train, a.bleu_weight)
    if a.matcher_weight:
        from captioning.inference.matching import Matcher
        matcher = Matcher.load(run / "matcher.keras", fit_plan.run.vocab, fit_plan.store.feature_shape[-1])
        sc.cider = WithMatcher(sc.cider, matcher, fit_plan.store, a.matcher_weight)
    print("| variant | epoch | mean reward | greedy | beam 3 | beam 3 + re-ranking | beam 5 + re-ranking, both models "
          "| beam 16 + re-ranking (the default) | seconds |\n|---|---|---|---|---|---|---|---|---|")
    for epoch in range(a.epochs):
        start = time.perf_counter()
        reward = sc.epoch(epoch)["reward"]
        out = Path("work/self-critical") / f"{a.name}-e{epoch + 1}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints", "eval-*"))
        next_word = decoders.build(fit_plan.run.decoder, sequences=False)
        next_word.set_weights(sc.policy.get_weights())
        save_model(next_word, out / "model.keras")
        captioner = Captioner.load(out)
        cells = []
        for recipe in ("greedy", {"beam": 3, "rerank": 0}, {"beam": 3, "candidates": "model"}, {"beam": 5},
                       "recommended"):  # the last: `captioning evaluate`'s default
            m = evaluate(out, a.captions, a.features, split="dev", decoding=recipe, coco=True, captioner=captioner,
                         out=out / f"eval-{len(cells)}").metrics
            cells.append(f"{m['BLEU-4']:.3f} / {m['CIDEr']:.3f}")
        print(f"| {a.name} | {epoch + 1} | {reward:.3f} | {' | '.join(cells)} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
