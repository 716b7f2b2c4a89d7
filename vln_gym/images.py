"""Lazy image decoding with a small LRU cache: records hold paths, frames are decoded on demand."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image file is missing, unreadable, truncated or not an image."""


def decode_image(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode ``path`` to RGB uint8 ``[H, W, 3]``, resized to ``size = (height, width)`` if given."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageLoadError(f"{path}: image file not found") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"{path}: not an image file") from error
    except (OSError, SyntaxError) as error:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({error})") from error
    if size is not None and (rgb.height, rgb.width) != tuple(size):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


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
