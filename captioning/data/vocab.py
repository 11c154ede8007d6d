"""Word ↔ id mapping, saved as JSON together with the cleaning options that produced it."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from captioning import atomic
from captioning.data.text import END_TOKEN, START_TOKEN, CleaningOptions, tokenize
from captioning.errors import DAMAGED_RUN_FILE, CaptioningError

PAD, UNK = "<pad>", "<unk>"
_FORMAT = "captioning-vocabulary"


class Vocabulary:
    """Ids: ``<pad>`` = 0, ``<unk>`` = 1, start = 2, end = 3, then words by frequency."""

    pad_id, unk_id, start_id, end_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str], cleaning: CleaningOptions = CleaningOptions(),
                 min_count: int = 1, counts: dict[str, int] | None = None):
        reserved = [PAD, UNK, START_TOKEN, END_TOKEN]
        words = [w for w in words if w not in reserved]
        self.tokens: list[str] = reserved + list(words)
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary words must be unique")
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.cleaning = cleaning
        self.min_count = min_count
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 1,
              cleaning: CleaningOptions = CleaningOptions()) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = collections.Counter(t for tokens in token_lists for t in tokens)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, cleaning, min_count, {w: counts[w] for w in kept})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, tokens: Sequence[str], markers: bool = True) -> list[int]:
        ids = [self.index.get(t, self.unk_id) for t in tokens]
        return [self.start_id, *ids, self.end_id] if markers else ids

    def encode_caption(self, caption: str, markers: bool = True) -> list[int]:
        """Clean a raw caption with this vocabulary's options, then encode it."""
        return self.encode(tokenize(caption, self.cleaning), markers)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first end token, without start/pad markers."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.tokens[i])
        return words

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "tokens": self.tokens, "min_count": self.min_count,
                "cleaning": self.cleaning.to_dict(), "counts": self.counts}

    def save(self, path) -> Path:
        return atomic.write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path) -> "Vocabulary":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CaptioningError(f"{path}: cannot read vocabulary ({e}); {DAMAGED_RUN_FILE}.") from e
        if (not isinstance(d, dict) or d.get("format") != _FORMAT
                or d.get("tokens", [None])[:4] != [PAD, UNK, START_TOKEN, END_TOKEN]):
            raise CaptioningError(f"{path}: not a captioning vocabulary file; {DAMAGED_RUN_FILE}.")
        return cls(d["tokens"][4:], CleaningOptions.from_dict(d.get("cleaning")),
                   d.get("min_count", 1), d.get("counts"))

    def __eq__(self, other) -> bool:
        return (isinstance(other, Vocabulary) and self.tokens == other.tokens
                and self.cleaning == other.cleaning)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens, min_count={self.min_count})"


def max_caption_length(token_lists: Iterable[Sequence[str]], percentile: float | None = None) -> int:
    """Longest caption in tokens, start and end markers included; optionally a percentile cap."""
    lengths = np.array([len(t) + 2 for t in token_lists])
    if lengths.size == 0:
        raise CaptioningError("no captions to measure: the caption table is empty")
    if percentile is None:
        return int(lengths.max())
    # "lower": a length some caption really has, so a single outlier in a small set is still cut
    return int(np.percentile(lengths, percentile, method="lower"))
