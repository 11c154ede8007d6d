"""Crash-safe checkpoints: after every epoch the run folder holds a complete, resumable state.

Each epoch writes ``checkpoints/best.keras`` (when validation loss improved), ``last.keras``,
``history.csv`` and finally ``state.json``, each under a temporary name and renamed. The epoch
counts only once ``state.json`` names it, so a kill at any instant resumes from the last complete
epoch. ``state.json`` also records every epoch's row: which checkpoint is the best is decided from
it, and ``history.csv`` (a report people open, plot and sometimes edit) is rewritten from it. The state also holds what the callbacks remember (early stopping's and the learning-rate
schedule's counters), and dropout is reseeded from (seed, epoch) at every epoch, so a resumed
run computes the same epochs as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from captioning import atomic
from captioning.backend import import_keras
from captioning.errors import CaptioningError

keras = import_keras()

_EARLY = ("wait", "best", "best_epoch", "stopped_epoch")
_PLATEAU = ("wait", "best", "cooldown_counter")


def read_state(checkpoints: Path) -> dict:
    path = Path(checkpoints) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        int(state["epochs_done"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaptioningError(f"{path}: unreadable training state ({e}); start the run again in a new folder.") from e


def history_rows(path: Path, upto: int | None = None) -> list[dict]:
    """Per-epoch rows of ``history.csv`` (numbers as floats, ``epoch`` as int), epochs below ``upto``."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, reader = [], None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for r in reader:
                if None in r or None in r.values() or "epoch" not in r:
                    raise ValueError("its columns do not match the header")
                rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()})
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        where = f"{path}, line {reader.line_num}" if reader and reader.line_num else str(path)
        raise CaptioningError(f"{where}: not a table `captioning fit` wrote ({e}).") from e
    return [r for r in rows if upto is None or r["epoch"] < upto]


def recorded_rows(state: dict | None, key: str, csv_path: Path, epochs: range) -> list[dict]:
    """The rows of ``epochs`` that ``state.json`` records under ``key``; a run from before 0.7.1
    recorded them only in ``csv_path``, which must then hold every one of them."""
    if not epochs:
        return []
    if state and key in state:
        rows = [{k: (int(v) if k == "epoch" else math.nan if v is None else float(v)) for k, v in r.items()}
                for r in state[key]]
    else:
        rows = history_rows(csv_path)
    by_epoch = {r["epoch"]: r for r in rows}
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise CaptioningError(
            f"{csv_path} lacks epoch {missing[0]} of the {len(epochs)} that checkpoints/state.json counts as "
            "complete: the file was edited or damaged. Put back the original, or start the run again in a "
            "new folder.")
    return [by_epoch[e] for e in epochs]


def json_rows(rows: list[dict]) -> list[dict]:
    """Rows for ``state.json``: NaN and infinities (not JSON) as null."""
    return [{k: (v if isinstance(v, int) or math.isfinite(v) else None) for k, v in r.items()} for r in rows]


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def reseed_dropout(model, seed: int, epoch: int) -> None:
    """Every random layer's generator restarts from (seed, epoch, its position): epochs are repeatable."""
    generators = [sg for layer in model._flatten_layers(include_self=True)  # Keras tracks them per layer
                  for sg in getattr(layer, "_seed_generators", [])]
    for i, sg in enumerate(generators):
        value = np.random.default_rng([seed, epoch, i]).integers(0, 2 ** 31 - 1)
        sg.state.assign(np.array([value, 0]).astype(keras.backend.standardize_dtype(sg.state.dtype)))


class RunCheckpoints(keras.callbacks.Callback):
    """Placed after ``early`` and ``plateau`` in the callback list, so it saves their updated state."""

    def __init__(self, out, seqs, seed: int, early, plateau, state: dict | None, rows: list,
                 monitor: str = "val_loss"):
        super().__init__()
        self.monitor, self.sign = monitor, (-1.0 if monitor == "val_bleu4" else 1.0)  # lower signed is better
        self.out, self.dir = Path(out), Path(out) / "checkpoints"
        self.seqs, self.seed, self.early, self.plateau = seqs, seed, early, plateau
        self.state, self.rows = state, rows
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_train_begin(self, logs=None):  # after the other callbacks reset themselves
        if self.state:
            for k in _EARLY:
                setattr(self.early, k, self.state["early_stopping"][k])
            for k in _PLATEAU:
                setattr(self.plateau, k, self.state["plateau"][k])

    def on_epoch_begin(self, epoch, logs=None):
        for s in self.seqs:  # the epoch number, not call count, decides the shuffle
            s.set_epoch(epoch)
        reseed_dropout(self.model, self.seed, epoch)
        self._learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}, "learning_rate": self._learning_rate}
        self.rows.append(row)
        from captioning.run import save_model
        score = [self.sign * r.get(self.monitor, np.nan) for r in self.rows]
        if np.isfinite(score[-1]) and score[-1] <= np.nanmin(score):
            save_model(self.model, self.dir / "best.keras")
        save_model(self.model, self.dir / "last.keras")
        write_csv(self.out / "history.csv", self.rows)
        state = {"epochs_done": epoch + 1, "stopped": bool(self.model.stop_training), "history": json_rows(self.rows),
                 "early_stopping": {k: _plain(getattr(self.early, k)) for k in _EARLY},
                 "plateau": {k: _plain(getattr(self.plateau, k)) for k in _PLATEAU}}
        atomic.write_text(self.dir / "state.json", json.dumps(state))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v
