"""``training_curves.png``: loss and validation loss per epoch, the learning rate on a second axis."""

from __future__ import annotations

from pathlib import Path

from captioning.figures import save


def plot_history(rows: list, out_png, title: str = "Training curves") -> Path:
    """``rows``: one dict per epoch with ``epoch``, ``loss`` and optionally ``val_loss``, ``learning_rate``."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's inline backend stays as it was

    epochs = [r["epoch"] + 1 for r in rows]
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(epochs, [r["loss"] for r in rows], "o-", label="training loss")
    if rows and "val_loss" in rows[0]:
        ax.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats / word)")
    ax.grid(alpha=0.3)
    if rows and "learning_rate" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(epochs, [r["learning_rate"] for r in rows], ":", color="grey", label="learning rate")
        ax2.set_yscale("log")
        ax2.set_ylabel("learning rate")
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, out_png)
