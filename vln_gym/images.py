"""Lazy image decoding with a small LRU cache: records hold paths, frames are decoded on demand."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image file is missing, unreadable, truncated or not an image."""


DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # ~150 MB decoded; VLN frames are 0.1-2 MP, a 4K frame 8.3 MP
_limits = {"max_pixels": DEFAULT_MAX_IMAGE_PIXELS}


def set_max_image_pixels(max_pixels: int) -> None:
    """Largest image (width x height) any reader or env decodes; larger files are refused, not decoded."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_image_pixels must be an int >= 1, got {max_pixels!r}")
    _limits["max_pixels"] = max_pixels
    _cached.cache_clear()


def decode_image(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode ``path`` to RGB uint8 ``[H, W, 3]``, resized to ``size = (height, width)`` if given.

    The pixel count is read from the header first: an image over the cap (`set_max_image_pixels`) is
    refused before it is decoded, so a small compressed file cannot expand to gigabytes.

    A JPEG with a ``size`` is decoded by libjpeg(-turbo) at the smallest DCT-domain scale (1/2, 1/4 or
    1/8) whose output still covers ``size`` (Pillow's ``draft``), then resized BILINEAR from the exact
    source box; other formats (PNG, ...), and JPEGs asked for at full size or larger, are decoded at full
    size. Against the full decode + BILINEAR resize the frames differ by under 1 grey level on average
    where the resize still reduces (224x224 from 640x480: 0.7), by up to ~1.5 where the reduced decode
    fits the size exactly (240x320 from 640x480); see docs/performance.md."""
    if size is not None and min(size) < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    cap = _limits["max_pixels"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            with Image.open(path) as image:
                width, height = image.size
                if width * height > cap:
                    raise ImageLoadError(
                        f"{path}: {width}x{height} = {width * height:,} pixels, over the {cap:,} pixel cap "
                        "(a decompression bomb or a huge image? set_max_image_pixels raises the cap)"
                    )
                return _decoded(image, None if size is None else (int(size[1]), int(size[0])))
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({error})") from error
    except FileNotFoundError as error:
        raise ImageLoadError(f"{path}: image file not found") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"{path}: not an image file") from error
    except (OSError, SyntaxError) as error:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({error})") from error


def _decoded(image: Image.Image, target: tuple[int, int] | None) -> np.ndarray:
    """The open ``image`` as an RGB array, resized to ``target = (width, height)`` if given."""
    box = _reduced_jpeg_box(image, target)
    image.load()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if target is not None and (rgb.size != target or box is not None):
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, box=box)
    return np.asarray(rgb, dtype=np.uint8)


def _reduced_jpeg_box(image: Image.Image, target: tuple[int, int] | None) -> tuple[float, ...] | None:
    """Have a not yet loaded JPEG decode at the smallest DCT scale still covering ``target = (width,
    height)``; the source image's box in the reduced pixels (``None``: not a JPEG, nothing to reduce)."""
    if target is None or image.format != "JPEG":
        return None
    drafted = image.draft(None, target)
    return None if drafted is None else tuple(drafted[1])


@lru_cache(maxsize=1024)
def _cached(path: str, size: tuple[int, int] | None) -> np.ndarray:
    frame = decode_image(path, size)
    frame.setflags(write=False)
    return frame


def load_frame(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded, read-only frame from the shared cache (1024 most recent path/size pairs)."""
    return _cached(path, None if size is None else (int(size[0]), int(size[1])))


def clear_frame_cache() -> None:
    """Drop every cached frame."""
    _cached.cache_clear()
