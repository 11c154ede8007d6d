"""What the CLI shows people: progress bars, counts in words (Keras' quiet import: ``backend``)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '3 images': summaries read as sentences."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def progress(iterable=None, total=None, desc="", unit="it", disable=None):
    """A tqdm bar with rate and ETA; off when not a terminal unless asked for."""
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=disable, mininterval=0.5, smoothing=0.1)
