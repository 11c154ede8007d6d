"""Figures people put in reports: a grid of images with generated and reference captions."""

from __future__ import annotations

import textwrap
from pathlib import Path

from captioning import atomic

MAX_GRID = 24  # panels in one caption grid


def figure_path(path) -> Path:
    """``path`` if a figure can be written there, else ValueError saying why: checked before any work,
    so a typo costs nothing."""
    from matplotlib.backend_bases import FigureCanvasBase
    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"{path}: a figure's name ends in its format, one of {', '.join(sorted(formats))} "
                         f"(for example {path.stem or 'figure'}.png)")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / 'figure.png'}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"{path}: {blocking} is a file, not a folder; choose another path")
    return path


def save(fig, out) -> Path:
    """Writes a matplotlib figure whole or not at all, in the format its suffix names; makes the folder."""
    out = figure_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".").lower())
    return out


def caption_grid(items, out_png, columns: int = 3, title: str | None = None) -> Path:
    """``items``: (image path, generated caption, [reference captions]) triples, at most ``MAX_GRID``."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's inline backend stays as it was
    from PIL import Image

    items = list(items)
    if len(items) > MAX_GRID:
        raise ValueError(f"a caption grid shows at most {MAX_GRID} images (got {len(items)}); pass a slice")
    rows = max(1, -(-len(items) // columns))
    fig = Figure(figsize=(4.2 * columns, 5.2 * rows), dpi=110)
    axes = fig.subplots(rows, columns, squeeze=False)
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
    return save(fig, out_png)


def attention_figure(image, caption, grid, out_png, columns: int = 5) -> Path:
    """One panel per generated word with its attention map upsampled over the image (as in the
    Show, Attend and Tell figures). ``caption``: a ``Caption`` with ``attention`` (words, H·W)."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's inline backend stays as it was
    import numpy as np
    from PIL import Image

    if caption.attention is None:
        raise ValueError("this caption has no attention maps (the attention decoder and the transformer on a grid make them)")
    h, w = grid
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR))
    words = list(caption.words) + (["<end>"] if caption.finished else [])
    panels = 1 + len(words)
    rows = -(-panels // columns)
    fig = Figure(figsize=(2.6 * columns, 2.8 * rows), dpi=110)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(rgb)
    axes.flat[0].set_title("input", fontsize=10)
    for ax, word, alpha in zip(list(axes.flat)[1:], words, caption.attention):
        heat = Image.fromarray((alpha.reshape(h, w) / max(float(alpha.max()), 1e-12) * 255).astype(np.uint8))
        heat = np.asarray(heat.resize((224, 224), Image.BILINEAR)) / 255.0
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(word, fontsize=11)
    fig.suptitle(caption.text, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save(fig, out_png)
