"""Readers for the common caption data sets, all returning one ``CaptionDataset``.

Supported: Flickr8k original (``Flickr8k.token.txt`` + split lists), the Flickr8k Kaggle layout
(``captions.txt``), Flickr30k (``results.csv`` and the token format), MS-COCO 2014 caption JSON and
the Karpathy split files (``dataset_*.json``). ``detect_format`` picks one from a file or folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import pandas as pd

from captioning.errors import CaptioningError, DataFormatError

SPLITS = ("train", "dev", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_IMAGE_DIRS = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images")
_SPLIT_LISTS = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                "test": "Flickr_8k.testImages.txt"}
_TOKEN_FILES = ("Flickr8k.token.txt", "results_20130124.token", "Flickr30k.token.txt")
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}
_TOKEN_KEY = re.compile(r"^(?P<image>.+?)#(?P<n>\d+)$")


@dataclasses.dataclass
class CaptionDataset:
    """Captions as one table with columns ``image``, ``caption``, ``split``.

    ``image`` is a path relative to ``images_root``; ``split`` is train/dev/test, or "" for images
    the data set's split lists do not mention. ``notes`` records what the reader skipped or noticed.
    """

    table: pd.DataFrame
    images_root: Path
    format: str
    source: Path
    name: str
    notes: list[str] = dataclasses.field(default_factory=list)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise CaptioningError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self.table[self.table["split"] == name]

    def images(self, split: str | None = None) -> list[str]:
        table = self.table if split is None else self.split(split)
        return list(dict.fromkeys(table["image"]))

    def references(self, split: str) -> dict[str, list[str]]:
        """image → all its raw captions, in file order."""
        return {img: list(g["caption"]) for img, g in self.split(split).groupby("image", sort=False)}

    def missing_images(self) -> list[str]:
        """Captioned images with no file under ``images_root``."""
        return [i for i in self.images() if not (self.images_root / i).is_file()]


def checked_image_name(name: str, path: Path, line) -> str:
    """Refuse image names that would escape the images root."""
    name = name.strip()
    if not name:
        raise DataFormatError(path, line, "empty image name")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in p.parts:
        raise DataFormatError(path, line, f"image name {name!r} points outside the images folder",
                              "Image names must be relative paths inside the images root.")
    return str(p)


def _read_lines(path: Path):
    """(line number, text) for non-blank lines; handles a UTF-8 BOM, CRLF and no final newline."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, text_line_of(path, e.start), "not UTF-8 text",
                              "Re-save the file as UTF-8.") from e
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield i, line


def text_line_of(path: Path, byte_offset: int) -> int:
    return path.read_bytes()[:byte_offset].count(b"\n") + 1


def _read_token_file(path: Path):
    rows, empty = [], 0
    for n, line in _read_lines(path):
        key, sep, caption = line.partition("\t")
        if not sep:
            raise DataFormatError(path, n, "expected 'IMAGE.jpg#N<TAB>caption' but found no tab",
                                  f"The line reads: {line[:80]!r}")
        m = _TOKEN_KEY.match(key.strip())
        image = checked_image_name(m.group("image") if m else key, path, n)
        if not caption.strip():
            empty += 1
            continue
        rows.append((image, caption.strip()))
    return rows, empty


def _read_kaggle_csv(path: Path):
    rows, empty = [], 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise DataFormatError(path, 1, f"expected the header 'image,caption', found {header}")
        last = reader.line_num
        for fields in reader:
            n, start, last = reader.line_num, last + 1, reader.line_num
            if any("\n" in x or "\r" in x for x in fields):  # a quote left open swallows the lines after it
                raise DataFormatError(path, start, f"a quoted caption runs over lines {start}–{n}: an opening quote "
                                      "has no closing quote", "Close or remove the stray '\"' on that line.")
            if not fields or not any(x.strip() for x in fields):
                continue
            if len(fields) < 2:
                raise DataFormatError(path, n, "expected 'image,caption' (2 fields), found 1",
                                      "Captions containing commas must be quoted.")
            # An unquoted comma inside the caption splits it; join the pieces back.
            image, caption = fields[0], ",".join(fields[1:])
            image = checked_image_name(image, path, n)
            if not caption.strip():
                empty += 1
                continue
            rows.append((image, caption.strip()))
    return rows, empty


