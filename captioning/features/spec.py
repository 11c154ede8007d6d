"""``FeatureSpec``: what made a feature store, carried from the store to the run to the captioner.

One identity rule (``compatible_with``) decides whether features can be mixed or used together:
the same backbone, weights, pooling, input size and feature shape. Fit, resume, evaluate and an
extraction that resumes all apply it, so a store made by another network is refused everywhere
rather than scored as garbage.
"""

from __future__ import annotations

import dataclasses
import re

from captioning.errors import CaptioningError


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    backbone: str
    weights: str  # 'imagenet', 'none (random init, seed S, BACKEND backend)' or 'file:NAME sha256:…'
    pooling: str  # avg | max | spatial
    input_size: int
    feature_shape: tuple  # (D,) pooled or (H·W, C) spatial
    preprocessing: str = ""
    resize: str = ""
    color: str = ""
    dtype: str = "float32"
    grid: tuple | None = None  # (H, W) for spatial stores
    weights_path: str | None = None  # absolute path of a weights file, to rebuild the backbone later
    weights_sha256: str | None = None  # its full digest: the file is used again only if it still matches

    IDENTITY = ("backbone", "weights_id", "pooling", "input_size", "feature_shape")

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        """From a store's attributes or a run config's ``features`` section (unknown keys ignored)."""
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            kw = {k: v for k, v in d.items() if k in known and v is not None}
            kw["feature_shape"] = tuple(int(x) for x in d["feature_shape"])
            kw["input_size"] = int(d["input_size"])
            if d.get("grid") is not None:
                kw["grid"] = tuple(int(x) for x in d["grid"])
            return cls(**{k: str(v) if k in ("backbone", "weights", "pooling") else v for k, v in kw.items()})
        except (KeyError, TypeError, ValueError) as e:
            raise CaptioningError(f"incomplete or malformed feature description ({type(e).__name__}: {e}); "
                                  "re-extract the features with this version of captioning.") from e

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        d["grid"] = list(self.grid) if self.grid else None
        return d

    @property
    def spatial(self) -> bool:
        return self.pooling == "spatial"

    @property
    def weights_id(self) -> str:
        """The weights' identity: a file is known by its content hash, wherever it lies."""
        m = re.search(r"sha256:([0-9a-f]+)", self.weights)
        return f"sha256:{m.group(1)[:16]}" if m else self.weights

    def differences(self, other: "FeatureSpec", labels=("this", "other")) -> list[str]:
        """One 'field: LABEL value, LABEL value' entry per identity field that differs."""
        return [f"{k}: {labels[0]} {getattr(self, k)!r}, {labels[1]} {getattr(other, k)!r}" for k in self.IDENTITY
                if getattr(self, k) != getattr(other, k) and not (k == "weights_id" and _same_random_init(self, other))]

    def compatible_with(self, other: "FeatureSpec") -> bool:
        return not self.differences(other)

    def require_compatible(self, other: "FeatureSpec", mine: str, theirs: str) -> None:
        """Raise an error naming both sides when ``other`` was made by a different network."""
        diff = self.differences(other, ("run", "store"))
        if diff:
            raise CaptioningError(f"{theirs} was made differently from {mine} ({'; '.join(diff)}). Features "
                                  "of different networks give meaningless captions: use the store the run was "
                                  "trained on, or extract one with the same backbone, weights and pooling.")

    def describe(self) -> str:
        return f"{self.backbone} ({self.weights}, {self.pooling} pooling, {self.input_size} px, {self.feature_shape})"


def _same_random_init(a: FeatureSpec, b: FeatureSpec) -> bool:
    """Stores before 0.3.1 did not record the backend of a random init: the same seed still matches."""
    seeds = [re.fullmatch(r"none \(random init, seed (\d+)(, \w+ backend)?\)", s.weights) for s in (a, b)]
    return all(seeds) and seeds[0].group(1) == seeds[1].group(1) and None in (seeds[0].group(2), seeds[1].group(2))
