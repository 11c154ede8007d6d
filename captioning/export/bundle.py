"""A run folder made self-contained: ``captioning export RUN --out DIR``.

The bundle is a run folder without checkpoints or logs, whose image encoder travels with it as
``encoder.keras``: the network that made the training features, saved whole (a keras.applications
CNN with its weights, a ``.keras`` encoder, a keras-hub preset's model), so captioning a photo needs
neither the weights file nor the path the feature store recorded. Photos still go through the
preprocessing the store recorded, before the encoder. Everything else is copied byte for byte, so
``config.json``'s sha256 record still vouches for each file, and ``Captioner.load(DIR)`` gives the
run's own captions with the run's default decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError

ENCODER_FILE = "encoder.keras"
EXPORT_FILE = "export.json"  # what a graph export (SavedModel, TFLite) is and where it came from
COPIED = ("model.keras", "vocab.json", "cross_entropy.keras", "neighbours.h5", "matcher.keras", "history.csv")
REQUIRED = ("model.keras", "vocab.json", "config.json")


@dataclasses.dataclass
class Export:
    out: Path
    format: str
    files: dict  # name → bytes
    notes: list

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def summary(self) -> str:
        mib = self.size / 2 ** 20
        listing = ", ".join(f"{n} {b / 2 ** 20:.1f} MiB" for n, b in sorted(self.files.items(), key=lambda f: -f[1]))
        return f"exported {self.format} to {self.out}: {mib:.1f} MiB ({listing})"


def is_export(folder) -> bool:
    """A folder an earlier ``export`` wrote (so writing there again may replace it)."""
    import json
    if (Path(folder) / EXPORT_FILE).is_file():
        return True
    try:
        return "export" in json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def check_out(out) -> Path:
    """``out`` if export may write there: a new name, an empty folder or an earlier export."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_export(out))):
        what = "a file" if not out.is_dir() else "a folder that is not an earlier export"
        raise CaptioningError(f"--out {out}: {what}, which export would replace. Give a new folder's name (or the "
                              "folder of an earlier export, to replace it).")
    return out


@contextlib.contextmanager
def publishing(out):
    """A temporary folder beside ``out`` that becomes ``out`` whole on success (replacing an earlier
    export), or vanishes on error: a kill never leaves half a bundle under the name asked for."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    for leftover in out.parent.glob(f".{out.name}.tmp-*"):  # a killed export's
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def export_bundle(run_dir, out, weights=None, allow_partial: bool = False) -> Export:
    """Write ``run_dir`` as a self-contained bundle at ``out``; ``weights`` as for ``Captioner.load``
    (the backbone's weights file, when the recorded one has moved)."""
    from captioning import __version__
    from captioning.features.backbones import file_sha256
    from captioning.inference.captioner import Captioner
    from captioning.run import save_model
    run_dir = Path(run_dir)
    check_out(out)  # before any work
    captioner = Captioner.load(run_dir, weights=weights, allow_partial=allow_partial)
    run = captioner.run
    for name in COPIED:
        if name in run.files and (run_dir / name).is_file():
            run.check_file(run_dir, name, "export a run whose files are its own.")
    bb, encoder = captioner.backbone
    with publishing(out) as tmp:
        for name in COPIED:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        save_model(encoder, tmp / ENCODER_FILE)
        _check_encoder(encoder, tmp / ENCODER_FILE, bb.input_size)
        run.files = {**run.files, ENCODER_FILE: file_sha256(tmp / ENCODER_FILE)}
        run.export = {"format": "bundle", "encoder": ENCODER_FILE, "from_run": str(run_dir.resolve()),
                      "captioning_version": __version__,
                      "encoder_made_from": run.feature_spec.describe()}
        run.save(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir()}
    notes = list(captioner.notes)
    missing = [n for n in ("neighbours.h5", "cross_entropy.keras", "matcher.keras") if n not in files]
    if missing:
        notes.append(f"{run_dir} has no {', '.join(missing)}: the bundle decodes as the run does without them.")
    return Export(Path(out), "bundle", files, notes)


def _check_encoder(encoder, path: Path, size: int) -> None:
    """The saved encoder must compute what the original does: refuse a bundle that would not."""
    from captioning.run import load_model
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    again = load_model(path)
    a, b = np.asarray(encoder.predict_on_batch(x)), np.asarray(again.predict_on_batch(x))
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
        raise CaptioningError(f"the image encoder saved as {ENCODER_FILE} does not compute what the run's encoder "
                              "does once loaded again (largest difference "
                              f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'of shape'}); this encoder cannot "
                              "be exported as a .keras file.")
