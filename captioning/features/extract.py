"""Stage 1: run a CNN over an image folder once and cache one vector per image.

Decoding and resizing run on a thread pool (Pillow releases the GIL) one batch ahead of the model,
so the CPU/GPU never waits for JPEGs; each finished batch is committed to the store at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from captioning import __version__, interrupt
from captioning.backend import import_keras
from captioning.console import count, progress
from captioning.errors import CaptioningError, UsageError
from captioning.features.backbones import (build_model, describe_weights, embed, external, get_backbone,
                                          mixed_precision_policy)
from captioning.features import hub
from captioning.features.images import RESIZE, ImageError, load_image
from captioning.features.store import FeatureStore
from captioning.features.writer import DiskFull, FeatureStoreWriter
from captioning.distribute import place, release
from captioning.data.formats import IMAGE_SUFFIXES


@dataclasses.dataclass
class ExtractionResult:
    store: FeatureStore
    written: int
    skipped: int
    failed: list  # (image id, reason) from this run
    seconds: float
    placement: str = "one device"

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        where = "" if self.placement == "one device" else f", {self.placement}"
        lines = [f"Wrote the features of {count(self.written, 'image')} to {self.store.path} in {self.seconds:.1f} s "
                 f"({rate:.1f} images/s{where}); {self.skipped} already there were kept; {len(self.failed)} "
                 f"failed. The store now holds {count(len(self.store), 'image')}: {self.store.describe()}."]
        for image_id, reason in self.failed[:10]:
            lines.append(f"  failed: {image_id}: {reason}")
        if len(self.failed) > 10:
            lines.append(f"  … and {len(self.failed) - 10} more (listed in the store's failed table)")
        return "\n".join(lines)


def list_images(images_dir, captions=None, image_list=None) -> list[str]:
    """Image ids (paths relative to ``images_dir``) in a stable order."""
    root = Path(images_dir)
    if not root.is_dir():
        raise CaptioningError(f"{root}: no such images folder")
    if captions is not None:
        from captioning.data import load_captions
        return load_captions(captions, images_dir=root).images()
    if image_list is not None:
        from captioning.data.formats import checked_image_name
        try:
            lines = Path(image_list).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise CaptioningError(f"--image-list {image_list}: cannot read it ({e})") from e
        return list(dict.fromkeys(checked_image_name(line, Path(image_list), n)
                                  for n, line in enumerate(lines, 1) if line.strip()))
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def default_output(images_dir, backbone: str, pooling: str, shard=None) -> Path:
    root = Path(images_dir).resolve()
    name = root.parent.name if root.name.lower() in ("images", "flicker8k_dataset", "flickr30k_images") else root.name
    suffix = ("_spatial" if pooling == "spatial" else "") + (f"_shard{shard[0]}of{shard[1]}" if shard else "")
    return Path("features") / f"{name.lower()}_{backbone}{suffix}.h5"


UNDECODABLE = ("its file name is not valid UTF-8 (shown here with \\x escapes), which a feature store cannot "
               "hold; rename the file (e.g. with convmv) and run the same command again")


def _storable(ids) -> tuple[list, list]:
    """(ids a store can hold, the escaped names of those it cannot): a name that is not valid UTF-8
    reaches Python with surrogate escapes, which HDF5 strings refuse."""
    good, escaped = [], []
    for i in ids:
        try:
            i.encode("utf-8")
            good.append(i)
        except UnicodeEncodeError:
            escaped.append(i.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    return good, escaped


def _check_encoder_options(backbone, loader, weights, mixed_precision: bool, image_size) -> None:
    if loader and weights is not None:
        raise UsageError(f"--weights {weights}: the backbone {backbone} brings its own weights; leave out --weights.")
    if loader and mixed_precision:
        raise UsageError(f"--mixed-precision: the backbone {backbone} computes in the dtype policy it was saved "
                         "with; save it under a mixed policy instead, or leave out --mixed-precision.")
    if not loader and image_size:
        raise UsageError(f"--image-size is for .keras files and keras-hub presets that take images of any size; "
                         f"{backbone} takes {get_backbone(backbone).input_size} px.")


def _submit_batch(pool, root: Path, ids, size):
    return ids, [pool.submit(load_image, root / i, size) for i in ids]


def _collect_batch(ids, futures):
    ok_ids, arrays, failed = [], [], []
    for image_id, fut in zip(ids, futures):
        try:
            arrays.append(fut.result())
            ok_ids.append(image_id)
        except ImageError as e:
            failed.append((image_id, str(e)))
    return ok_ids, arrays, failed


def extract_features(images_dir, backbone: str = "resnet50", weights=None, out=None,
                     batch_size: int = 32, pooling: str = "avg", dtype: str = "float32", captions=None,
                     image_list=None, limit: int | None = None, overwrite: bool = False,
                     mixed_precision: bool = False, workers: int = 0, seed: int = 0,
                     shard: tuple[int, int] | None = None, show_progress=None,
                     distribute: str = "auto", image_size: int | None = None) -> ExtractionResult:
    """Extract features for every image under ``images_dir`` (or those a data set captions) into
    an HDF5 ``FeatureStore``; re-running with the same ``out`` resumes.

    ``backbone``: a keras.applications name with ``weights`` ('imagenet' when None, 'none' or a
    weights file), or the path of an image model saved as ``.keras``, which brings its own weights
    and preprocessing (``captioning.features.keras_file``; ``image_size`` for one that takes any).

    ``shard=(k, n)`` takes every n-th image from the k-th (1-based) of the listed order: n processes
    on n GPUs or machines each write their own store, and ``merge_features`` joins them.
    ``distribute`` splits each batch over this machine's devices (``auto``: every GPU when there
    are several; ``mirrored``; ``none``), as ``fit --distribute`` does."""
    loader = external(backbone)  # a .keras file or a keras-hub preset, else a keras.applications name
    _check_encoder_options(backbone, loader, weights, mixed_precision, image_size)
    bb = None if loader else get_backbone(backbone)
    weights = weights or "imagenet"
    root = Path(images_dir)
    ids = list_images(root, captions, image_list)
    if limit is not None:
        ids = ids[:limit]
    if not ids:
        raise CaptioningError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    if shard is not None:
        k, n = shard
        if not 1 <= k <= n:
            raise UsageError(f"--shard {k}/{n}: K must be between 1 and N")
        ids = ids[k - 1::n]
    out = Path(out) if out else default_output(root, Path(str(backbone)).stem.replace(hub.PREFIX, "") if loader else bb.name,
                                                 pooling, shard)
    if (captions is not None or image_list is not None) and not out.exists() \
            and not any((root / i).is_file() for i in ids):  # any() stops at the first: cheap when they match
        named = f"--image-list {image_list}" if image_list is not None else str(captions)
        raise CaptioningError(f"none of the {len(ids)} images that {named} names is in {root} (e.g. {ids[0]}); "
                              "give the images folder these captions belong to.")
    keras = import_keras()
    policy = mixed_precision_policy() if mixed_precision else "float32"
    # The network is built once, before the store: its input and output shapes are part of the identity.
    if distribute == "multi-worker":
        raise UsageError("extract-features has no --distribute multi-worker: run one process per machine with "
                         "--shard K/N, then captioning merge-features.")
    made_by = None if loader else describe_weights(weights, seed)  # a missing weights file named before building
    placement = place(distribute, cluster=False)  # a TF_CONFIG left in the environment is for fit
    with placement.scope():
        if loader:
            bb, model, pooling = loader.load(backbone, pooling, image_size)
            made_by = loader.describe(backbone)
        else:
            model = build_model(bb, weights, pooling, seed, policy)
    attrs = {"backbone": bb.name, **made_by, "pooling": pooling,
             "input_size": bb.input_size, "preprocessing": bb.preprocessing, "resize": RESIZE, "color": "RGB (alpha composited on white)", "dtype": dtype,
             "captioning_version": __version__, "keras_version": keras.__version__,
             "backend": keras.backend.backend(), "compute_dtype_policy": policy,
             "images_root": str(root.resolve()), "shard": f"{shard[0]}/{shard[1]}" if shard else "",
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    shape = tuple(int(d) for d in model.output.shape[1:])
    attrs["feature_shape"] = [shape[0] * shape[1], shape[2]] if pooling == "spatial" else list(shape)
    if pooling == "spatial":
        attrs["grid"] = [shape[0], shape[1]]
    attrs["feature_dim"] = int(attrs["feature_shape"][-1])
    writer = FeatureStoreWriter(out, attrs, overwrite=overwrite)
    ids, unnamed = _storable(ids)
    if unnamed:  # recorded once as failed, under a readable escaped name
        writer.write_batch([], np.zeros((0, *attrs["feature_shape"]), dtype),
                           [(i, UNDECODABLE) for i in unnamed if i not in writer.done])
    todo = [i for i in ids if i not in writer.done]
    skipped = len(ids) - len(todo)
    failed_all = []
    start = time.perf_counter()
    written = 0
    completed = full = False
    workers = workers or max(2, os.cpu_count() or 2)
    batch_size = max(1, min(batch_size, len(todo)))  # batches are padded to this: never past the work itself
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = progress(total=len(todo), desc=f"{bb.name} features", unit="img",
                   disable=None if show_progress is None else not show_progress)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending = _submit_batch(pool, root, batches[0], bb.input_size) if batches else None
            for k in range(len(batches)):
                ok_ids, arrays, failed = _collect_batch(*pending)
                # Decode the next batch while the model works on this one.
                pending = (_submit_batch(pool, root, batches[k + 1], bb.input_size)
                           if k + 1 < len(batches) else None)
                feats = np.zeros((0, *attrs["feature_shape"]), dtype)
                if arrays:
                    feats = embed(model, bb, arrays, pooling, batch_size, placement.replicas).astype(dtype)
                writer.write_batch(ok_ids, feats, failed)
                interrupt.check()  # after the batch is safe: a Ctrl-C swallowed on the way is raised here
                written += len(ok_ids)
                failed_all += failed
                bar.update(len(batches[k]))
        completed = True
    except DiskFull:
        full = True  # merging would need more room still: the batches written stay as segments
        raise
    finally:
        bar.close()
        try:
            if full:
                writer.release()
            else:  # also on Ctrl-C or another error: merge what was done so nothing finished is lost
                store = writer.finalize(completed=completed)  # every listed image stored or recorded as failed
        finally:
            release(placement)
    failed_all = [(i, UNDECODABLE) for i in unnamed] + failed_all
    return ExtractionResult(store, written, skipped, failed_all, time.perf_counter() - start, placement.describe())
