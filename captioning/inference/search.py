"""Decoding strategies over a ``StepModel``, in the style of keras-hub samplers.

``Sampler`` owns the token loop (one model call per step for the whole batch); ``Greedy`` and
``RandomSampler`` override only ``next_token``. ``BeamSearch`` keeps k hypotheses per image in one
batch of images × k, scores finished captions with length normalisation, and, when no beam reaches
the end token within the maximum length, falls back to the best partial caption.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Caption:
    tokens: list  # word ids, without start; the end token included when reached
    words: list
    text: str
    log_prob: float  # sum of the log-probabilities of ``tokens``
    finished: bool  # reached the end token
    attention: np.ndarray | None = None  # (len(tokens), grid cells) for the attention decoder


@dataclasses.dataclass
class Hypotheses:
    """Raw search output before words are attached: one (tokens, log_prob, finished) per image."""

    tokens: list
    log_probs: list
    finished: list
    extras: list = dataclasses.field(default_factory=list)  # per image, from StepModel.extras


class Sampler:
    """The shared loop: feed the image, then one step per token until every caption ends."""

    def __call__(self, steps, features, start_id: int, end_id: int, max_length: int) -> Hypotheses:
        state = steps.start(features)
        n = len(features)
        tokens = np.full(n, start_id, np.int32)
        done = np.zeros(n, bool)
        logp = np.zeros(n)
        out = [[] for _ in range(n)]
        rng = self._rng()
        for _ in range(max_length - 1):  # the start token counts towards max_length
            log_probs, state = steps.step(tokens, state)
            nxt = self.next_token(log_probs, rng).astype(np.int32)
            logp += np.where(done, 0.0, log_probs[np.arange(n), nxt])
            for i in np.flatnonzero(~done):
                out[i].append(int(nxt[i]))
            done |= nxt == end_id
            if done.all():
                break
            tokens = nxt
        extra = steps.extras(state)
        extras = [extra[i, : len(out[i])] for i in range(n)] if extra is not None else []
        return Hypotheses(out, list(logp), list(done), extras)

    def _rng(self):
        return None

    def describe(self) -> dict:
        """The settings, as recorded in eval.json."""
        return {"strategy": type(self).__name__.lower()}

    def next_token(self, log_probs: np.ndarray, rng) -> np.ndarray:
        raise NotImplementedError


class Greedy(Sampler):
    """Argmax at every step."""

    def next_token(self, log_probs, rng):
        return np.argmax(log_probs, axis=-1)


class RandomSampler(Sampler):
    """Sample from the softmax at ``temperature``, optionally among the ``top_k`` likeliest words;
    the same ``seed`` gives the same captions."""

    def __init__(self, temperature: float = 1.0, top_k: int = 0, seed: int = 0):
        if temperature <= 0:
            raise ValueError("temperature must be > 0 (use Greedy for argmax)")
        self.temperature, self.top_k, self.seed = temperature, top_k, seed

    def _rng(self):
        return np.random.default_rng(self.seed)

    def describe(self):
        return {"strategy": "sample", "temperature": self.temperature, "top_k": self.top_k, "seed": self.seed}

    def next_token(self, log_probs, rng):
        logits = log_probs / self.temperature
        if self.top_k:
            kth = np.sort(logits, axis=-1)[:, -self.top_k][:, None]
            logits = np.where(logits < kth, -np.inf, logits)
        gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, logits.shape)))
        return np.argmax(logits + gumbel, axis=-1)  # Gumbel-max: an exact softmax sample


class BeamSearch(Sampler):
    """Beam search of width ``k``; finished captions are ranked by log p / length**``alpha``."""

    def __init__(self, k: int = 3, alpha: float = 0.7):
        if k < 1:
            raise ValueError("beam width must be ≥ 1")
        self.k, self.alpha = k, alpha

    def describe(self):
        return {"strategy": "beam", "k": self.k, "alpha": self.alpha}

    def score(self, log_prob: float, length: int) -> float:
        return log_prob / max(length, 1) ** self.alpha

    def __call__(self, steps, features, start_id, end_id, max_length) -> Hypotheses:
        n, k = len(features), self.k
        state = [np.repeat(s, k, axis=0) for s in steps.start(features)]
        beam_logp = np.full((n, k), -np.inf)
        beam_logp[:, 0] = 0.0  # all beams start identical: expand only one
        seqs = [[[] for _ in range(k)] for _ in range(n)]
        finished = [[] for _ in range(n)]  # (score, tokens, log_prob, extras)
        active = np.ones(n, bool)
        tokens = np.full(n * k, start_id, np.int32)
        for _ in range(max_length - 1):
            log_probs, state = steps.step(tokens, state)
            extra = steps.extras(state)
            vocab = log_probs.shape[-1]
            total = (beam_logp[:, :, None] + log_probs.reshape(n, k, vocab)).reshape(n, k * vocab)
            best = np.argsort(-total, axis=1, kind="stable")[:, : 2 * k]
            new_logp = np.full((n, k), -np.inf)
            parents = np.zeros((n, k), np.int64)
            new_tokens = np.zeros((n, k), np.int32)
            new_seqs = [[[] for _ in range(k)] for _ in range(n)]
            for b in np.flatnonzero(active):
                j = 0
                for c in best[b]:
                    lp = total[b, c]
                    if not np.isfinite(lp) or j == k:
                        break
                    parent, tok = divmod(int(c), vocab)
                    seq = seqs[b][parent] + [tok]
                    if tok == end_id:
                        ex = extra[b * k + parent] if extra is not None else None
                        finished[b].append((self.score(lp, len(seq)), seq, float(lp), ex))
                    else:
                        new_logp[b, j], parents[b, j], new_tokens[b, j], new_seqs[b][j] = lp, parent, tok, seq
                        j += 1
                if len(finished[b]) >= k or j == 0:
                    active[b] = False
            beam_logp, seqs = np.where(active[:, None], new_logp, -np.inf), new_seqs
            if not active.any():
                break
            rows = (np.arange(n)[:, None] * k + parents).reshape(-1)
            state = [s[rows] for s in state]
            tokens = new_tokens.reshape(-1)
        out = Hypotheses([], [], [])
        extra = steps.extras(state)  # rows already follow the surviving beams
        for b in range(n):
            if finished[b]:
                _, seq, lp, ex = max(finished[b], key=lambda f: f[0])
                out.tokens.append(seq), out.log_probs.append(lp), out.finished.append(True)
            else:  # no beam ended: the best partial caption, never an empty result
                j = int(np.argmax(new_logp[b]))
                seq, ex = new_seqs[b][j], (extra[b * k + j] if extra is not None else None)
                out.tokens.append(seq), out.log_probs.append(float(new_logp[b, j]))
                out.finished.append(False)
            if ex is not None:
                out.extras.append(ex[: len(out.tokens[-1])])
        return out


def to_captions(hyps: Hypotheses, vocab) -> list:
    caps = []
    extras = hyps.extras or [None] * len(hyps.tokens)
    for toks, lp, fin, ex in zip(hyps.tokens, hyps.log_probs, hyps.finished, extras):
        words = vocab.decode(toks)
        caps.append(Caption(list(toks), words, " ".join(words), float(lp), bool(fin), ex))
    return caps
