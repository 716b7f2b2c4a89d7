"""Lazy image decoding with a small LRU cache: records hold paths, frames are decoded on demand.

Resized JPEGs are decoded at a DCT-domain scale by libjpeg-turbo (simplejpeg, else OpenCV's imdecode)
and resized by OpenCV when it imports (the ``fast`` extra), else by Pillow, the reference and the
fallback for everything else (`resolve_image_backend`)."""

from __future__ import annotations

import math
import os
import struct
import threading
import warnings
from collections import OrderedDict
from functools import lru_cache
from types import ModuleType
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image file is missing, unreadable, truncated or not an image."""


DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # ~150 MB decoded; VLN frames are 0.1-2 MP, a 4K frame 8.3 MP
MAX_PIXELS_VARIABLE = "VLN_GYM_MAX_IMAGE_PIXELS"  # the cap for every command and process (train, evaluate)
HOW_TO_RAISE_THE_CAP = (
    f"raise the cap with --max-image-pixels (validate, convert), {MAX_PIXELS_VARIABLE}=N (any command) or "
    "vln_gym.images.set_max_image_pixels"
)


def _checked_max_pixels(max_pixels: object, name: str) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"{name} must be an int >= 1, got {max_pixels!r}")
    return max_pixels


def max_pixels_from_environment() -> int:
    """`DEFAULT_MAX_IMAGE_PIXELS`, or the cap ``VLN_GYM_MAX_IMAGE_PIXELS`` sets (digits, ``_`` allowed)."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    value = int(text) if text.replace("_", "").isdecimal() and text.isascii() else text
    return _checked_max_pixels(value, MAX_PIXELS_VARIABLE)


_limits = {"max_pixels": max_pixels_from_environment()}


def set_max_image_pixels(max_pixels: int) -> None:
    """Largest image (width x height) any reader or env decodes; larger files are refused, not decoded."""
    _limits["max_pixels"] = _checked_max_pixels(max_pixels, "max_image_pixels")
    clear_frame_cache()


BACKENDS = ("pillow", "opencv")
BACKEND_VARIABLE = "VLN_GYM_IMAGE_BACKEND"


@lru_cache(maxsize=1)
def _cv2() -> ModuleType | None:
    """OpenCV (opencv-python-headless, the ``fast`` extra) when it imports, else ``None``."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def resolve_image_backend(backend: str = "auto") -> str:
    """The decoder of resized JPEGs: ``"pillow"`` or ``"opencv"``; ``"auto"`` reads
    ``$VLN_GYM_IMAGE_BACKEND`` and otherwise picks opencv when ``cv2`` imports
    (``VLN_GYM_IMAGE_BACKEND=pillow`` forces the reference). `load_frame`'s cache keeps frames decoded
    before a change: set it before the first frame."""
    if backend == "auto":
        backend = os.environ.get(BACKEND_VARIABLE, "auto") or "auto"
        if backend == "auto":
            return "opencv" if _cv2() is not None else "pillow"
    if backend not in BACKENDS:
        raise ValueError(f"image backend must be 'auto' or one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "opencv" and _cv2() is None:
        raise ValueError(
            "image backend 'opencv' needs opencv-python-headless: "
            "pip install 'vln-gym[fast]' (or use 'pillow')"
        )
    return backend


def decode_image(path: str, size: tuple[int, int] | None = None, backend: str = "auto") -> np.ndarray:
    """Decode ``path`` to RGB uint8 ``[H, W, 3]``, resized to ``size = (height, width)`` if given.

    The pixel count is read from the header first: an image over the cap (`set_max_image_pixels`) is
    refused before it is decoded, so a small compressed file cannot expand to gigabytes.

    A JPEG asked for at a smaller ``size`` is decoded by libjpeg(-turbo) at a DCT-domain scale of 1/2,
    1/4 or 1/8 (Pillow's ``draft``; the smallest still covering ``size`` with room left for the resize,
    see `dct_scale`), then resized BILINEAR from the exact source box: 224x224 from 640x480 decodes at
    320x240, about 3x faster than a full decode and within 0.7 grey level of it on average. Other formats
    (PNG, ...), and JPEGs asked for at or near full size, are decoded at full size.

    ``backend`` (`resolve_image_backend`): with ``"opencv"`` a resized, whole, baseline or progressive
    RGB or greyscale JPEG whose sides the DCT scale divides is decoded by libjpeg-turbo at that scale
    (`_reduced_jpeg`: simplejpeg when it imports, else ``cv2.imdecode``, the same pixels; its size, for
    the cap, read by `jpeg_frame_header`) and resized by `opencv_resize`: at 224x224 from 640x480
    about 2.5x faster than the Pillow path and within 0.83 grey level of the full-decode reference on
    average (the Pillow path: 0.70). Every other image, and any file OpenCV cannot read, takes the
    Pillow path, which ``"pillow"`` always takes."""
    if size is not None and min(size) < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    target = None if size is None else (int(size[1]), int(size[0]))
    if target is not None and resolve_image_backend(backend) == "opencv":
        frame = _opencv_decoded(path, target)
        if frame is not None:
            return frame
    cap = _limits["max_pixels"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            with Image.open(path) as image:
                width, height = image.size
                if width * height > cap:
                    raise ImageLoadError(
                        f"{path}: {width}x{height} = {width * height:,} pixels, over the {cap:,} pixel cap "
                        f"(a decompression bomb or a huge image? {HOW_TO_RAISE_THE_CAP})"
                    )
                return _decoded(image, target)
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


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_OPENCV_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman JPEG
_OPENCV_COMPONENTS = (1, 3)  # greyscale, YCbCr/RGB: libjpeg-turbo gives Pillow's pixels (CMYK: not)
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)
_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker, segment length
_FRAME_FIELDS = struct.Struct(">BHHB")  # precision, height, width, components


class JpegFrame(NamedTuple):
    """A JPEG's start-of-frame segment."""

    marker: int  # 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    precision: int  # bits per sample
    width: int
    height: int
    components: int  # 1 greyscale, 3 YCbCr or RGB, 4 CMYK or YCCK


