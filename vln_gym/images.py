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

    A JPEG asked for at a smaller ``size`` is decoded by libjpeg(-turbo) at a DCT-domain scale of 1/2,
    1/4 or 1/8 (Pillow's ``draft``; the smallest still covering ``size`` with room left for the resize,
    see `dct_scale`), then resized BILINEAR from the exact source box: 224x224 from 640x480 decodes at
    320x240, about 3x faster than a full decode and within 0.7 grey level of it on average. Other formats
    (PNG, ...), and JPEGs asked for at or near full size, are decoded at full size."""
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


# A 1/s DCT-domain decode is used only while the BILINEAR resize after it still reduces the larger side
# by at least this much, so that the resize's filter, not the DCT's sharper one, shapes the frame
# (the VLN-Ego frames, 24..240 px: under 0.9 grey level of mean difference from a full decode).
MIN_REDUCTION_AFTER_DCT = {8: 2.0, 4: 1.5, 2: 1.25}


def dct_scale(source: tuple[int, int], target: tuple[int, int]) -> int:
    """The JPEG DCT-domain reduction (8, 4, 2, or 1 = none) for ``source -> target`` (both width, height)."""
    (width, height), (out_width, out_height) = source, target
    for scale, reduction in MIN_REDUCTION_AFTER_DCT.items():
        x, y = width / scale / out_width, height / scale / out_height
        if x >= 1.0 and y >= 1.0 and max(x, y) >= reduction:
            return scale
    return 1


def _reduced_jpeg_box(image: Image.Image, target: tuple[int, int] | None) -> tuple[float, ...] | None:
    """Have a not yet loaded JPEG decode at `dct_scale`; the source's box in the reduced pixels
    (``None``: not a JPEG, or decoded at full size)."""
    if target is None or image.format != "JPEG":
        return None
    scale = dct_scale(image.size, target)
    if scale == 1:
        return None
    drafted = image.draft(None, (image.width // scale, image.height // scale))  # Pillow picks ``scale``
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
