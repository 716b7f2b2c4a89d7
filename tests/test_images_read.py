"""The OpenCV path's file read and header parse: one read of the fstat size, and every file it does not
take whole (changed while read, unreadable) goes to Pillow, which decodes or names the problem."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vln_gym import images
from vln_gym.images import ImageLoadError, decode_image, jpeg_frame_header

NEEDS_CV2 = pytest.mark.skipif(images._cv2() is None, reason="opencv-python-headless is not installed")


def _jpeg(path: Path, width: int = 640, height: int = 480, **options) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, "JPEG", **options)
    return path


def _opencv_decodes(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes `images._reduced_jpeg` decoded while the test runs."""
    calls: list[tuple[int, ...]] = []
    original = images._reduced_jpeg

    def spy(data, scale, shape):
        calls.append(shape)
        return original(data, scale, shape)

    monkeypatch.setattr(images, "_reduced_jpeg", spy)
    return calls


def test_frame_header_skips_fill_bytes_and_standalone_markers(tmp_path):
    plain = _jpeg(tmp_path / "f.jpg", 64, 48).read_bytes()
    padded = plain[:2] + b"\xff\xff\xff\xd0" + plain[2:]  # fill bytes, then a standalone RST0
    assert jpeg_frame_header(padded) == jpeg_frame_header(plain) == (0xC0, 8, 64, 48, 3)
    sof = plain.index(b"\xff\xc0")
    assert jpeg_frame_header(plain[: sof + 10]) == (0xC0, 8, 64, 48, 3)
    assert jpeg_frame_header(plain[: sof + 9]) is None  # the frame header cut short


@NEEDS_CV2
def test_file_changed_since_fstat_goes_to_pillow(tmp_path, monkeypatch):
    """A file whose size is not what fstat said (grown while read) is not decoded from a partial read."""
    path = _jpeg(tmp_path / "f.jpg")
    expected = decode_image(str(path), (224, 224), "pillow")
    decodes = _opencv_decodes(monkeypatch)
    real_fstat = os.fstat

    def fstat_one_byte_short(fd: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(st_size=real_fstat(fd).st_size - 1)

    monkeypatch.setattr(images.os, "fstat", fstat_one_byte_short)
    frame = decode_image(str(path), (224, 224), "opencv")
    assert decodes == [] and np.array_equal(frame, expected)


@pytest.mark.parametrize("backend", images.BACKENDS)
def test_a_folder_is_named_as_unreadable(tmp_path, backend):
    if backend == "opencv" and images._cv2() is None:
        pytest.skip("opencv-python-headless is not installed")
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(tmp_path))}: "):
        decode_image(str(tmp_path), (224, 224), backend)


@NEEDS_CV2
def test_whole_jpeg_is_read_once_and_decoded_by_opencv(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "f.jpg")
    decodes = _opencv_decodes(monkeypatch)
    frame = decode_image(str(path), (224, 224), "opencv")
    assert decodes == [(240, 320, 3)] and frame.shape == (224, 224, 3) and frame.flags.writeable
    assert images._whole_file(str(path)) == path.read_bytes()
    assert images._whole_file(str(tmp_path / "missing.jpg")) is None


def test_a_miss_drops_the_least_recent_frame_before_it_decodes(tmp_path, monkeypatch):
    """The frame cache frees a slot first, so the decode can reuse the dropped frame's memory."""
    paths = [str(_jpeg(tmp_path / f"f{k}.jpg", 64, 48)) for k in range(3)]
    held: list[int] = []
    original = images._read_only_frame

    def spy(path, size):
        held.append(len(images._frame_cache._frames))
        return original(path, size)

    monkeypatch.setattr(images, "_read_only_frame", spy)
    try:
        images.set_frame_cache_size(2)
        first = images.load_frame(paths[0], (32, 32))
        images.load_frame(paths[1], (32, 32))
        assert images.load_frame(paths[0], (32, 32)) is first  # a hit: now the most recent
        images.load_frame(paths[2], (32, 32))  # drops paths[1], the least recent
        assert held == [0, 1, 1]
        assert images.load_frame(paths[0], (32, 32)) is first and held == [0, 1, 1]
    finally:
        images.set_frame_cache_size(images.DEFAULT_FRAME_CACHE_SIZE)
