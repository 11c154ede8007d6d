"""Figures people put in reports: a grid of images with generated and reference captions."""

from __future__ import annotations

import textwrap
from pathlib import Path


def caption_grid(items, out_png, columns: int = 3, title: str | None = None) -> Path:
    """``items``: (image path, generated caption, [reference captions]) triples."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    items = list(items)
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 5.2 * rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, generated, refs) in zip(axes.flat, items):
        try:
            with Image.open(path) as im:
                ax.imshow(im.convert("RGB"))
        except OSError:
            ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", transform=ax.transAxes)
        text = "\n".join(textwrap.wrap(generated or "(empty)", 42))
        ref = "\n".join(textwrap.wrap(f"ref: {refs[0]}", 46)) if refs else ""
        ax.set_title(text, fontsize=9.5, fontweight="bold", loc="left")
        ax.text(0, -0.03, ref, fontsize=8, color="dimgray", va="top", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1), h_pad=3.0)
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
