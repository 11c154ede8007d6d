"""Self-critical sequence training (Rennie et al. 2017): fine-tune on CIDEr-D itself.

Cross-entropy teaches the next word of a reference; the captions are then judged as wholes by
CIDEr. After the cross-entropy epochs, each train image gets ``samples`` captions drawn from the
model; each is rewarded by its CIDEr-D against that image's references (document frequencies
from all train references), minus the mean reward of the image's other samples (the baseline of
Luo 2020, which needs no greedy pass). The gradient of Σ advantage · log p(sampled words) is an
ordinary weighted cross-entropy on the sampled words, so the update is Keras' own
``train_on_batch`` with the advantages as sample weights — any backend, any decoder that has a
step model. Dropout is off here: the gradient is that of the very policy that sampled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from captioning import atomic, decoders, interrupt
from captioning.backend import import_keras
from captioning.console import count, progress
from captioning.decoders.steps import WithoutTokens
from captioning.metrics.cider import CiderD, ReferenceIndex
from captioning.inference.search import Greedy, RandomSampler
from captioning.training.checkpoints import json_rows, read_state, recorded_rows, write_csv
from captioning.training.sequences import pad

keras = import_keras()
DEV_BLOCK = 1024  # dev images decoded at a time


@dataclasses.dataclass
class SelfCritical:
    """One fine-tuning session over a trained teacher-forced model's weights."""

    cfg: object  # DecoderConfig
    vocab: object
    store: object
    train: object  # EncodedCaptions
    learning_rate: float = 5e-5
    samples: int = 5
    images_per_batch: int = 32
    seed: int = 0
    batches: int | None = None  # per epoch, the first of its order (fit --steps-per-epoch); None: all

    def __post_init__(self):
        cfg = dataclasses.replace(self.cfg, dropout=0.0)
        self.policy = decoders.build(cfg, sequences=True)
        self.next_word = decoders.build(cfg, sequences=False)
        v = self.vocab
        self.steps = WithoutTokens(decoders.step_model(self.next_word, cfg), [v.pad_id, v.unk_id, v.start_id])
        self.policy.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                            loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum"))
        refs = {}
        for image, ids in zip(self.train.images, self.train.ids):
            refs.setdefault(image, []).append(tuple(int(i) for i in ids[1:-1]))
        self.images = sorted(refs)
        self.rows = np.array([self.store.index[i] for i in self.images], np.int64)
        # the rewards' CIDEr-D as sparse products over every train caption (ReferenceIndex): at COCO
        # size a few numpy arrays instead of 4 GB of per-caption n-gram dictionaries
        self.references = ReferenceIndex([refs[i] for i in self.images])
        self.offset = self.cfg.decoder.output_offset

    def load_weights(self, weights):
        self.policy.set_weights(weights)

    def dev_cider(self, references: dict) -> float:
        """CIDEr-D of greedy captions of ``references``' images (image → cleaned word lists), the
        document frequencies from those references, as pycocoevalcap computes it."""
        images = sorted(references)
        self.next_word.set_weights(self.policy.get_weights())
        v = self.vocab
        tokens = []
        for i in range(0, len(images), DEV_BLOCK):  # a COCO dev split's grids would take 1.3 GB at once
            features = self.store[images[i:i + DEV_BLOCK]].astype(np.float32)
            tokens += Greedy()(self.steps, features, v.start_id, v.end_id, self.cfg.max_length).tokens
        return float(CiderD(references).scores(images, [v.decode(t) for t in tokens]).mean())

    def epoch(self, epoch: int, progress=None) -> dict:
        """One pass over the train images; returns the mean reward of the samples."""
        rng = np.random.default_rng([self.seed, 7919, epoch])
        order = rng.permutation(len(self.images))
        rewards = []
        for b, start in enumerate(range(0, len(order), self.images_per_batch)[:self.batches]):
            chosen = order[start:start + self.images_per_batch]
            rewards.append(self.update(chosen, seed=[self.seed, epoch, b]))
            interrupt.check()
            if progress:
                progress(b + 1, float(np.mean(rewards)))
        return {"reward": float(np.mean(rewards))}

    def rewards(self, chosen, words: list) -> np.ndarray:
        """(len(chosen), samples): each sampled caption's CIDEr-D against its image's references
        (``chosen``: rows of ``images``; ``words``: the samples, image by image)."""
        n, first = self.samples, self.references.first_row
        rows = [np.arange(first[i], first[i + 1]) for i in chosen]
        weights = [np.full((len(r), 1), 1.0 / len(r)) for r in rows]
        groups = [words[k * n:(k + 1) * n] for k in range(len(chosen))]
        return np.stack([s[:, 0] for s in self.references.scores(groups, rows, weights)])

    def update(self, chosen, seed) -> float:
        n = self.samples
        self.next_word.set_weights(self.policy.get_weights())
        features = np.repeat(self.store.rows(self.rows[chosen]).astype(np.float32), n, axis=0)
        v, max_length = self.vocab, self.cfg.max_length
        sampler = RandomSampler(seed=int(np.random.default_rng(seed).integers(2**31)))
        hyps = sampler(self.steps, features, v.start_id, v.end_id, max_length)
        words = [list(t[:-1] if f else t) for t, f in zip(hyps.tokens, hyps.finished)]
        reward = self.rewards(chosen, words)
        baseline = (reward.sum(axis=1, keepdims=True) - reward) / (n - 1)
        advantage = (reward - baseline).reshape(-1)
        seqs = [np.array([v.start_id, *t], np.int32) for t in hyps.tokens]
        length = max_length - 1
        inputs = pad([s[:-1] for s in seqs], length)
        targets = pad([s[1:] for s in seqs], length + self.offset, self.offset)
        weights = (targets != 0) * (advantage[:, None] / len(seqs))
        self.policy.train_on_batch([features, inputs], targets, sample_weight=weights.astype(np.float32))
        return float(reward.mean())