def jpeg_frame_header(data: bytes) -> JpegFrame | None:
    """The start-of-frame segment of the JPEG in ``data`` (a few dozen bytes in; nothing is decoded);
    ``None`` when ``data`` is no JPEG or the segments before it are malformed."""
    if not data.startswith(_JPEG_START):
        return None
    at, end = 2, len(data)
    while at + 4 <= end:
        fill, marker, length = _SEGMENT.unpack_from(data, at)
        if fill != 0xFF:
            return None
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE_MARKERS:
            at += 2
            continue
        if marker in _FRAME_MARKERS and at + 10 <= end:
            precision, height, width, components = _FRAME_FIELDS.unpack_from(data, at + 4)
            return JpegFrame(marker, precision, width, height, components)
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        at += 2 + length
    return None


def _opencv_decoded(path: str, target: tuple[int, int]) -> np.ndarray | None:
    """``path`` decoded at `dct_scale` (by `_reduced_jpeg`) and resized to ``target = (width, height)``
    by `opencv_resize`; ``None`` where the Pillow path must decide: an unreadable file (Pillow names the
    problem), not a whole 8-bit baseline or progressive RGB or greyscale JPEG (a file cut short has no
    end marker), over the pixel cap, or sides the scale does not divide (Pillow resizes from the exact
    source box)."""
    data = _whole_file(path)
    if data is None:
        return None
    header = jpeg_frame_header(data)
    if header is None or not (data.endswith(_JPEG_END) or data.rstrip(b"\0").endswith(_JPEG_END)):
        return None
    marker, precision, width, height, components = header
    if marker not in _OPENCV_FRAMES or precision != 8 or components not in _OPENCV_COMPONENTS:
        return None
    if not 0 < width * height <= _limits["max_pixels"]:
        return None
    plan = _decode_plan(width, height, target)
    if plan is None:
        return None
    scale, shape, blur = plan
    rgb = _reduced_jpeg(data, scale, shape)
    if rgb is None:
        return None
    if (shape[1], shape[0]) == target:
        return rgb.copy()  # ``rgb`` may be a reused work buffer
    return _blurred_resize(rgb, target, blur, _work.array("blurred", shape))


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows only, no newline translation


