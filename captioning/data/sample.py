"""The built-in sample data set: synthetic scenes in the Flickr8k original layout.

Each image shows one or two coloured shapes (circle, square, triangle) at named positions on a plain
background, with five varied captions that name colour, shape, size and side. Everything the
captions say is visible, so a decoder trained on CNN features of these images can genuinely learn
to caption them — offline, in minutes, on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 119, 180), "yellow": (240, 200, 20)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.16, "large": 0.30}  # radius as a fraction of the image side
BACKGROUNDS = [(245, 245, 245), (225, 225, 225), (250, 240, 220), (230, 240, 250)]
IMAGE_SIZE = 160


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour, cx: float, cy: float, r: float):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def _phrase(obj, with_size=True) -> str:
    size = f"{obj['size']} " if with_size else ""
    return f"a {size}{obj['colour']} {obj['shape']}"


def _captions(objects, rng) -> list[str]:
    if len(objects) == 1:
        (o,) = objects
        side = o["side"]
        return [
            f"{_phrase(o, False)} on the {side}",
            f"{_phrase(o)} on the {side} side",
            f"there is {_phrase(o, False)} on the {side}",
            f"{_phrase(o)} on the {side} of the image",
            f"one {o['size']} {o['colour']} {o['shape']} on the {side}",
        ]
    left, right = objects
    a, b = (left, right) if rng.random() < 0.5 else (right, left)
    return [
        f"{_phrase(left, False)} on the left and {_phrase(right, False)} on the right",
        f"{_phrase(a)} beside {_phrase(b)}",
        f"{_phrase(left, False)} to the left of {_phrase(right, False)}",
        f"two shapes {_phrase(left, False)} and {_phrase(right, False)}",
        f"{_phrase(right)} on the right and {_phrase(left)} on the left",
    ]


def make_scene(rng: np.random.Generator, size: int = IMAGE_SIZE):
    """One image and its five captions, drawn from ``rng``."""
    n = 1 if rng.random() < 0.5 else 2
    sides = ["left", "right"] if n == 2 else [str(rng.choice(["left", "right"]))]
    img = Image.new("RGB", (size, size), BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    draw = ImageDraw.Draw(img)
    objects = []
    for side in sides:
        obj = {"side": side, "shape": str(rng.choice(SHAPES)), "colour": str(rng.choice(list(COLOURS))),
               "size": str(rng.choice(list(SIZES)))}
        r = SIZES[obj["size"]] * size * rng.uniform(0.85, 1.1)
        cx = size * (0.27 if side == "left" else 0.73) + rng.uniform(-0.04, 0.04) * size
        cy = size * 0.5 + rng.uniform(-0.15, 0.15) * size
        _draw(draw, obj["shape"], COLOURS[obj["colour"]], cx, cy, r)
        objects.append(obj)
    return img, _captions(objects, rng), objects


def make_sample(out_dir, images: int = 300, seed: int = 0, splits=(0.7, 0.15, 0.15)) -> Path:
    """Write the sample set to ``out_dir`` in the Flickr8k original layout; returns the folder.

    Same ``images`` and ``seed`` → the same bytes and captions.
    """
    if images < 3:
        raise ValueError("the sample set needs at least 3 images (one per split)")
    out = Path(out_dir)
    (out / "Images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, lines, objects_json = [], [], {}
    for i in range(images):
        img, captions, objects = make_scene(rng)
        name = f"sample_{i:05d}.jpg"
        img.save(out / "Images" / name, quality=95)
        names.append(name)
        lines += [f"{name}#{k}\t{c}" for k, c in enumerate(captions)]
        objects_json[name] = objects
    (out / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_test = max(1, int(round(splits[2] * images)))
    n_dev = max(1, int(round(splits[1] * images)))
    cut = images - n_dev - n_test
    for split, part in (("train", names[:cut]), ("dev", names[cut:cut + n_dev]), ("test", names[cut + n_dev:])):
        (out / f"Flickr_8k.{split}Images.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    # Ground truth of where each shape is, for attention checks and curious users.
    (out / "scenes.json").write_text(json.dumps(objects_json, indent=0), encoding="utf-8")
    return out