def fine_tune(p, verbose="auto") -> list:
    """The self-critical epochs of a ``fit`` plan after its cross-entropy epochs, crash-safe like them:
    after epoch k ``checkpoints/self_critical_k.keras`` (weights and optimizer), the
    ``self_critical.csv`` row, then ``state.json`` naming it, then the files of epochs that are
    neither the last (resume starts there) nor the best on dev (``kept_checkpoint``) are removed; a
    kill at any instant resumes from the last epoch the state names, as if never interrupted.
    Returns the rows (epoch, mean train reward, dev CIDEr-D of greedy captions)."""
    from captioning.run import load_model, save_model
    o, ckpt = p.options, p.checkpoints
    state = read_state(ckpt)
    done = int(state.get("self_critical_done", 0))
    rows = tuning_rows(state, p.out)
    if done >= o.self_critical_epochs:
        return rows
    sc = SelfCritical(p.run.decoder, p.run.vocab, p.store, p.train, o.self_critical_learning_rate, seed=o.seed,
                      batches=o.steps_per_epoch)
    if done:
        sc.policy = load_model(checkpoint(ckpt, done), compile=True)
    else:
        for stale in ckpt.glob("self_critical_*.keras"):  # of self-critical epochs before more cross-entropy ones
            stale.unlink()
        sc.load_weights(load_model(ckpt / "best.keras").get_weights())
        rows = [{"epoch": 0, "reward": float("nan"), "dev_cider": sc.dev_cider(p.dev_references), "seconds": 0.0}]
    say = verbose != 0
    if say:
        print(f"Self-critical fine-tuning on CIDEr-D: {count(o.self_critical_epochs - done, 'epoch')} from dev CIDEr-D "
              f"{rows[0]['dev_cider']:.3f} (greedy).", flush=True)
    batches = min(-(-len(sc.images) // sc.images_per_batch), o.steps_per_epoch or len(sc.images))
    for epoch in range(done, o.self_critical_epochs):
        start = time.perf_counter()
        bar = progress(total=batches, desc=f"self-critical {epoch + 1}/{o.self_critical_epochs}", unit="batch",
                       disable=None if verbose == 1 else True)
        reward = sc.epoch(epoch, progress=lambda b, r: (bar.update(1), bar.set_postfix(reward=f"{r:.3f}")))["reward"]
        bar.close()
        rows.append({"epoch": epoch + 1, "reward": reward, "dev_cider": sc.dev_cider(p.dev_references),
                     "seconds": time.perf_counter() - start})
        save_model(sc.policy, checkpoint(ckpt, epoch + 1))
        write_csv(p.out / "self_critical.csv", rows)
        state = {**read_state(ckpt), "self_critical_done": epoch + 1, "self_critical": json_rows(rows)}
        atomic.write_text(ckpt / "state.json", json.dumps(state))
        for older in range(1, epoch + 1):
            if older != best_epoch(rows):
                checkpoint(ckpt, older).unlink(missing_ok=True)
        if say:
            r = rows[-1]
            print(f"self-critical epoch {epoch + 1}/{o.self_critical_epochs}: mean train reward {r['reward']:.3f}, "
                  f"dev CIDEr-D {r['dev_cider']:.3f} (greedy), {r['seconds']:.0f} s", flush=True)
    return rows


def tuning_rows(state: dict, out) -> list:
    """The complete self-critical epochs' rows (row 0: dev CIDEr-D before the first), as recorded."""
    done = int(state.get("self_critical_done", 0))
    return recorded_rows(state, "self_critical", Path(out) / "self_critical.csv", range(done + 1) if done else range(0))


def checkpoint(folder, epochs_done: int):
    """The self-critical checkpoint after ``epochs_done`` epochs (the state says which one counts)."""
    return folder / f"self_critical_{epochs_done}.keras"


def best_epoch(rows: list) -> int:
    """The epoch (0: the cross-entropy model before any self-critical epoch) with the highest dev
    CIDEr-D; a later epoch wins a tie, and with no finite score at all the last one counts."""
    scores = [r["dev_cider"] if math.isfinite(r["dev_cider"]) else -math.inf for r in rows]
    if not rows or max(scores) == -math.inf:
        return rows[-1]["epoch"] if rows else 0
    return rows[max(range(len(rows)), key=lambda i: (scores[i], i))]["epoch"]


def kept_checkpoint(folder, rows: list):
    """The self-critical checkpoint ``fit`` exports: that of the best epoch on dev among the complete
    ones (``rows``: ``tuning_rows``), or None when the cross-entropy model before them was
    better — as early stopping keeps the best cross-entropy epoch, a self-critical epoch that
    lowers dev CIDEr-D (it can, on a small train set) is not kept."""
    done = int(read_state(folder).get("self_critical_done", 0)) if (folder / "state.json").is_file() else 0
    best = best_epoch([r for r in rows if r["epoch"] <= done]) if done else 0
    if best and not checkpoint(folder, best).is_file():  # a run from before 0.5 kept only the last epoch's
        best = done
    return checkpoint(folder, best) if best else None