def _whole_file(path: str) -> bytes | None:
    """The bytes of ``path`` in one read of the size ``fstat`` gives; ``None`` if it cannot be read, is
    larger than a JPEG under the pixel cap can be, or changed size while read (Pillow decides then)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        size = os.fstat(fd).st_size
        if size > 3 * _limits["max_pixels"]:  # a JPEG is smaller
            return None
        data = os.read(fd, size + 1)  # one byte more: a file grown since fstat is not taken
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


@lru_cache(maxsize=256)
def _decode_plan(
    width: int, height: int, target: tuple[int, int]
) -> tuple[int, tuple[int, int, int], tuple[tuple[int, int], float, float] | None] | None:
    """``(scale, decoded shape, blur)`` for a ``width x height`` JPEG resized to ``target``: its
    `dct_scale`, the RGB shape decoded at that scale and `_blur_plan` of the resize after it; ``None``
    when the scale does not divide the sides."""
    scale = dct_scale((width, height), target)
    if width % scale or height % scale:
        return None
    width, height = width // scale, height // scale
    return scale, (height, width, 3), _blur_plan(width, height, target, scale > 1)


class _WorkBuffers(threading.local):
    """Per-thread uint8 arrays reused from frame to frame, one per role and the last shape asked for
    (a fresh 230 KB array per decode costs page faults and cache misses): ``"decoded"`` for
    `_reduced_jpeg`, ``"blurred"`` for `opencv_resize`'s blur."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        found = self.arrays.get(role)
        if found is None or found.shape != shape:
            found = self.arrays[role] = np.empty(shape, dtype=np.uint8)
        return found


_work = _WorkBuffers()


@lru_cache(maxsize=1)
def _simplejpeg() -> ModuleType | None:
    """simplejpeg (the ``fast`` extra) when it imports, else ``None``: libjpeg-turbo as OpenCV's
    ``imdecode`` uses it (the same pixels, tested), ~12% faster, RGB out and into a reused buffer."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def _reduced_jpeg(data: bytes, scale: int, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The JPEG ``data`` decoded by libjpeg-turbo at 1/``scale`` to RGB ``shape`` (the returned array
    may be a per-thread work buffer, valid until this thread's next decode); ``None`` if it fails or
    comes out at another shape. simplejpeg when it imports, else ``cv2.imdecode`` (the same pixels)."""
    simplejpeg = _simplejpeg()
    if simplejpeg is not None:
        height, width = shape[:2]
        try:
            rgb = simplejpeg.decode_jpeg(
                data, "RGB", min_height=height, min_width=width, buffer=_work.array("decoded", shape)
            )
        except ValueError:  # corrupt or not decodable: Pillow names the problem
            return None
        return rgb if rgb.shape == shape else None
    cv2 = _cv2()
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    flag = flags.get(scale, cv2.IMREAD_REDUCED_COLOR_8) | cv2.IMREAD_IGNORE_ORIENTATION  # Pillow's: none
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if bgr is None or bgr.shape != shape:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: a channel swap


def opencv_resize(
    frame: np.ndarray, target: tuple[int, int], after_dct: bool = False, work: np.ndarray | None = None
) -> np.ndarray:
    """``frame`` resized to ``target = (width, height)`` by OpenCV, close to Pillow's BILINEAR (a new
    array, or ``frame`` itself when it already has that size).

    INTER_LINEAR alone aliases (320x240 -> 112x112: 2.8 grey levels from Pillow), so a shrink by ``f``
    on a side is preceded there by a Gaussian blur of variance ``(f**2 - 1) / 6``: with INTER_LINEAR's
    own triangle (variance 1/6) that is the variance of Pillow's triangle ``f`` pixels wide (0.4 at
    112x112). ``after_dct``: ``frame`` is a DCT-domain downscale, sharper than Pillow's triangle, so a
    side shrunk less than 1.5x more gets `DCT_EXTRA_VARIANCE` on top (240x240: 1.06 -> 0.91).
    ``work``: an array of ``frame``'s shape and dtype to blur into (else a new one)."""
    height, width = frame.shape[:2]
    if (width, height) == target:
        return frame
    return _blurred_resize(frame, target, _blur_plan(width, height, target, after_dct), work)


def _blurred_resize(
    frame: np.ndarray,
    target: tuple[int, int],
    blur: tuple[tuple[int, int], float, float] | None,
    work: np.ndarray | None,
) -> np.ndarray:
    """`opencv_resize` with its `_blur_plan` given: ``frame`` blurred by ``blur`` (into ``work``) if any,
    then resized INTER_LINEAR to ``target`` (a new array)."""
    cv2 = _cv2()
    if blur is not None:
        size, sigma_x, sigma_y = blur
        frame = cv2.GaussianBlur(frame, size, sigma_x, work, sigma_y)
    return cv2.resize(frame, target, None, 0.0, 0.0, cv2.INTER_LINEAR)


