"""Reduced-scale JPEG decoding (`vln_gym.images`) against the Pillow reference: full decode + BILINEAR.

Tolerance (grey levels, 0-255, over all pixels and channels): mean absolute difference < 1.0 over a set
of frames, < 1.25 on any one frame, largest single difference <= 48 (edges, where the DCT's downscale
and BILINEAR's disagree most). Sizes that are no clean downscale (larger than the source, the source's
own size) must match the reference exactly; PNG and other formats always do (full Pillow decode).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from vln_gym.images import ImageLoadError, dct_scale, decode_image, load_frame

VLN_EGO_FRAMES = (
    Path(__file__).resolve().parents[2] / "shared/data/vln-ego-sample/rgb_images_r2r_debug/ep_2849/traj_1871"
)
MEAN_TOLERANCE, FRAME_MEAN_TOLERANCE, MAX_TOLERANCE = 1.0, 1.25, 48


def reference(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Pillow full decode + BILINEAR resize to ``size = (height, width)`` (the pre-DCT-scaling decode)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def differences(paths: list[Path], size: tuple[int, int]) -> list[np.ndarray]:
    return [np.abs(decode_image(str(p), size).astype(np.int16) - reference(p, size)) for p in paths]


def assert_within_tolerance(diffs: list[np.ndarray]) -> None:
    means = [float(d.mean()) for d in diffs]
    assert np.mean(means) < MEAN_TOLERANCE, means
    assert max(means) < FRAME_MEAN_TOLERANCE, means
    assert max(int(d.max()) for d in diffs) <= MAX_TOLERANCE


@pytest.fixture
def draft_scales(monkeypatch) -> list[tuple[int, int]]:
    """Every JPEG draft request made while the test runs, as the reduced (width, height) Pillow chose."""
    calls: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        calls.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def synthetic(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB frame: a colour gradient, 1/f ("pink") luminance texture softened by a lens-like
    blur (sigma ~1 px), as camera and rendered frames are, and a hard-edged red box."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fx, fy)
    amplitude = np.exp(-2 * (np.pi * radius) ** 2) / np.maximum(radius, 1.0 / max(width, height))
    texture = np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)), s=(height, width))
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 120 + 60
    frame = base + (25.0 / texture.std()) * texture[..., None]
    frame[height // 3 : height // 2, width // 4 : width // 2] = (230, 30, 30)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, frame: np.ndarray, mode: str = "RGB", **options) -> Path:
    Image.fromarray(frame).convert(mode).save(path, format="JPEG", quality=90, **options)
    return path


@pytest.mark.skipif(not VLN_EGO_FRAMES.is_dir(), reason=f"{VLN_EGO_FRAMES} is absent (../shared)")
@pytest.mark.parametrize(
    "size", [(224, 224), (160, 160), (77, 101), (240, 320), (120, 160), (60, 80), (48, 64), (24, 32)]
)
def test_real_frames_match_the_pillow_reference(size):
    paths = sorted(VLN_EGO_FRAMES.glob("step_*.jpg"))
    assert len(paths) == 65
    assert_within_tolerance(differences(paths, size))


def test_real_frame_224_decodes_at_half_scale(draft_scales):
    if not VLN_EGO_FRAMES.is_dir():
        pytest.skip(f"{VLN_EGO_FRAMES} is absent (../shared)")
    decode_image(str(VLN_EGO_FRAMES / "step_0.jpg"), (224, 224))
    assert draft_scales == [(320, 240)]


@pytest.mark.parametrize(
    ("source", "size", "mode", "options", "reduced"),
    [
        ((640, 480), (224, 224), "RGB", {}, (320, 240)),
        ((640, 480), (224, 224), "RGB", {"progressive": True}, (320, 240)),
        ((640, 480), (112, 112), "RGB", {"subsampling": 0}, (320, 240)),  # 4:4:4 chroma
        ((640, 480), (60, 80), "L", {}, (160, 120)),
        ((640, 480), (30, 40), "CMYK", {}, (80, 60)),
        ((333, 251), (50, 67), "RGB", {}, (167, 126)),  # odd sizes: the last reduced pixel is partial
        ((641, 479), (29, 40), "RGB", {}, (81, 60)),
    ],
)
def test_synthetic_jpegs_decode_reduced_within_tolerance(
    tmp_path, draft_scales, source, size, mode, options, reduced
):
    paths = [
        write_jpeg(tmp_path / f"f{seed}.jpg", synthetic(*source, seed), mode, **options) for seed in (0, 1)
    ]
    diffs = differences(paths, size)
    assert draft_scales == [reduced, reduced]  # decode_image's draft calls (the reference makes none)
    assert all(d.shape == (*size, 3) for d in diffs)
    assert_within_tolerance(diffs)


def test_odd_sizes_keep_the_geometry(tmp_path):
    """A steep ramp shows any stretch of the reduced image: 329 px at 1/8 decode to 42 pixels, the last
    one partial (source box 41.125 wide); resized without that box the ramp is off by 2.8 on average."""
    ramp = np.broadcast_to(np.linspace(0, 255, 329)[None, :, None], (249, 329, 3)).astype(np.uint8)
    path = write_jpeg(tmp_path / "ramp.jpg", np.ascontiguousarray(ramp))
    assert dct_scale((329, 249), (20, 15)) == 8
    (diff,) = differences([path], (15, 20))
    assert diff.mean() < 0.5 and diff.max() <= 2


@pytest.mark.parametrize(
    ("source", "size"),
    [((64, 48), (96, 128)), ((64, 48), (48, 64)), ((64, 48), (47, 65)), ((640, 480), (240, 320))],
)
def test_sizes_without_a_clean_downscale_match_exactly(tmp_path, draft_scales, source, size):
    """Larger than the source, the source's own size, up one side and down the other, or a size the
    1/2 decode would fit exactly (no room left for the resize): decoded at full size, as the reference."""
    path = write_jpeg(tmp_path / "f.jpg", synthetic(*source))
    assert np.array_equal(decode_image(str(path), size), reference(path, size))
    assert draft_scales == []


def test_dct_scale_leaves_room_for_the_resize():
    assert dct_scale((640, 480), (224, 224)) == 2
    assert dct_scale((640, 480), (320, 240)) == 1  # the 1/2 decode would be the frame itself
    assert dct_scale((640, 480), (160, 120)) == 2
    assert dct_scale((640, 480), (112, 112)) == 2  # 1/4 would leave only 1.43x
    assert dct_scale((640, 480), (32, 24)) == 8
    assert dct_scale((640, 480), (640, 480)) == 1
    assert dct_scale((640, 480), (1280, 960)) == 1


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_other_formats_go_through_pillow_unchanged(tmp_path, draft_scales, fmt):
    path = tmp_path / f"f.{fmt.lower()}"
    Image.fromarray(synthetic(200, 150)).save(
        path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    assert np.array_equal(decode_image(str(path), (56, 72)), reference(path, (56, 72)))
    assert np.array_equal(decode_image(str(path)), synthetic(200, 150))
    assert draft_scales == []


def test_full_size_decode_without_a_size_is_the_reference(tmp_path, draft_scales):
    path = write_jpeg(tmp_path / "f.jpg", synthetic(120, 90))
    with Image.open(path) as image:
        assert np.array_equal(decode_image(str(path)), np.asarray(image.convert("RGB")))
    assert draft_scales == []


@pytest.mark.parametrize("size", [(224, 224), None])
def test_truncated_jpeg_names_the_file(tmp_path, size):
    whole = write_jpeg(tmp_path / "whole.jpg", synthetic(640, 480)).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: unreadable or truncated image"):
        decode_image(str(path), size)


def test_not_a_jpeg_names_the_file(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" + bytes(range(256)))
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: "):
        load_frame(str(path), (32, 32))


def test_size_must_be_positive(tmp_path):
    path = write_jpeg(tmp_path / "f.jpg", synthetic(64, 48))
    with pytest.raises(ValueError, match=r"size must be positive"):
        decode_image(str(path), (0, 32))


def test_bench_env_reports_both_floors_side_by_side():
    script = Path(__file__).resolve().parents[1] / "scripts/bench_env.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--skip-world",
            "--seconds",
            "0.2",
            "--repeats",
            "1",
            "--image-size",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("raw_frames_per_s", "reduced_frames_per_s", "cold_steps_per_s"):
        assert figures[name] > 0
    assert figures["cold_ratio"] == pytest.approx(
        figures["cold_steps_per_s"] / figures["raw_frames_per_s"], rel=0.01
    )
    assert figures["cold_ratio_reduced"] == pytest.approx(
        figures["cold_steps_per_s"] / figures["best_reduced_frames_per_s"], rel=0.01
    )
    assert figures["reduced_mean_abs_diff"] < MEAN_TOLERANCE
