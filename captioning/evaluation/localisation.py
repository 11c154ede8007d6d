"""Does attention look where the word is? A check on the sample set, whose scenes are known.

Each sample scene (``scenes.json``) lists its shapes and the side each is on. For every generated
shape word whose object is unambiguous (the only shape of that kind in the scene), the word's
attention map should put more mass on that object's half of the grid than on the other half.
Chance is 0.5.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class SideRate:
    """Hits and counts of shape words whose map favours their object's half, by shapes per scene."""

    hits: dict  # {1: int, 2: int}
    counts: dict

    def rate(self, n_objects=None) -> float:
        keys = [n_objects] if n_objects else list(self.counts)
        n = sum(self.counts[k] for k in keys)
        return sum(self.hits[k] for k in keys) / n if n else float("nan")

    def describe(self) -> str:
        parts = [f"{k}-shape scenes {self.hits[k]}/{self.counts[k]} = {self.rate(k):.2f}" for k in sorted(self.counts)]
        return "; ".join(parts) + " (chance 0.50)"


def side_rate(images, captions, scenes: dict, grid) -> SideRate:
    """``captions[i]`` is the attention ``Caption`` of ``images[i]``; ``grid`` is (rows, columns)."""
    h, w = grid
    hits, counts = {1: 0, 2: 0}, {1: 0, 2: 0}
    for image, caption in zip(images, captions):
        if caption.attention is None:
            raise ValueError("side_rate needs captions from the attention decoder (with attention maps)")
        objects = scenes[image]
        for t, word in enumerate(caption.words):
            named = [o for o in objects if o["shape"] == word]
            if len(named) != 1:
                continue
            a = np.asarray(caption.attention[t]).reshape(h, w)
            looks_left = a[:, : w // 2].sum() > a[:, (w + 1) // 2:].sum()
            hits[len(objects)] += int(looks_left == (named[0]["side"] == "left"))
            counts[len(objects)] += 1
    return SideRate(hits, counts)
