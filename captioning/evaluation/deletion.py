"""Do a word's attention map and the decoder's evidence for it agree? A deletion check for real photos.

Flickr8k draws no boxes around its objects, so whether the map of "dog" sits on the dog cannot be
counted directly (the sample set's ``localisation.side_rate`` can: its scenes are known). What can be
measured honestly on any photo: hide the ``k`` cells a word's map weighs most — replace them with the
average cell — and score the same caption again. If the map shows where the decoder found the word,
that word's log-probability falls further than when ``k`` random cells, or the ``k`` it weighs least,
are hidden. The drop is read for object words (nouns of things one can point at) and, as a control,
for function words, whose maps are expected to be diffuse.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Fixed before any run was measured: the concrete nouns among Flickr8k's most frequent words, and
# its most frequent function words.
OBJECT_WORDS = frozenset(
    "dog dogs man men woman women boy boys girl girls child children people person baby ball water "
    "grass snow beach street bike bicycle car rock rocks field pool shirt jacket hat frisbee stick "
    "wave waves ocean sand road building crowd horse player football soccer camera tree trees".split())
FUNCTION_WORDS = frozenset("a an the is are on in of and with at to".split())
MASKS = ("top", "random", "bottom")


@dataclasses.dataclass
class DeletionDrops:
    """Per word class: the word's log-probability drop (nats; positive = less likely) for each mask,
    one entry per occurrence, and the share of the map's mass in its ``k`` top cells."""

    k: int
    cells: int
    drops: dict  # class -> mask -> (occurrences,) array
    top_mass: dict  # class -> (occurrences,) array

    def count(self, word_class: str) -> int:
        return len(self.top_mass[word_class])

    def mean(self, word_class: str, mask: str) -> float:
        d = self.drops[word_class][mask]
        return float(d.mean()) if len(d) else float("nan")

    def top_beats_random(self, word_class: str) -> float:
        """The share of occurrences whose drop is larger with the top cells hidden than random ones."""
        d = self.drops[word_class]
        return float((d["top"] > d["random"]).mean()) if len(d["top"]) else float("nan")

    def describe(self) -> str:
        lines = [f"hiding k={self.k} of {self.cells} cells (replaced by the average cell); drop in the word's "
                 "log-probability, nats (mean)"]
        for c in self.drops:
            lines.append(f"  {c} words ({self.count(c)}): top {self.mean(c, 'top'):.3f}, random "
                         f"{self.mean(c, 'random'):.3f}, bottom {self.mean(c, 'bottom'):.3f}; top > random for "
                         f"{self.top_beats_random(c):.0%}; map mass in the top {self.k} cells "
                         f"{float(np.mean(self.top_mass[c])) if self.count(c) else float('nan'):.2f}")
        return "\n".join(lines)


def _scored(steps, grids, tokens, positions, start_id, batch_rows):
    """log p(tokens[r, positions[r]] | grids(r), tokens[r, :positions[r]]) for every row r, by stepping;
    ``grids(rows)`` makes a batch's images (all of them at once would not fit in memory)."""
    out = np.empty(len(tokens))
    for lo in range(0, len(tokens), batch_rows):
        rows = np.arange(lo, min(lo + batch_rows, len(tokens)))
        f, t, p = grids(rows), tokens[rows], positions[rows]
        state = steps.start(f)
        previous = np.full(len(f), start_id, np.int32)
        for s in range(int(p.max()) + 1):
            log_p, state = steps.step(previous, state)
            here = p == s
            out[lo + np.flatnonzero(here)] = log_p[here, t[here, s]]
            previous = t[:, s].astype(np.int32)
    return out


def deletion_drops(steps, features, captions, start_id: int, classes: dict | None = None, k: int = 5,
                   seed: int = 0, batch_rows: int = 512) -> DeletionDrops:
    """``captions[i]`` is the ``Caption`` (with ``attention``) that ``steps`` gave ``features[i]``, a
    (cells, channels) grid; every word of a class in ``classes`` (name -> words; by default object and
    function words) is scored with its top, random and bottom ``k`` cells hidden, and unhidden."""
    classes = classes or {"object": OBJECT_WORDS, "function": FUNCTION_WORDS}
    features = np.asarray(features, np.float32)
    cells = features.shape[1]
    average = features.reshape(-1, features.shape[-1]).mean(0)
    rng = np.random.default_rng(seed)
    width = max(len(c.tokens) for c in captions)
    rows = []  # (image, position, class, mask, hidden cells)
    for i, c in enumerate(captions):
        if c.attention is None:
            raise ValueError("deletion_drops needs captions with attention maps (an attention or grid transformer run)")
        for t, word in enumerate(c.words):
            word_class = next((name for name, words in classes.items() if word in words), None)
            if word_class is None:
                continue
            order = np.argsort(-np.asarray(c.attention[t]), kind="stable")
            hidden = {"top": order[:k], "random": rng.choice(cells, k, replace=False), "bottom": order[-k:]}
            rows.append((i, t, word_class, None, None))
            rows += [(i, t, word_class, m, hidden[m]) for m in MASKS]

    def grids(batch):
        out = features[[rows[n][0] for n in batch]]
        for j, n in enumerate(batch):
            if rows[n][4] is not None:
                out[j, rows[n][4]] = average
        return out

    tokens = np.zeros((len(rows), width), np.int64)
    for n, r in enumerate(rows):
        tokens[n, :len(captions[r[0]].tokens)] = captions[r[0]].tokens
    log_p = _scored(steps, grids, tokens, np.array([r[1] for r in rows]), start_id, batch_rows)
    drops = {c: {m: [] for m in MASKS} for c in classes}
    top_mass = {c: [] for c in classes}
    for n, (i, t, word_class, mask, hidden) in enumerate(rows):
        if mask is None:
            unhidden = log_p[n]
            top_mass[word_class].append(np.sort(captions[i].attention[t])[-k:].sum())
        else:
            drops[word_class][mask].append(unhidden - log_p[n])
    return DeletionDrops(k, cells, {c: {m: np.asarray(v) for m, v in d.items()} for c, d in drops.items()},
                         {c: np.asarray(v) for c, v in top_mass.items()})