def _read_flickr30k_csv(path: Path):
    rows, empty = [], 0
    lines = _read_lines(path)
    first = next(lines, (1, ""))[1]
    if "|" not in first:
        raise DataFormatError(path, 1, "expected the header 'image_name| comment_number| comment'")
    for n, line in lines:
        parts = line.split("|", 2)
        if len(parts) != 3:
            raise DataFormatError(path, n, f"expected 3 '|'-separated fields, found {len(parts)}")
        image = checked_image_name(parts[0], path, n)
        if not parts[2].strip():
            empty += 1
            continue
        rows.append((image, parts[2].strip()))
    return rows, empty


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg}") from e


def _json_structure(reader):
    """A JSON file of the right name but the wrong shape (a list where a dict belongs…) is a format error."""
    def read(path, *args):
        try:
            return reader(path, *args)
        except (TypeError, AttributeError, KeyError) as e:
            raise DataFormatError(path, None, f"unexpected JSON structure ({type(e).__name__}: {e})",
                                  "Compare the file with the format's documented layout (docs/formats.md).") from e
    return read


@_json_structure
def _read_coco(path: Path, prefix: str):
    d = _load_json(path)
    if not isinstance(d, dict) or "annotations" not in d or "images" not in d:
        raise DataFormatError(path, None, "not a COCO captions file (needs 'images' and 'annotations')")
    names = {}
    for i, im in enumerate(d["images"]):
        name = im.get("file_name")
        if name is None or "id" not in im:
            raise DataFormatError(path, None, f"images[{i}] has no 'id' or 'file_name'")
        names[im["id"]] = checked_image_name(f"{prefix}/{name}" if prefix else name, path, f"images[{i}]")
    rows, empty = [], 0
    for i, ann in enumerate(d["annotations"]):
        if ann.get("image_id") not in names:
            raise DataFormatError(path, None, f"annotations[{i}] refers to unknown image_id "
                                  f"{ann.get('image_id')!r}")
        caption = (ann.get("caption") or "").strip()
        if not caption:
            empty += 1
            continue
        rows.append((names[ann["image_id"]], caption))
    return rows, empty


@_json_structure
def _read_karpathy(path: Path):
    d = _load_json(path)
    if not isinstance(d, dict) or "images" not in d:
        raise DataFormatError(path, None, "not a Karpathy split file (needs 'images')")
    rows, empty, unsentenced = [], 0, 0
    for i, im in enumerate(d["images"]):
        where = f"images[{i}]"
        split = _KARPATHY_SPLITS.get(im.get("split"))
        if split is None:
            raise DataFormatError(path, None, f"{where} has split {im.get('split')!r}; expected one of "
                                  f"{', '.join(_KARPATHY_SPLITS)}")
        name = im.get("filename")
        if not name:
            raise DataFormatError(path, None, f"{where} has no 'filename'")
        if im.get("filepath"):
            name = f"{im['filepath']}/{name}"
        name = checked_image_name(name, path, where)
        unsentenced += not im.get("sentences")
        for s in im.get("sentences", []):
            caption = (s.get("raw") or " ".join(s.get("tokens", []))).strip()
            if not caption:
                empty += 1
                continue
            rows.append((name, caption, split))
    notes = [f"{unsentenced} images have no sentences and are left out."] if unsentenced else []
    return rows, empty, d.get("dataset"), notes


def _find_images_root(folder: Path, images_dir) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    for name in _IMAGE_DIRS:
        if (folder / name).is_dir():
            return folder / name
    return folder


def _split_lists(folder: Path) -> dict[str, str]:
    split_of = {}
    for split, fname in _SPLIT_LISTS.items():
        p = folder / fname
        if p.is_file():
            for n, line in _read_lines(p):
                split_of[checked_image_name(line, p, n)] = split
    return split_of


def seeded_split(images, seed: int = 0, holdout: float = 0.125, max_holdout: int = 1000) -> dict:
    """train/dev/test for data sets that ship without split lists: dev and test each get
    ``min(max_holdout, round(holdout × n))`` images, at least one from 3 images on, chosen by a seeded shuffle."""
    images = sorted(set(images))
    order = np.random.default_rng(seed).permutation(len(images))
    k = min(max_holdout, max(1, int(round(holdout * len(images))))) if len(images) >= 3 else 0
    split_of = {}
    for rank, i in enumerate(order):
        split_of[images[i]] = "test" if rank < k else "dev" if rank < 2 * k else "train"
    return split_of


