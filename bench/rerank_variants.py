"""Experiment: other scores for re-ranking, measured on the candidates of trained runs (not a test).

    python bench/rerank_variants.py --run work/tied/init-inject --run work/tied-s1/init-inject \\
                                    --run work/tied-s2/init-inject

For each run, beam search (``--beam``, both models' captions, as ``captioning evaluate --beam 5``
does) proposes the dev images' candidates once; the parts of the shipped score (the neighbours'
consensus, the retrieved train captions' consensus, the matcher's cosine) are kept, and each
variant below adds or swaps one part and picks again. Prints dev BLEU-4 / CIDEr (pycocoevalcap)
per run and their mean; the first row reproduces ``captioning evaluate --beam 5 --coco
--likelihood 0`` (0.7's decoding), the row marked "(the default)" ``captioning evaluate --beam 5 --coco``.

- ``length λ``: + λ × the number of words (BLEU's brevity penalty is the one metric part that
  rewards longer captions);
- ``PMI μ``: + μ × (log p(caption | photo) − log p(caption | the average dev photo)) / words, from
  the run's cross-entropy model: how much the photo, rather than the language model, explains the
  caption (maximum mutual information decoding, Li et al. 2016);
- ``log p ν``: + ν × log p(caption | photo) under the cross-entropy model, unnormalised; under
  model.keras; or as beam search gave it (each candidate's from the model that proposed it, no
  extra work: ``--likelihood ν``, new in 0.8);
- ``posterior neighbours``: the 40 neighbours found by the PCA cosine plus ``w`` × the
  Bhattacharyya coefficient of the two photos' ImageNet posteriors (the backbone's own classifier,
  ``--classifier``, applied to the stored vectors as in ``bench/imagenet_posteriors.py``).
"""

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

import h5py
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning import decoders  # noqa: E402
from captioning.data.formats import load_captions  # noqa: E402
from captioning.data.text import tokenize  # noqa: E402
from captioning.features import FeatureStore  # noqa: E402
from captioning.inference import BeamSearch, Captioner  # noqa: E402
from captioning.inference.consensus import _normalised  # noqa: E402
from captioning.run import CROSS_ENTROPY_FILE, load_model  # noqa: E402
from captioning.training.sequences import pad  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def bleu4_cider(refs: list, hyps: list) -> tuple:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [" ".join(h) or "<empty>"] for i, h in enumerate(hyps)}
    with contextlib.redirect_stdout(io.StringIO()):
        return Bleu(4).compute_score(gts, res)[0][3], Cider().compute_score(gts, res)[0]


def candidates(captioner, strategy, features) -> tuple:
    """Per image, the token lists re-ranking chooses among (beam search's own choice first), and the
    log-probability each got from the model whose beam search proposed it."""
    v, out, beam_lp = captioner.vocab, [], []
    for i in range(0, len(features), 256):
        hyps = strategy(captioner.steps, features[i:i + 256], v.start_id, v.end_id, captioner.decoder.max_length)
        for own, lp, pool in zip(hyps.tokens, hyps.log_probs, hyps.alternatives):
            tokens = [list(t) for t, _, _ in pool]
            extra = [] if list(own) in tokens else [(list(own), lp)]
            out.append([t for t, _ in extra] + tokens)
            beam_lp.append(np.array([x for _, x in extra] + [x for _, x, _ in pool]))
    return out, beam_lp


def log_probs(path: Path, captioner, features, cands, neutral) -> tuple:
    """log p(caption | photo) and log p(caption | ``neutral`` photo) under the model saved at ``path``."""
    cfg = captioner.decoder
    model = decoders.build(cfg, sequences=True)
    model.set_weights(load_model(path).get_weights())
    v = captioner.vocab
    seqs = [[v.start_id, *t, v.end_id] for cs in cands for t in cs]
    rows = np.repeat(np.arange(len(cands)), [len(cs) for cs in cands])
    length, off = max(len(s) for s in seqs) - 1, cfg.decoder.output_offset
    inputs, targets = pad([s[:-1] for s in seqs], length), pad([s[1:] for s in seqs], length + off, off)

    def total(images):
        out = []
        for b in range(0, len(seqs), 512):
            p = np.asarray(model.predict_on_batch([images[b:b + 512], inputs[b:b + 512]]))
            t = targets[b:b + 512]
            out.append((np.log(np.maximum(np.take_along_axis(p, t[..., None], -1)[..., 0], 1e-12)) * (t != 0)).sum(1))
        return np.concatenate(out)

    own, base = total(features[rows]), total(np.repeat(neutral[None], len(rows), 0))
    cut = np.cumsum([len(cs) for cs in cands])[:-1]
    return np.split(own, cut), np.split(base, cut)


