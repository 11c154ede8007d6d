"""The run folder: everything needed to caption a raw image months later.

``model.keras`` (next-word model), ``vocab.json`` (with cleaning options), ``config.json``
(backbone, weights, preprocessing, pooling, feature shape, max length, decoder type and sizes,
training settings and results), ``history.csv``, ``training_curves.png``, ``checkpoints/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioning.errors import CaptioningError

CONFIG_FORMAT = "captioning-run"


def save_config(run_dir, config: dict) -> Path:
    path = Path(run_dir) / "config.json"
    path.write_text(json.dumps({"format": CONFIG_FORMAT, "version": 1, **config}, indent=2), encoding="utf-8")
    return path


def load_config(run_dir) -> dict:
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaptioningError(f"{run_dir}: not a run folder (no config.json). Train one with "
                              "`captioning fit ... --out RUN_DIR`.") from None
    except json.JSONDecodeError as e:
        raise CaptioningError(f"{path}: invalid JSON ({e})") from e
    if config.get("format") != CONFIG_FORMAT:
        raise CaptioningError(f"{path}: not a captioning run config")
    return config


def plot_history(history_csv, out_png) -> Path:
    """Loss and validation loss per epoch, learning rate on a second axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    h = pd.read_csv(history_csv)
    epochs = h["epoch"] + 1
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(epochs, h["loss"], "o-", label="training loss")
    if "val_loss" in h:
        ax.plot(epochs, h["val_loss"], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats / word)")
    ax.grid(alpha=0.3)
    if "learning_rate" in h:
        ax2 = ax.twinx()
        ax2.plot(epochs, h["learning_rate"], ":", color="grey", label="learning rate")
        ax2.set_yscale("log")
        ax2.set_ylabel("learning rate")
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.set_title(f"Training curves — {Path(history_csv).parent.name}")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
