"""Searches over a ``StepModel`` (greedy, beam, sampling), in the style of keras-hub samplers; the
recipes that choose among them by name are ``decoding``'s.

``Sampler`` owns the token loop (one model call per step for the live rows of the batch);
``Greedy`` and ``RandomSampler`` override only how the next token is chosen. ``BeamSearch`` keeps
k hypotheses per image in one batch of images × k, scores finished captions with length
normalisation, and, when no beam reaches the end token within the maximum length, falls back to
the best partial caption.
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
    alternatives: list = dataclasses.field(default_factory=list)  # beam: every finished (text, log p, score)


@dataclasses.dataclass
class Hypotheses:
    """Raw search output before words are attached: one (tokens, log_prob, finished) per image."""

    tokens: list
    log_probs: list
    finished: list
    extras: list = dataclasses.field(default_factory=list)  # per image, from StepModel.extras
    alternatives: list = dataclasses.field(default_factory=list)  # beam: per image, [(tokens, log p, score)]

    def part(self, start: int, stop: int) -> "Hypotheses":
        """Images ``start`` to ``stop`` (exclusive)."""
        return Hypotheses(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

    @classmethod
    def joined(cls, parts: list) -> "Hypotheses":
        """The images of ``parts``, in order."""
        return cls(*([x for p in parts for x in getattr(p, f.name)] for f in dataclasses.fields(cls)))


class Sampler:
    """The shared loop: feed the image, then one step per token for the captions still going.

    A caption that reaches the end token leaves the batch, so later steps run only on live rows."""

    def __call__(self, steps, features, start_id: int, end_id: int, max_length: int) -> Hypotheses:
        state = steps.start(features)
        n, steps_max = len(features), max_length - 1  # the start token counts towards max_length
        live = np.arange(n)
        tokens = np.full(n, start_id, np.int32)
        columns = []  # one per step taken: memory grows with the captions, not with max_length
        length, logp, done = np.zeros(n, np.int64), np.zeros(n), np.zeros(n, bool)
        extras = [None] * n
        rng = self._rng()
        for t in range(steps_max):
            nxt, chosen, state = self.advance(steps, tokens, state, rng)
            logp[live] += chosen
            columns.append(np.zeros(n, np.int32))
            columns[-1][live], length[live] = nxt, t + 1
            ended = nxt == end_id
            done[live[ended]] = True
            leaving = ended if t < steps_max - 1 else np.ones_like(ended)
            extra = steps.extras(state) if leaving.any() else None
            if extra is not None:
                for r in np.flatnonzero(leaving):
                    extras[live[r]] = extra[r, : t + 1]
            if ended.all():
                break
            if ended.any():
                keep = ~ended
                state, live, nxt = [s[keep] for s in state], live[keep], nxt[keep]
            tokens = nxt
        out = np.stack(columns, axis=1) if columns else np.zeros((n, 0), np.int32)
        return Hypotheses([out[i, : length[i]].tolist() for i in range(n)], [float(x) for x in logp],
                          [bool(d) for d in done], extras if extras[0] is not None else [])

    def advance(self, steps, tokens, state, rng):
        """One step: (next tokens, their log-probabilities, new state)."""
        log_probs, state = steps.step(tokens, state)
        nxt = self.next_token(log_probs, rng).astype(np.int32)
        return nxt, log_probs[np.arange(len(nxt)), nxt], state

    def _rng(self):
        return None

    def describe(self) -> dict:
        """The settings, as recorded in eval.json."""
        return {"search": type(self).__name__.lower()}

    def next_token(self, log_probs: np.ndarray, rng) -> np.ndarray:
        raise NotImplementedError


class Greedy(Sampler):
    """Argmax at every step."""

    def advance(self, steps, tokens, state, rng):
        values, ids, state = steps.step_topk(tokens, state, 1)
        return ids[:, 0].astype(np.int32), values[:, 0], state

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
        return {"search": "sample", "temperature": self.temperature, "top_k": self.top_k, "seed": self.seed}

    def next_token(self, log_probs, rng):
        logits = log_probs / self.temperature
        if self.top_k:
            kth = np.sort(logits, axis=-1)[:, -self.top_k][:, None]
            logits = np.where(logits < kth, -np.inf, logits)
        gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, logits.shape)))
        return np.argmax(logits + gumbel, axis=-1)  # Gumbel-max: an exact softmax sample


class BeamSearch(Sampler):
    """Beam search of width ``k``; finished captions are ranked by log p / length**``alpha``.

    All images advance together: one model call per step for every live (image, beam) row, which
    returns only each row's k+1 best words (``StepModel.step_topk``, selected inside the compiled
    step where the decoder supports it); the 2k best of the k·(k+1) candidates per image are then a
    partial selection (``argpartition``) with no Python loop over images or candidates. This is
    exact: candidates are taken best first until k continue, so a row gives at most k continuations
    and its one ending, all within its own best k+1 words. An image leaves the batch once k of its
    captions have ended, so the model only runs on rows that can still change the result.
    """

    def __init__(self, k: int = 3, alpha: float = 0.7):
        if k < 1:
            raise ValueError("beam width must be ≥ 1")
        self.k, self.alpha = k, alpha

    def describe(self):
        return {"search": "beam", "k": self.k, "alpha": self.alpha}

    def score(self, log_prob, length):
        return log_prob / np.maximum(length, 1) ** self.alpha

    def __call__(self, steps, features, start_id, end_id, max_length) -> Hypotheses:
        n, k = len(features), self.k
        state = steps.start(features)
        live = np.arange(n)  # the images still searching, in row order
        beam_logp = np.full((n, k), -np.inf)
        beam_logp[:, 0] = 0.0  # all beams start identical: expand only one
        seqs = np.zeros((n, k, 0), np.int32)
        best = _Finished(n)
        tokens = np.full(n, start_id, np.int32)
        for t in range(max_length - 1):
            values, ids, state = steps.step_topk(tokens, state, k + 1)  # (rows, w): each beam's best words
            if t == 0:  # the first step ran once per image, its k identical beams' rows copied after
                values, ids, *state = (np.repeat(a, k, axis=0) for a in (values, ids, *state))
            m, w = len(live), values.shape[-1]
            width = min(2 * k, k * w)
            total = (beam_logp[:, :, None] + values.reshape(m, k, w)).reshape(m, k * w)
            cand = np.argpartition(-total, width - 1, axis=1)[:, :width]
            cand_logp = np.take_along_axis(total, cand, 1)
            order = np.argsort(-cand_logp, axis=1, kind="stable")
            cand, cand_logp = np.take_along_axis(cand, order, 1), np.take_along_axis(cand_logp, order, 1)
            parent = cand // w
            tok = np.take_along_axis(ids.reshape(m, k * w), cand, 1).astype(np.int32)
            finite = np.isfinite(cand_logp)
            ends, grows = finite & (tok == end_id), finite & (tok != end_id)
            # Candidates are taken best first until k of them continue; the endings met on the way finish.
            rank = np.cumsum(grows, axis=1)
            taken = grows & (rank <= k)
            kth = np.where(rank[:, -1] >= k, np.argmax(rank >= k, axis=1), width)
            ends &= np.arange(width)[None, :] < kth[:, None]
            if ends.any():
                extra = steps.extras(state)
                rows, cols = np.nonzero(ends)
                finished_seqs = np.concatenate([seqs[rows, parent[rows, cols]], tok[rows, cols, None]], axis=1)
                best.offer(live[rows], self.score(cand_logp[rows, cols], t + 1), cand_logp[rows, cols],
                           finished_seqs, extra[rows * k + parent[rows, cols]] if extra is not None else None)
            # the k continuations of each image, moved to the front in rank order
            slot = np.argsort(~taken, axis=1, kind="stable")[:, :k]
            keep = np.take_along_axis(taken, slot, 1)
            new_logp = np.where(keep, np.take_along_axis(cand_logp, slot, 1), -np.inf)
            new_parent = np.where(keep, np.take_along_axis(parent, slot, 1), 0)
            new_tok = np.where(keep, np.take_along_axis(tok, slot, 1), end_id)
            seqs = np.concatenate([np.take_along_axis(seqs, new_parent[:, :, None], 1), new_tok[:, :, None]], axis=2)
            still = (best.count[live] < k) & keep.any(axis=1)
            if t == max_length - 2 or not still.any():
                best.fallback(live, new_logp, seqs, steps.extras(state), new_parent, k)
                break
            rows = (np.flatnonzero(still)[:, None] * k + new_parent[still]).reshape(-1)
            state = [s[rows] for s in state]
            live, beam_logp, seqs = live[still], new_logp[still], seqs[still]
            tokens = new_tok[still].reshape(-1)
        return best.hypotheses()


class _Finished:
    """The best finished caption of each image so far (only the best is ever returned)."""

    def __init__(self, n):
        self.all = [[] for _ in range(n)]  # (score, tokens, log p) of every finished caption
        self.count = np.zeros(n, np.int64)
        self.score = np.full(n, -np.inf)
        self.tokens, self.log_prob, self.extra = [None] * n, np.zeros(n), [None] * n
        self.finished = np.zeros(n, bool)

    def offer(self, images, scores, log_probs, seqs, extras):
        np.add.at(self.count, images, 1)
        for j in np.argsort(-scores, kind="stable"):  # one entry per finished caption, not per candidate
            i = images[j]
            self.all[i].append((float(scores[j]), seqs[j].tolist(), float(log_probs[j])))
            if scores[j] > self.score[i]:
                self.score[i], self.tokens[i], self.log_prob[i] = scores[j], seqs[j].tolist(), log_probs[j]
                self.extra[i] = None if extras is None else extras[j][: len(seqs[j])]
                self.finished[i] = True

    def fallback(self, images, beam_logp, seqs, extras, parents, k):
        """Images with no finished caption at the end: the best partial caption, never an empty one."""
        for r, i in enumerate(images):
            if self.tokens[i] is None:
                j = int(np.argmax(beam_logp[r]))
                self.tokens[i], self.log_prob[i] = seqs[r, j].tolist(), float(beam_logp[r, j])
                if extras is not None:
                    self.extra[i] = extras[r * k + parents[r, j]][: seqs.shape[2]]

    def hypotheses(self) -> Hypotheses:
        extras = [e for e in self.extra if e is not None]
        alternatives = [[(t, lp, sc) for sc, t, lp in sorted(a, key=lambda f: -f[0])] for a in self.all]
        return Hypotheses(self.tokens, [float(x) for x in self.log_prob], [bool(f) for f in self.finished],
                          extras if len(extras) == len(self.tokens) else [], alternatives)


def to_captions(hyps: Hypotheses, vocab) -> list:
    caps = []
    extras = hyps.extras or [None] * len(hyps.tokens)
    alternatives = hyps.alternatives or [[] for _ in hyps.tokens]
    for toks, lp, fin, ex, alts in zip(hyps.tokens, hyps.log_probs, hyps.finished, extras, alternatives):
        words = vocab.decode(toks)
        caps.append(Caption(list(toks), words, " ".join(words), float(lp), bool(fin), ex,
                            [(" ".join(vocab.decode(t)), a_lp, score) for t, a_lp, score in alts]))
    return caps
