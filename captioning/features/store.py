"""``FeatureStore``: one CNN vector (or grid) per image in an HDF5 file that explains itself.

Layout: ``features`` (N, D) or (N, H·W, C); ``image_ids`` (UTF-8, relative to the images root,
unique); ``failed/image_ids`` + ``failed/reasons``; attributes naming the backbone, weights, input
size, pooling, preprocessing, versions and whether the extraction completed.

Crash safety: HDF5 files are not safe to kill mid-write, so a running extraction never writes into
the store itself. Each batch becomes a small segment file, written under a temporary name and
renamed (atomic), in ``<store>.partial/``. At the end the segments are merged into a new store that
replaces the old one by rename. A run killed at any moment loses at most the batch in flight; the
next run with the same output reads the store and the segments and carries on.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from captioning.console import count
from captioning.errors import CaptioningError
from captioning.lock import WriterLock

_STR = h5py.string_dtype("utf-8")


def _attrs(f: h5py.File) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _strings(ds) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]] if len(ds) else []


def partial_dir(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


class FeatureStore:
    """Read side: lazy, row-by-id access. ``store[["a.jpg", "b.jpg"]]`` reads only those rows."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            hint = ""
            writer = WriterLock(self.path, "extract-features").holder()
            if writer:
                hint = (f" extract-features (process {writer}) is writing it now: wait for it to finish, then run "
                        "this again.")
            elif partial_dir(self.path).is_dir():
                hint = (f" An interrupted extraction left batches in {partial_dir(self.path)}: run the same "
                        "`captioning extract-features` command again to complete the store.")
            raise CaptioningError(f"{self.path}: no feature store here.{hint}")
        try:
            self._file = h5py.File(self.path, "r")
            self._features = self._file["features"]
            self.ids = _strings(self._file["image_ids"])
        except (OSError, KeyError) as e:
            _refuse_if_locked(self.path, e)
            raise CaptioningError(f"{self.path}: not a readable feature store ({e})") from e
        self.attrs = _attrs(self._file)
        if len(self._features) != len(self.ids):
            raise CaptioningError(f"{self.path}: {len(self._features)} feature rows for {len(self.ids)} image ids; "
                                  "the store is damaged. Re-extract it (extract-features --overwrite).")
        self.index = {image_id: row for row, image_id in enumerate(self.ids)}
        failed = self._file.get("failed")
        self.failed = dict(zip(_strings(failed["image_ids"]), _strings(failed["reasons"]))) if failed else {}

    @classmethod
    def open(cls, path) -> "FeatureStore":
        return cls(path)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id) -> bool:
        return image_id in self.index

    @property
    def feature_shape(self) -> tuple:
        return tuple(self._features.shape[1:])

    @property
    def spec(self):
        """What made these features (``FeatureSpec``), for the identity checks of fit and evaluate."""
        from captioning.features.spec import FeatureSpec
        try:
            return FeatureSpec.from_dict({**self.attrs, "feature_shape": self.feature_shape})
        except CaptioningError as e:
            raise CaptioningError(f"{self.path}: {e}") from e

    def statistics(self, rows, block: int = 4096):
        """Per-feature mean and standard deviation of the given rows, streamed (COCO-sized stores fit).

        Spatial grids give statistics per channel, over all cells. Non-finite values are refused:
        they would turn every loss into NaN many minutes later."""
        rows = np.sort(np.unique(np.asarray(rows)))
        total, sq, n = None, None, 0
        for i in range(0, len(rows), block):
            x = self.rows(rows[i:i + block]).astype(np.float64)
            x = x.reshape(-1, x.shape[-1])
            if not np.isfinite(x).all():
                bad = sorted({self.ids[rows[i + j // max(1, x.shape[0] // len(rows[i:i + block]))]]
                              for j in np.flatnonzero(~np.isfinite(x).all(axis=1))[:3]})
                raise CaptioningError(f"{self.path}: non-finite feature values (NaN or inf), e.g. for "
                                      f"{', '.join(bad)}. Re-extract these images (extract-features --overwrite).")
            total = x.sum(0) if total is None else total + x.sum(0)
            sq = (x ** 2).sum(0) if sq is None else sq + (x ** 2).sum(0)
            n += len(x)
        mean = total / n
        return mean, np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))

    @property
    def dtype(self):
        return self._features.dtype

    def rows(self, rows) -> np.ndarray:
        """Features of the given row numbers, in that order (h5py needs sorted unique indices)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, *self.feature_shape), self.dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._features[unique][inverse]

    def __getitem__(self, image_ids) -> np.ndarray:
        if isinstance(image_ids, str):
            return self.rows([self._row(image_ids)])[0]
        return self.rows([self._row(i) for i in image_ids])

    def _row(self, image_id) -> int:
        try:
            return self.index[image_id]
        except KeyError:
            raise KeyError(f"{image_id!r} is not in the feature store {self.path}") from None

    def describe(self) -> str:
        a = self.attrs
        state = "complete" if a.get("completed") else "incomplete (re-run extract-features to finish)"
        policy = a.get("compute_dtype_policy", "float32")
        computed = "" if policy == "float32" else f", computed in {policy}"
        return (f"{self.path}: {count(len(self), 'image')} × {self.feature_shape} {self.dtype} — "
                f"{a.get('backbone')} (weights {a.get('weights')}, {a.get('pooling')} pooling, {a.get('input_size')} px{computed}), "
                f"{len(self.failed)} failed, {state}")

    def close(self):
        self._file.close()

    # Keras' multiprocessing workers copy the dataset: send the path and reopen there.
    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeatureStoreWriter:
    """Write side of an extraction: knows what is done, appends batches crash-safely, merges at the end."""

    def __init__(self, path, attrs: dict, overwrite: bool = False):
        self.path, self.attrs = Path(path), dict(attrs)
        self.parts = partial_dir(self.path)
        self.lock = WriterLock(self.path, "extract-features").acquire()  # released by finalize
        try:
            self._open(overwrite)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, overwrite: bool):
        if self.path.exists() and not self.path.is_file():
            raise CaptioningError(f"--out {self.path} is a folder; choose a file name ending in .h5.")
        existing = None if overwrite and not self._readable() else self._existing_identity()
        diff = []
        if existing is not None:
            from captioning.features.spec import FeatureSpec  # the one identity rule, as fit and evaluate use
            try:
                diff = FeatureSpec.from_dict(existing).differences(FeatureSpec.from_dict(self.attrs), ("stored", "asked"))
            except CaptioningError as e:
                diff = [f"unreadable description: {e}"]
        if diff:
            diff = "; ".join(diff)
            if not overwrite:
                raise CaptioningError(
                    f"{self.path} was made differently ({diff}). Features of different models must "
                    "not be mixed: choose another --out, or pass --overwrite to replace it.")
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        for leftover in self.parts.glob("seg-*.tmp"):  # a batch killed before its rename; we hold the lock
            leftover.unlink(missing_ok=True)
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in self._segments()), default=0)
        self.done = set(self._stored_ids())

    def _readable(self) -> bool:
        """Whether the store and every segment open; --overwrite replaces them when not."""
        try:
            for p in ([self.path] if self.path.is_file() else []) + self._segments():
                with h5py.File(p, "r") as f:
                    _strings(f["image_ids"])
            return True
        except (OSError, KeyError) as e:
            _refuse_if_locked(p, e)  # in use elsewhere is not damaged: never deleted for that
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
            return False

    def _segments(self) -> list[Path]:
        return sorted(self.parts.glob("seg-*.h5")) if self.parts.is_dir() else []

    def _existing_identity(self):
        for p in ([self.path] if self.path.is_file() else []) + self._segments():
            try:
                with h5py.File(p, "r") as f:
                    return _attrs(f)
            except OSError as e:
                _refuse_if_locked(p, e)
                raise CaptioningError(f"{p}: exists but is not a readable HDF5 file ({e}); move it away "
                                      "or pass --overwrite.") from e
        return None

    def _stored_ids(self):
        for p in ([self.path] if self.path.is_file() else []) + self._segments():
            try:
                with h5py.File(p, "r") as f:
                    yield from _strings(f["image_ids"])
            except (OSError, KeyError) as e:
                _refuse_if_locked(p, e)
                raise CaptioningError(f"{p}: exists but is damaged ({e}); pass --overwrite to start the store "
                                      "again.") from e

    def write_batch(self, ids: list[str], features: np.ndarray, failed=()):
        """One atomic segment: a kill before the rename leaves only a temp file, ignored later."""
        seg = self.parts / f"seg-{self._next:06d}.h5"
        tmp = seg.with_suffix(".tmp")
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs.update(self.attrs)
                f.create_dataset("features", data=np.asarray(features, dtype=self.attrs["dtype"]))
                f.create_dataset("image_ids", data=np.array(ids, dtype=object), dtype=_STR)
                f.create_dataset("failed_ids", data=np.array([i for i, _ in failed], dtype=object), dtype=_STR)
                f.create_dataset("failed_reasons", data=np.array([r for _, r in failed], dtype=object), dtype=_STR)
            os.replace(tmp, seg)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise CaptioningError(f"{self.path}: cannot write the next batch into {self.parts} ({e}). Is the disk "
                                  "full or the folder read-only? Batches already written are kept; free space "
                                  "and run the same command again to continue.") from e
        self._next += 1
        self.done.update(ids)

    def finalize(self, completed: bool) -> FeatureStore:
        """Merge the store and its segments into a fresh file, swap it in, drop the segments.

        Safe to kill at any instant: before the rename the old store and the segments are intact; after
        it the merged store holds everything, and segments left behind are duplicates merged away next time."""
        try:
            return self._merge(completed)
        except OSError as e:
            raise CaptioningError(f"{self.path}: cannot write the merged store ({e}). Is the disk full? The "
                                  f"batches in {self.parts} are kept; free space and run the same command "
                                  "again.") from e
        finally:
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
            self.lock.release()

    def _merge(self, completed: bool) -> FeatureStore:
        sources = ([self.path] if self.path.is_file() else []) + self._segments()
        shape = tuple(self.attrs["feature_shape"])
        # A merge killed after its rename but before the segments were removed leaves the same rows in
        # the store and in segments (same network, checked on open): the first copy of each id is kept.
        keep, seen = [], set()
        for p in sources:
            with h5py.File(p, "r") as f:
                ids_here = _strings(f["image_ids"])
            mask = np.array([i not in seen for i in ids_here], bool)
            seen.update(ids_here)
            keep.append(mask)
        n = int(sum(m.sum() for m in keep))
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ids, failed, row = [], {}, 0
        with h5py.File(tmp, "w") as out:
            out.attrs.update(self.attrs)
            # contiguous, not chunked: a training batch reads rows scattered over the whole store, and
            # HDF5 reads a contiguous row with one seek but spends ~0.1 ms per row finding it in chunks
            feats = out.create_dataset("features", shape=(n, *shape), dtype=self.attrs["dtype"])
            for p, mask in zip(sources, keep):
                with h5py.File(p, "r") as f:
                    src_ids = _strings(f["image_ids"])
                    for start in range(0, len(src_ids), 4096):
                        block = f["features"][start:start + 4096][mask[start:start + 4096]]
                        feats[row:row + len(block)] = block
                        row += len(block)
                    ids += [i for i, m in zip(src_ids, mask) if m]
                    if "failed" in f:
                        failed.update(zip(_strings(f["failed"]["image_ids"]), _strings(f["failed"]["reasons"])))
                    elif "failed_ids" in f:
                        failed.update(zip(_strings(f["failed_ids"]), _strings(f["failed_reasons"])))
            stored = set(ids)
            failed = {k: v for k, v in failed.items() if k not in stored}  # later retries succeeded
            out.create_dataset("image_ids", data=np.array(ids, dtype=object), dtype=_STR)
            g = out.create_group("failed")
            g.create_dataset("image_ids", data=np.array(list(failed), dtype=object), dtype=_STR)
            g.create_dataset("reasons", data=np.array(list(failed.values()), dtype=object), dtype=_STR)
            out.attrs["completed"] = bool(completed)
            out.attrs["n_images"] = len(ids)
        os.replace(tmp, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)
        return FeatureStore(self.path)


def merge_features(out, parts, overwrite: bool = False, block: int = 1024):
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
    notes, seen, duplicates = [], set(), 0
    shards = {str(s.attrs.get("shard") or "") for s in stores} - {""}
    if shards:
        total = {int(x.split("/")[1]) for x in shards}
        have = {int(x.split("/")[0]) for x in shards}
        missing = sorted(set(range(1, max(total) + 1)) - have)
        if len(total) > 1:
            notes.append(f"the parts come from different shardings ({', '.join(sorted(shards))}).")
        if missing:
            notes.append(f"shards {', '.join(f'{k}/{max(total)}' for k in missing)} are missing: their images "
                         "are not in the merged store.")
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
            for i in range(0, len(s), block):
                ids = s.ids[i:i + block]
                keep = [j for j, image in enumerate(ids) if image not in seen and image not in writer.done]
                duplicates += len(ids) - len(keep)
                seen.update(ids)
                if keep:
                    writer.write_batch([ids[j] for j in keep], s.rows(np.arange(i, i + len(ids))[keep]))
            writer.write_batch([], np.zeros((0, *s.feature_shape), attrs["dtype"]), list(s.failed.items()))
    finally:
        for s in stores:
            s.close()
    if duplicates:
        notes.append(f"{duplicates} images were in more than one part: kept once.")
    return writer.finalize(completed=not incomplete and not any("missing" in n for n in notes)), notes


def _refuse_if_locked(path, error: Exception) -> None:
    """HDF5 locks a file another program has open for writing; that file is busy, not damaged."""
    if isinstance(error, OSError) and (error.errno == errno.EAGAIN or "unable to lock file" in str(error)):
        raise CaptioningError(f"{path} is open for writing in another program (HDF5 has locked it): close it "
                              "there (a notebook's h5py.File(..., 'a'), an HDF5 viewer) and run again. The file "
                              "itself is untouched.") from error