# --- one loader per format: (path, captions file, images_dir, split seed) →
#     (rows of (image, caption, split), empty captions, images root, data-set name, notes) -----------

def _load_coco(path: Path, file: Path, images_dir, split_seed: int):
    folder = file.parent
    files = sorted(folder.glob("captions_*.json")) if path.is_dir() else [file]
    root = Path(images_dir) if images_dir else (folder.parent if folder.name == "annotations" else folder)
    rows, empty, val_images, notes = [], 0, [], []
    for f in files:
        which = "val" if "val" in f.name else "train"
        prefix = f.stem.replace("captions_", "")  # train2014 / val2014
        if not (root / prefix).is_dir():
            prefix = ""
        r, e = _read_coco(f, prefix)
        empty += e
        rows += [(img, cap, "train" if which == "train" else None) for img, cap in r]
        if which == "val":
            val_images += [img for img, _ in r]
    val = sorted(set(val_images))
    order = np.random.default_rng(split_seed).permutation(len(val))
    val_split = {val[i]: ("dev" if rank < len(val) // 2 else "test") for rank, i in enumerate(order)}
    rows = [(i, c, s or val_split[i]) for i, c, s in rows]
    if val:
        notes.append("COCO val2014 images were split in seeded halves into dev and test "
                     "(use the Karpathy split file for the standard 5,000/5,000).")
    return rows, empty, root, "coco", notes


def _load_karpathy(path: Path, file: Path, images_dir, split_seed: int):
    rows, empty, name, notes = _read_karpathy(file)
    return (rows, empty, _find_images_root(file.parent, images_dir),
            (name or file.stem.replace("dataset_", "")).lower(), notes)


def _flickr_style(reader):
    """Flat caption files: the split lists beside them when present, else a seeded split."""
    def load(path: Path, file: Path, images_dir, split_seed: int):
        folder, notes = file.parent, []
        rows, empty = reader(file)
        split_of = _split_lists(folder)
        if split_of:
            unsplit = sorted({img for img, _ in rows} - set(split_of))
            if unsplit:
                notes.append(f"{len(unsplit)} captioned images are in no split list and are not "
                             f"used for train/dev/test (e.g. {', '.join(unsplit[:3])}).")
            uncaptioned = sorted(set(split_of) - {img for img, _ in rows})
            if uncaptioned:
                notes.append(f"{len(uncaptioned)} images named in the split lists have no caption "
                             f"(e.g. {', '.join(uncaptioned[:3])}).")
        else:
            split_of = seeded_split([img for img, _ in rows], split_seed)
            notes.append(f"no split lists found: seeded split (seed {split_seed}) of "
                         f"{len(split_of)} images into train/dev/test.")
        rows = [(img, cap, split_of.get(img, "")) for img, cap in rows]
        return rows, empty, _find_images_root(folder, images_dir), folder.name.lower() or "flickr", notes
    return load


def _load_flickr30k(path: Path, file: Path, images_dir, split_seed: int):
    reader = _read_flickr30k_csv if file.suffix == ".csv" else _read_token_file
    return _flickr_style(reader)(path, file, images_dir, split_seed)


@dataclasses.dataclass(frozen=True)
class Format:
    """One caption layout: which files in a folder are its captions (glob patterns, in order), how to
    tell a lone captions file of it (``recognises(path, first_line)``), and how to ``load`` it."""

    name: str
    files: tuple
    recognises: Callable
    load: Callable


def _is_json(prefix: str, has_annotations: bool):
    def recognises(path: Path, first_line: str) -> bool:
        name = path.name.lower()
        if not name.endswith(".json"):
            return False
        if name.startswith(("dataset_", "captions_")):
            return name.startswith(prefix)
        return ("annotations" in _load_json(path)) == has_annotations
    return recognises


# Detection tries these in order; adding a format is one entry here (and its loader above).
REGISTRY = {f.name: f for f in [
    Format("karpathy", ("dataset_*.json",), _is_json("dataset_", False), _load_karpathy),
    Format("flickr8k", _TOKEN_FILES, lambda path, line: "\t" in line,
           _flickr_style(_read_token_file)),
    Format("flickr8k-kaggle", ("captions.txt",),
           lambda path, line: line.strip().lower().replace(" ", "").startswith("image,caption"),
           _flickr_style(_read_kaggle_csv)),
    Format("flickr30k", ("results.csv", *_TOKEN_FILES),
           lambda path, line: line.lower().startswith("image_name|") or line.count("|") >= 2, _load_flickr30k),
    Format("coco", ("captions_*.json", "annotations/captions_*.json"), _is_json("captions_", True), _load_coco),
]}
FORMATS = tuple(REGISTRY)


def _files_of(fmt: Format, folder: Path) -> list:
    return [f for pattern in fmt.files for f in sorted(folder.glob(pattern)) if f.is_file()]


def detect_format(path) -> tuple[str, Path]:
    """(format name, captions file) for a captions file or a data-set folder."""
    path = Path(path)
    if not path.exists():
        raise CaptioningError(f"{path}: no such file or folder")
    if path.is_dir():
        for fmt in REGISTRY.values():
            files = _files_of(fmt, path)
            if files:
                return fmt.name, files[0]
        raise CaptioningError(
            f"{path}: found no captions file. Expected one of Flickr8k.token.txt, captions.txt, "
            "results.csv, captions_train2014.json or dataset_*.json (or pass the file itself).")
    first = ""
    if not path.name.lower().endswith(".json"):
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
    # the most specific rules first: a '|' table also holds no tab, a CSV header is not a token line
    for name in ("karpathy", "coco", "flickr30k", "flickr8k-kaggle", "flickr8k"):
        if REGISTRY[name].recognises(path, first):
            return name, path
    raise CaptioningError(f"{path}: cannot tell the caption format from its first line {first[:60]!r}; "
                          f"pass --format ({', '.join(FORMATS)})")


def _captions_file_for(fmt: str, path: Path) -> Path:
    if path.is_file():
        return path
    files = _files_of(REGISTRY[fmt], path)
    if files:
        return files[0]
    detected, file = detect_format(path)
    raise CaptioningError(f"{path}: --format {fmt} given, but the folder holds {file.name} ({detected})")


def load_captions(path, format: str | None = None, images_dir=None, on_missing: str = "keep",
                  split_seed: int = 0) -> CaptionDataset:
    """Read a data set (a captions file or its folder) into a ``CaptionDataset``.

    ``on_missing`` decides what happens to captions whose image file does not exist:
    "keep" (do not look at the disk), "skip" (drop them, noted) or "error".
    """
    path = Path(path)
    if on_missing not in ("keep", "skip", "error"):
        raise ValueError("on_missing must be 'keep', 'skip' or 'error'")
    if format is None:
        format, file = detect_format(path)
    elif format not in FORMATS:
        raise CaptioningError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    else:
        if not path.exists():
            raise CaptioningError(f"{path}: no such file or folder")
        file = _captions_file_for(format, path)
    rows, empty, root, dataset_name, notes = REGISTRY[format].load(path, file, images_dir, split_seed)

    if empty:
        notes.append(f"{empty} empty captions skipped.")
    bogus = sorted({r[0] for r in rows if not r[0].lower().endswith(IMAGE_SUFFIXES)})
    if bogus:
        notes.append(f"{len(bogus)} caption keys are not image file names: {', '.join(bogus[:3])}.")
    table = pd.DataFrame(rows, columns=["image", "caption", "split"])
    table["split"] = table["split"].fillna("")
    duplicated = table.duplicated(["image", "caption"])
    if duplicated.any():
        notes.append(f"{int(duplicated.sum())} duplicate captions (same image, same text) were dropped.")
        table = table[~duplicated].reset_index(drop=True)
    if table.empty:
        raise CaptioningError(f"{file}: no captions found")
    dataset = CaptionDataset(table, root, format, file, dataset_name, notes)

    if on_missing != "keep":
        missing = dataset.missing_images()
        if missing:
            msg = (f"{len(missing)} of {table['image'].nunique()} captioned images are missing under "
                   f"{root}: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
            if on_missing == "error":
                raise CaptioningError(msg + "\n  Pass --on-missing skip to leave them out, or --images "
                                      "to point at the right folder.")
            dataset.table = table[~table["image"].isin(set(missing))].reset_index(drop=True)
            notes.append(msg + " — skipped.")
    return dataset
