"""``captioning info``: what is in a data set, and what is wrong with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from captioning.data.formats import IMAGE_SUFFIXES, SPLITS, CaptionDataset
from captioning.data.text import CleaningOptions, tokenize
from captioning.data.vocab import Vocabulary


@dataclasses.dataclass
class DatasetSummary:
    format: str
    source: Path
    images_root: Path
    per_split: dict  # split → (images, captions)
    unsplit_images: int
    vocabulary_size: int
    min_count: int
    length_percentiles: dict  # percentile → tokens (markers excluded)
    missing_on_disk: list
    never_captioned: list
    notes: list

    def __str__(self) -> str:
        lines = [f"{self.source} ({self.format}); images under {self.images_root}"]
        for split, (n_img, n_cap) in self.per_split.items():
            lines.append(f"  {split:<6} {n_img:>7,} images {n_cap:>8,} captions")
        if self.unsplit_images:
            lines.append(f"  {'none':<6} {self.unsplit_images:>7,} images in no split (not used)")
        lines.append(f"vocabulary (train, min count {self.min_count}): {self.vocabulary_size:,} tokens "
                     "including <pad> <unk> startseq endseq")
        pct = ", ".join(f"p{k}={v:g}" for k, v in self.length_percentiles.items())
        lines.append(f"caption length in words: {pct}")
        for label, items in (("captioned but missing on disk", self.missing_on_disk),
                             ("on disk but never captioned", self.never_captioned)):
            shown = ", ".join(items[:5]) + (" …" if len(items) > 5 else "")
            lines.append(f"{label}: {len(items):,}" + (f" ({shown})" if items else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def drop_wordless(table, cleaning: CleaningOptions, notes: list, what: str = ""):
    """The captions that clean to no word at all (punctuation only) teach nothing and score nothing:
    dropped, and a note says how many (``fit`` and ``info`` alike)."""
    empty = table["caption"].map(lambda c: not tokenize(c, cleaning))
    if empty.any():
        notes.append(f"{int(empty.sum())} {what + ' ' if what else ''}captions have no words after cleaning "
                     f"(e.g. {table['caption'][empty].iloc[0]!r}): skipped.")
        table = table[~empty]
    return table


def summarize(dataset: CaptionDataset, min_count: int = 5,
              cleaning: CleaningOptions = CleaningOptions()) -> DatasetSummary:
    notes = list(dataset.notes)
    t = drop_wordless(dataset.table, cleaning, notes)
    if t.empty:
        notes.append("no caption has a word left after cleaning: check the captions file (are the captions in the "
                     "expected column?); `captioning fit` refuses a data set like this.")
        t = dataset.table.iloc[:0]
    per_split = {s: (t.loc[t.split == s, "image"].nunique(), int((t.split == s).sum())) for s in SPLITS}
    tokens = [tokenize(c, cleaning) for c in t["caption"]]
    train_tokens = [tok for tok, s in zip(tokens, t["split"]) if s == "train"] or tokens
    vocab = Vocabulary.build(train_tokens, min_count, cleaning)
    lengths = np.array([len(x) for x in tokens] or [0])
    root = dataset.images_root
    on_disk = set()
    if root.is_dir():
        on_disk = {str(p.relative_to(root).as_posix()) for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    captioned = set(dataset.table["image"])
    return DatasetSummary(
        format=dataset.format, source=dataset.source, images_root=root, per_split=per_split,
        unsplit_images=t.loc[t.split == "", "image"].nunique(), vocabulary_size=len(vocab),
        min_count=min_count,
        length_percentiles={p: float(np.percentile(lengths, p)) for p in (50, 90, 95, 99, 100)},
        missing_on_disk=sorted(captioned - on_disk), never_captioned=sorted(on_disk - captioned),
        notes=notes)