@lru_cache(maxsize=256)
def _blur_plan(
    width: int, height: int, target: tuple[int, int], after_dct: bool
) -> tuple[tuple[int, int], float, float] | None:
    """``(kernel size, sigma_x, sigma_y)`` of `opencv_resize`'s blur for ``width x height -> target``
    (``None``: no blur)."""
    sigma_x = _blur_sigma(width / target[0], after_dct)
    sigma_y = _blur_sigma(height / target[1], after_dct)
    if not (sigma_x or sigma_y):
        return None
    return (_kernel_size(sigma_x), _kernel_size(sigma_y)), sigma_x or 1.0, sigma_y or 1.0


MIN_BLURRED_SIGMA = 0.4  # px; a smaller blur changes little (224x224: 0.81 grey level without it on y)
DCT_EXTRA_VARIANCE = 0.12  # px^2, tuned on the VLN-Ego frames at 24..240 px
DCT_EXTRA_BELOW_SHRINK = 1.5


def _blur_sigma(shrink: float, after_dct: bool) -> float:
    """Standard deviation (px) of the blur before INTER_LINEAR on a side shrunk by ``shrink`` (0: none)."""
    if shrink < 1.0:
        return 0.0  # an enlargement: INTER_LINEAR is Pillow's BILINEAR there
    variance = (shrink * shrink - 1.0) / 6.0
    if after_dct and shrink < DCT_EXTRA_BELOW_SHRINK:
        variance += DCT_EXTRA_VARIANCE
    sigma = math.sqrt(variance)
    return sigma if sigma >= MIN_BLURRED_SIGMA else 0.0


def _kernel_size(sigma: float) -> int:
    """Taps of the blur of ``sigma`` (1: none on that side), out to about 2.5 sigma: 3 taps at 224x224
    from 320x240 (40 us there instead of 105 us for 5x5; 24..240 px within tolerance either way)."""
    return 2 * int(2.5 * sigma) + 1 if sigma else 1


def _read_only_frame(path: str, size: tuple[int, int] | None) -> np.ndarray:
    frame = decode_image(path, size)
    frame.setflags(write=False)
    return frame


DEFAULT_FRAME_CACHE_SIZE = 1024
_FrameKey = tuple[str, tuple[int, int] | None]  # (path, (height, width) or None)


class _FrameCache:
    """The shared LRU cache of read-only decoded frames, ``(path, size) -> frame``.

    Unlike ``functools.lru_cache`` a miss drops the least recently used frame before it decodes, so the
    decode reuses the block it frees (glibc hands freed blocks back out) and the observation copies
    after it write memory still in cache. Dropped after the decode, that block, long out of cache, went
    to the first observation copy: 7-11 us more per cold step at 224x224 (docs/performance.md).
    No lock (a fork could inherit it held): each dict operation is atomic, and threads racing on a miss
    may leave a frame or two over ``maxsize`` until the next miss."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._frames: OrderedDict[_FrameKey, np.ndarray] = OrderedDict()

    def get(self, path: str, size: tuple[int, int] | None) -> np.ndarray:
        key = (path, size)
        frames = self._frames
        frame = frames.pop(key, None)  # a hit is put back last, the most recently used
        if frame is None:
            while len(frames) >= self.maxsize:
                try:
                    frames.popitem(last=False)
                except KeyError:  # emptied by another thread
                    break
            frame = _read_only_frame(path, size)
        frames[key] = frame
        return frame

    def clear(self) -> None:
        self._frames.clear()


_frame_cache = _FrameCache(DEFAULT_FRAME_CACHE_SIZE)


def load_frame(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded, read-only frame from the shared cache (the `set_frame_cache_size` most recent path/size
    pairs, 1024 by default)."""
    return _frame_cache.get(path, None if size is None else (int(size[0]), int(size[1])))


def frame_cache_size() -> int:
    """How many path/size pairs the shared frame cache keeps."""
    return _frame_cache.maxsize


def set_frame_cache_size(frames: int) -> None:
    """Keep the ``frames`` most recent path/size pairs in the shared frame cache (1024 by default); a
    new size drops every cached frame, the same size changes nothing."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frame cache size must be an int >= 1, got {frames!r}")
    if frames != frame_cache_size():
        clear_frame_cache()
        _frame_cache.maxsize = frames


def clear_frame_cache() -> None:
    """Drop every cached frame."""
    _frame_cache.clear()
