"""``merge_features``: the stores of a sharded extraction joined into one, block by block."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError
from captioning.features.store import FeatureStore
from captioning.features.writer import FeatureStoreWriter


def _digest(row) -> np.ndarray:
    """What is kept of a stored row to compare a later part's row of the same name against: a
    64 numbers spread over it, so the check costs no memory per image worth mentioning."""
    flat = np.asarray(row, np.float32).reshape(-1)
    return flat[:: max(1, len(flat) // 64)][:64].copy()  # a view would keep the whole row alive


def _differ(kept: np.ndarray, row) -> bool:
    """Whether a row is not the kept one of its name (the same photo on two machines differs by float
    round-off, about 1e-5 of its size; another photo by a good part of it)."""
    other = _digest(row)
    return float(np.linalg.norm(kept - other)) > 1e-2 * max(float(np.linalg.norm(kept)), float(np.linalg.norm(other)))


def merge_features(out, parts, overwrite: bool = False, block: int | None = None):
    """Join the stores of a sharded extraction into ``out``.

    Every part must come from the same network (the identity rule of ``FeatureSpec``); an image in
    several parts is kept once; shards named ``K/N`` in the parts' records but absent are reported.
    Returns the merged ``FeatureStore`` and a list of notes."""
    from captioning.features.spec import FeatureSpec
    if not parts:
        raise CaptioningError("merge-features needs at least one part store")
    stores = [FeatureStore(p) for p in parts]
    first = stores[0]
    for other in stores[1:]:
        diff = first.spec.differences(other.spec, (str(first.path), str(other.path)))
        if diff:
            raise CaptioningError(f"{other.path} was made differently from {first.path} ({'; '.join(diff)}): "
                                  "features of different networks cannot be merged.")
    notes, seen, duplicates, clashes = [], {}, 0, []
    shards = {str(s.attrs.get("shard") or "") for s in stores} - {""}
    whole = [s for s in stores if not s.attrs.get("shard") and s.attrs.get("completed")]
    if shards and not whole:  # a finished whole extraction among the parts holds every shard's images
        total = {int(x.split("/")[1]) for x in shards}
        have = {int(x.split("/")[0]) for x in shards}
        missing = sorted(set(range(1, max(total) + 1)) - have)
        if len(total) > 1:
            notes.append(f"the parts come from different shardings ({', '.join(sorted(shards))}).")
        if missing:
            notes.append(f"shards {', '.join(f'{k}/{max(total)}' for k in missing)} are missing: their images "
                         "are not in the merged store.")
    roots = sorted({str(s.attrs.get("images_root")) for s in stores if s.attrs.get("images_root")})
    if len(roots) > 1:
        notes.append(f"the parts were extracted from different image folders ({', '.join(roots[:3])}): fine for one "
                     "data set copied to several machines; if they hold different photos under the same names, "
                     "the merged store keeps the first part's.")
    incomplete = [str(s.path) for s in stores if not s.attrs.get("completed")]
    if incomplete:
        notes.append(f"{len(incomplete)} parts are incomplete (their extraction did not finish): "
                     f"{', '.join(incomplete[:3])}.")
    attrs = {k: v for k, v in first.attrs.items() if k not in ("completed", "n_images", "shard")}
    attrs["merged_from"] = [str(Path(p).resolve()) for p in parts]
    FeatureSpec.from_dict(attrs)  # a readable description, or a clear error
    writer = FeatureStoreWriter(out, attrs, overwrite=overwrite)
    try:
        for s in stores:
            per_block = block or s.rows_per_block()
            for i in range(0, len(s), per_block):
                ids = s.ids[i:i + per_block]
                rows = s.rows(np.arange(i, i + len(ids)))
                keep = [j for j, image in enumerate(ids) if image not in seen and image not in writer.done]
                duplicates += len(ids) - len(keep)
                clashes += [image for j, image in enumerate(ids) if image in seen and _differ(seen[image], rows[j])]
                seen.update({ids[j]: _digest(rows[j]) for j in keep})
                if keep:
                    writer.write_batch([ids[j] for j in keep], rows[keep])
            writer.write_batch([], np.zeros((0, *s.feature_shape), attrs["dtype"]), list(s.failed.items()))
    finally:
        for s in stores:
            s.close()
    if duplicates:
        notes.append(f"{duplicates} images were in more than one part: kept once.")
    if clashes:
        notes.append(f"{len(clashes)} of them have other features in another part (e.g. {clashes[0]}): different "
                     "photos under one file name, or another network's features; the first part's are kept.")
    return writer.finalize(completed=not incomplete and not any("missing" in n for n in notes)), notes