def posterior_affinity(classifier, dev, train) -> np.ndarray:
    with h5py.File(classifier, "r") as f:
        kernel, bias = f["predictions/predictions/kernel"][:], f["predictions/predictions/bias"][:]

    def root(x):
        logits = x @ kernel + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.sqrt(p / p.sum(axis=1, keepdims=True))
    return root(dev) @ root(train).T


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="a run folder trained by bench/quality.py")
    p.add_argument("--captions", default=str(SHARED / "flickr8k"))
    p.add_argument("--features", default=str(SHARED / "flickr8k" / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--classifier", default=str(SHARED / "weights" / "mobilenet_v2_1.0_224_tf2ptq_imagenet.h5"))
    p.add_argument("--beam", type=int, default=5)
    a = p.parse_args()
    data = load_captions(a.captions)
    refs_raw = data.references("dev")
    store = FeatureStore.open(a.features)
    images = [i for i in refs_raw if i in store]
    features = store[images].astype(np.float32)
    train = sorted({i for i in data.split("train")["image"] if i in store})
    posteriors = posterior_affinity(a.classifier, features, store[train].astype(np.float32))

    results = {}
    for run in map(Path, a.run):
        captioner = Captioner.load(run)
        default = captioner.reranked(BeamSearch(a.beam)).likelihood
        strategy = captioner.reranked(BeamSearch(a.beam), likelihood=0.0)  # 0.7's score: the base of every variant
        cands, beam_lp = candidates(captioner, strategy, features)
        parts = strategy.scores(features, cands)
        shipped = [s.total for s in parts]
        lengths = [np.array([len(t) + 1 for t in cs]) for cs in cands]
        own, base = log_probs(run / CROSS_ENTROPY_FILE, captioner, features, cands, features.mean(axis=0))
        tuned, _ = log_probs(run / "model.keras", captioner, features, cands, features.mean(axis=0))
        pmi = [(o - b) / n for o, b, n in zip(own, base, lengths)]
        con = strategy.consensus
        if len(con.features) != len(train):
            sys.exit(f"{run}/neighbours.h5 holds {len(con.features)} train images, the store {len(train)}")
        pca = _normalised(((features - con.mean) / con.std) @ con.projection) @ con.features.T
        words = [[captioner.vocab.decode(t) for t in cs] for cs in cands]
        refs = [[" ".join(tokenize(c, captioner.vocab.cleaning)) for c in refs_raw[i]] for i in images]

        def swapped(weight):
            near = np.argsort(-(pca + weight * posteriors), axis=1)[:, :strategy.neighbours]
            return [s.total - s.consensus + a[:, 0] for s, a in zip(parts, con.scores(words, near))]

        variants = {"0.7's score (consensus + ½ retrieved + matcher)": shipped}
        variants |= {f"length λ {x}": [t + x * n for t, n in zip(shipped, lengths)] for x in (0.005, 0.01, 0.02)}
        variants |= {f"PMI μ {x}": [t + x * m for t, m in zip(shipped, pmi)] for x in (0.05, 0.1, 0.2)}
        variants |= {f"log p ν {x}": [t + x * o for t, o in zip(shipped, own)] for x in (0.005, 0.01, 0.02, 0.03)}
        variants |= {f"model.keras's log p ν {x}": [t + x * o for t, o in zip(shipped, tuned)] for x in (0.01, 0.02)}
        variants |= {f"beam search's log p ν {x}{' (the default)' if x == default else ''}":
                     [t + x * o for t, o in zip(shipped, beam_lp)] for x in (0.01, 0.015, 0.02, 0.03, 0.04)}
        variants |= {f"log p ν {x} + length λ {y}": [t + x * o + y * n for t, o, n in zip(shipped, own, lengths)]
                     for x, y in ((0.01, 0.005), (0.02, 0.01), (0.03, 0.015))}
        variants |= {f"posterior neighbours w {x}": swapped(x) for x in (0.5, 1.0)}
        for name, totals in variants.items():
            chosen = [w[int(np.argmax(t))] for w, t in zip(words, totals)]
            results.setdefault(name, []).append(bleu4_cider(refs, chosen))
        print(f"{run}: {len(images)} dev images, {np.mean([len(c) for c in cands]):.1f} candidates each", flush=True)

    print(f"\n| variant | {' | '.join(a.run)} | mean |\n|---|{'---|' * len(a.run)}---|")
    for name, scores in results.items():
        cells = [f"{b:.3f} / {c:.3f}" for b, c in scores]
        mean = np.mean(scores, axis=0)
        print(f"| {name} | {' | '.join(cells)} | {mean[0]:.3f} / {mean[1]:.3f} |")


if __name__ == "__main__":
    main()
