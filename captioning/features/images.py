"""Decode any image file a user might have into an RGB array, or say exactly why not."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold
RESIZE = "bilinear"  # recorded in every store, so inference resizes the same way


class ImageError(Exception):
    """An image that cannot be used; the message is the reason recorded in the store."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grayscale
        a = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _too_large(size: str) -> str:
    # Pillow's guard against decompression bombs: a file this big could exhaust memory when decoded
    return (f"image too large ({size}; the limit is {MAX_PIXELS:,} pixels, as a guard against decompression "
            "bombs): save a downscaled copy (a few thousand pixels wide is plenty; the network sees "
            "a few hundred) and use that")


def load_image(path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB from a file path, an array or an encoded file's bytes (an upload);
    raises ``ImageError`` with the reason for anything unusable."""
    if isinstance(path, (bytes, bytearray)):
        path = io.BytesIO(path)
    if isinstance(path, np.ndarray):
        if path.ndim not in (2, 3) or 0 in path.shape[:2] or (path.ndim == 3 and path.shape[2] not in (1, 3, 4)):
            raise ImageError(f"an array of shape {path.shape} is not an image: give (height, width) grey or "
                             "(height, width, 3 or 4) RGB(A) pixels, each side at least 1")
        array = path[..., 0] if path.ndim == 3 and path.shape[2] == 1 else path
        return np.asarray(_to_rgb(Image.fromarray(array)).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    if isinstance(path, str) and path.startswith(("http://", "https://")):
        raise ImageError("a web address: download the image first (captioning reads files, not the web)")
    if not isinstance(path, io.BytesIO) and os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read, a device never end
        raise ImageError("not a regular file (a folder, a pipe or a device): give image files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(_too_large(f"{w}×{h} pixels"))
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im).resize((size, size), Image.BILINEAR)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # raised by Image.open itself
        pixels = next((w for w in str(e).split("(")[1:2]), "").split(" pixels")[0]
        raise ImageError(_too_large(f"{int(pixels):,} pixels" if pixels.isdigit() else str(e))) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageError(f"corrupt or truncated image: {e}") from None
    return np.asarray(rgb, dtype=np.uint8)
