"""``FeatureStore``: reads one CNN vector (or grid) per image from an HDF5 file that explains itself.

Layout: ``features`` (N, D) or (N, H·W, C); ``image_ids`` (UTF-8, relative to the images root,
unique); ``failed/image_ids`` + ``failed/reasons``; attributes naming the backbone, weights, input
size, pooling, preprocessing, versions and whether the extraction completed. Written by
``writer.FeatureStoreWriter``; shards joined by ``merge.merge_features``.
"""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np

from captioning.console import count
from captioning.errors import CaptioningError
from captioning.lock import WriterLock

_STR = h5py.string_dtype("utf-8")


BLOCK_BYTES = 2 ** 27  # 128 MiB: what a streamed pass over a store holds at once
# h5py's time for one read of a list of rows grows faster than the list (the 85,000 train rows of a
# COCO-sized store: 26 s in lists of 52,000, 2.7 s in lists of 1,024), so long lists are read in pieces
INDICES_PER_READ = 1024


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

    def statistics(self, rows, block: int | None = None):
        """Per-feature mean and standard deviation of the given rows, streamed in blocks of about
        ``BLOCK_BYTES`` (a COCO-sized spatial store is 15 GB; its statistics hold a few hundred MB at a time).

        Spatial grids give statistics per channel, over all cells. Non-finite values are refused:
        they would turn every loss into NaN many minutes later."""
        rows = np.sort(np.unique(np.asarray(rows)))
        block = block or self.rows_per_block(8)
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

    def rows_per_block(self, itemsize: int | None = None) -> int:
        """How many rows make about ``BLOCK_BYTES`` at ``itemsize`` bytes a number (default: the stored
        one): pooled stores stream thousands of rows at a time, spatial ones a few dozen."""
        numbers = int(np.prod(self.feature_shape))
        return max(1, BLOCK_BYTES // (numbers * (itemsize or self.dtype.itemsize)))

    @property
    def dtype(self):
        return self._features.dtype

    def rows(self, rows) -> np.ndarray:
        """Features of the given row numbers, in that order (h5py needs sorted unique indices)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, *self.feature_shape), self.dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        if len(unique) <= INDICES_PER_READ:
            return self._features[unique][inverse]
        out = np.empty((len(unique), *self.feature_shape), self.dtype)
        for i in range(0, len(unique), INDICES_PER_READ):
            out[i:i + INDICES_PER_READ] = self._features[unique[i:i + INDICES_PER_READ]]
        return out[inverse]

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


def _refuse_if_locked(path, error: Exception) -> None:
    """HDF5 locks a file another program has open for writing; that file is busy, not damaged."""
    if isinstance(error, OSError) and (error.errno == errno.EAGAIN or "unable to lock file" in str(error)):
        raise CaptioningError(f"{path} is open for writing in another program (HDF5 has locked it): close it "
                              "there (a notebook's h5py.File(..., 'a'), an HDF5 viewer) and run again. The file "
                              "itself is untouched.") from error
