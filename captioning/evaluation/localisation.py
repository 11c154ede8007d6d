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
    """Hits and counts of shape words whose map favours their object's half, keyed by
    (shapes in the scene, the named shape's side)."""

    hits: dict
    counts: dict

    def rate(self, n_objects=None, side=None) -> float:
        keys = [k for k in self.counts if n_objects in (None, k[0]) and side in (None, k[1])]
        n = sum(self.counts[k] for k in keys)
        return sum(self.hits[k] for k in keys) / n if n else float("nan")

    def describe(self) -> str:
        parts = []
        for n_objects in (1, 2):
            sides = ", ".join(f"{side} {self.hits[(n_objects, side)]}/{self.counts[(n_objects, side)]}"
                              for side in ("left", "right"))
            parts.append(f"{n_objects}-shape scenes {self.rate(n_objects):.2f} ({sides})")
        return "; ".join(parts) + " (chance 0.50)"


def side_rate(images, captions, scenes: dict, grid) -> SideRate:
    """``captions[i]`` is the attention ``Caption`` of ``images[i]``; ``grid`` is (rows, columns)."""
    h, w = grid
    keys = [(n, side) for n in (1, 2) for side in ("left", "right")]
    hits, counts = dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
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
            key = (len(objects), named[0]["side"])
            hits[key] += int(looks_left == (key[1] == "left"))
            counts[key] += 1
    return SideRate(hits, counts)
