"""``FeatureStoreWriter``: a feature store written batch by batch, safe to kill at any moment.

HDF5 files are not safe to kill mid-write, so a running extraction never writes into the store
itself. Each batch becomes a small segment file, written under a temporary name and renamed
(atomic), in ``<store>.partial/``. At the end the segments are merged into a new store that
replaces the old one by rename. A run killed at any moment loses at most the batch in flight; the
next run with the same output reads the store and the segments and carries on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from captioning.errors import CaptioningError
from captioning.lock import WriterLock

from captioning.features.store import _STR, BLOCK_BYTES, FeatureStore, _attrs, _refuse_if_locked, _strings, partial_dir


# HDF5 cannot recover from a write that fails half-way: the file's close fails too, and h5py later
# crashes the process (SIGSEGV) freeing its objects. So every write first checks that the disk has
# room for it, and a batch refused that way stops the extraction with the batches written kept.
HEADROOM = 64 << 10  # bytes beyond a file's data: HDF5's metadata (a few KiB), the ids, some slack


class DiskFull(CaptioningError):
    """Not enough free space for the next write; nothing was half-written."""


def _require_space(folder: Path, needed: int, store: Path, what: str, kept: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + HEADROOM:
        raise DiskFull(f"{store}: the disk is full ({free / 2 ** 20:.1f} MiB free in {folder}, {what} needs about "
                       f"{(needed + HEADROOM) / 2 ** 20:.1f} MiB). {kept} Free space, then run the same command "
                       "again to continue.")


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
        _require_space(self.parts, np.asarray(features).nbytes + 256 * (len(ids) + len(failed)), self.path,
                       "the next batch", f"The batches already written are kept in {self.parts}.")
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
            _require_space(self.path.parent, sum(p.stat().st_size for p in self._sources()), self.path,
                           "merging the batches into the store", f"The batches are kept in {self.parts}.")
            return self._merge(completed)
        except OSError as e:
            raise CaptioningError(f"{self.path}: cannot write the merged store ({e}). Is the disk full? The "
                                  f"batches in {self.parts} are kept; free space and run the same command "
                                  "again.") from e
        finally:
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
            self.lock.release()

    def release(self) -> None:
        """Stop without merging (the disk is full): the segments stay for the next run."""
        self.lock.release()

    def _sources(self) -> list[Path]:
        return ([self.path] if self.path.is_file() else []) + self._segments()

    def _merge(self, completed: bool) -> FeatureStore:
        sources = self._sources()
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
                    rows = max(1, BLOCK_BYTES // max(1, f["features"][0:1].nbytes))  # spatial rows are big
                    for start in range(0, len(src_ids), rows):
                        block = f["features"][start:start + rows][mask[start:start + rows]]
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
