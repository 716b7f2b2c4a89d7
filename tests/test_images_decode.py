"""Reduced-scale JPEG decoding (`vln_gym.images`) against the Pillow reference: full decode + BILINEAR.

Both backends, ``pillow`` (Pillow draft + BILINEAR) and ``opencv`` (OpenCV reduced decode + blurred
INTER_LINEAR; tested when cv2 imports), are held to one tolerance (grey levels, 0-255, over all pixels
and channels): mean absolute difference < 1.0 over a set of frames, < 1.25 on any one frame, largest
single difference <= 48 (edges, where the DCT's downscale and BILINEAR's disagree most). With the Pillow
backend, sizes that are no clean downscale (larger than the source, the source's own size) match the
reference exactly; PNG and other formats always do (full Pillow decode, either backend).
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

from vln_gym import images
from vln_gym.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLoadError,
    dct_scale,
    decode_image,
    jpeg_frame_header,
    load_frame,
    resolve_image_backend,
    set_max_image_pixels,
)

VLN_EGO_FRAMES = (
    Path(__file__).resolve().parents[2] / "shared/data/vln-ego-sample/rgb_images_r2r_debug/ep_2849/traj_1871"
)
MEAN_TOLERANCE, FRAME_MEAN_TOLERANCE, MAX_TOLERANCE = 1.0, 1.25, 48
HAVE_CV2 = images._cv2() is not None
NEEDS_CV2 = pytest.mark.skipif(not HAVE_CV2, reason="opencv-python-headless is not installed")
BACKENDS = ["pillow", pytest.param("opencv", marks=NEEDS_CV2)]


def reference(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Pillow full decode + BILINEAR resize to ``size = (height, width)`` (the pre-DCT-scaling decode)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def pillow_draft_decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The Pillow backend's algorithm written out (draft at `dct_scale`, BILINEAR from the source box)."""
    target = (size[1], size[0])
    with Image.open(path) as image:
        scale, box = dct_scale(image.size, target), None
        if scale > 1:
            box = image.draft(None, (image.width // scale, image.height // scale))[1]
        rgb = image.convert("RGB")
    if rgb.size != target or box is not None:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, box=box)
    return np.asarray(rgb)


def differences(paths: list[Path], size: tuple[int, int], backend: str = "pillow") -> list[np.ndarray]:
    return [np.abs(decode_image(str(p), size, backend).astype(np.int16) - reference(p, size)) for p in paths]


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
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_frames_match_the_pillow_reference(size, backend):
    paths = sorted(VLN_EGO_FRAMES.glob("step_*.jpg"))
    assert len(paths) == 65
    assert_within_tolerance(differences(paths, size, backend))


@pytest.fixture
def opencv_decodes(monkeypatch) -> list[tuple[int, int]]:
    """The (width, height) of every frame the OpenCV backend's libjpeg-turbo decode (simplejpeg or
    ``cv2.imdecode``, `images._reduced_jpeg`) gave while the test runs."""
    calls: list[tuple[int, int]] = []
    original = images._reduced_jpeg

    def spy(data, scale, shape):
        frame = original(data, scale, shape)
        if frame is not None:
            calls.append((frame.shape[1], frame.shape[0]))
        return frame

    monkeypatch.setattr(images, "_reduced_jpeg", spy)
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_frame_224_decodes_at_half_scale(draft_scales, opencv_decodes, backend):
    if not VLN_EGO_FRAMES.is_dir():
        pytest.skip(f"{VLN_EGO_FRAMES} is absent (../shared)")
    decode_image(str(VLN_EGO_FRAMES / "step_0.jpg"), (224, 224), backend)
    assert (draft_scales, opencv_decodes) == (
        ([(320, 240)], []) if backend == "pillow" else ([], [(320, 240)])
    )


@pytest.mark.skipif(not VLN_EGO_FRAMES.is_dir(), reason=f"{VLN_EGO_FRAMES} is absent (../shared)")
@pytest.mark.parametrize("size", [(224, 224), (112, 112), (77, 101), (24, 32)])
def test_forced_pillow_is_the_pillow_draft_decode_exactly(monkeypatch, size):
    """``VLN_GYM_IMAGE_BACKEND=pillow`` (what reproducible runs set) gives the Pillow backend's frames."""
    monkeypatch.setenv(images.BACKEND_VARIABLE, "pillow")
    for path in sorted(VLN_EGO_FRAMES.glob("step_*.jpg"))[:5]:
        assert np.array_equal(decode_image(str(path), size), pillow_draft_decode(path, size))


@pytest.mark.parametrize(
    ("source", "size", "mode"),
    [((640, 480), (224, 224), "RGB"), ((640, 480), (60, 80), "L"), ((333, 251), (50, 67), "RGB")],
)
def test_forced_pillow_on_synthetic_jpegs_is_the_pillow_draft_decode_exactly(
    tmp_path, monkeypatch, opencv_decodes, source, size, mode
):
    monkeypatch.setenv(images.BACKEND_VARIABLE, "pillow")
    path = write_jpeg(tmp_path / "f.jpg", synthetic(*source), mode)
    assert np.array_equal(load_frame(str(path), size), pillow_draft_decode(path, size))
    assert opencv_decodes == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("source", "size", "mode", "options", "reduced", "opencv_reads"),
    [
        ((640, 480), (224, 224), "RGB", {}, (320, 240), True),
        ((640, 480), (224, 224), "RGB", {"progressive": True}, (320, 240), True),
        ((640, 480), (112, 112), "RGB", {"subsampling": 0}, (320, 240), True),  # 4:4:4 chroma
        ((640, 480), (60, 80), "L", {}, (160, 120), True),
        ((640, 480), (30, 40), "CMYK", {}, (80, 60), False),  # OpenCV's CMYK is not Pillow's
        ((333, 251), (50, 67), "RGB", {}, (167, 126), False),  # odd: the last reduced pixel is partial
        ((641, 479), (29, 40), "RGB", {}, (81, 60), False),
    ],
)
def test_synthetic_jpegs_decode_reduced_within_tolerance(
    tmp_path, draft_scales, opencv_decodes, backend, source, size, mode, options, reduced, opencv_reads
):
    paths = [
        write_jpeg(tmp_path / f"f{seed}.jpg", synthetic(*source, seed), mode, **options) for seed in (0, 1)
    ]
    diffs = differences(paths, size, backend)
    by_opencv = backend == "opencv" and opencv_reads
    assert opencv_decodes == ([reduced, reduced] if by_opencv else [])
    assert draft_scales == ([] if by_opencv else [reduced, reduced])  # the reference makes no draft call
    assert all(d.shape == (*size, 3) for d in diffs)
    assert_within_tolerance(diffs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_sizes_keep_the_geometry(tmp_path, backend):
    """A steep ramp shows any stretch of the reduced image: 329 px at 1/8 decode to 42 pixels, the last
    one partial (source box 41.125 wide); resized without that box the ramp is off by 2.8 on average."""
    ramp = np.broadcast_to(np.linspace(0, 255, 329)[None, :, None], (249, 329, 3)).astype(np.uint8)
    path = write_jpeg(tmp_path / "ramp.jpg", np.ascontiguousarray(ramp))
    assert dct_scale((329, 249), (20, 15)) == 8
    (diff,) = differences([path], (15, 20), backend)
    assert diff.mean() < 0.5 and diff.max() <= 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("source", "size"),
    [((64, 48), (96, 128)), ((64, 48), (48, 64)), ((64, 48), (47, 65)), ((640, 480), (240, 320))],
)
def test_sizes_without_a_clean_downscale_decode_in_full(tmp_path, draft_scales, backend, source, size):
    """Larger than the source, the source's own size, up one side and down the other, or a size the
    1/2 decode would fit exactly (no room left for the resize): decoded at full size, as the reference
    (exactly with Pillow; OpenCV's INTER_LINEAR enlarges and shrinks within the tolerance)."""
    paths = [write_jpeg(tmp_path / f"f{seed}.jpg", synthetic(*source, seed)) for seed in (0, 1)]
    if backend == "pillow":
        assert all(np.array_equal(decode_image(str(p), size, backend), reference(p, size)) for p in paths)
    else:
        assert_within_tolerance(differences(paths, size, backend))
    assert draft_scales == []


def test_dct_scale_leaves_room_for_the_resize():
    assert dct_scale((640, 480), (224, 224)) == 2
    assert dct_scale((640, 480), (320, 240)) == 1  # the 1/2 decode would be the frame itself
    assert dct_scale((640, 480), (160, 120)) == 2
    assert dct_scale((640, 480), (112, 112)) == 2  # 1/4 would leave only 1.43x
    assert dct_scale((640, 480), (32, 24)) == 8
    assert dct_scale((640, 480), (640, 480)) == 1
    assert dct_scale((640, 480), (1280, 960)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_other_formats_go_through_pillow_unchanged(tmp_path, draft_scales, opencv_decodes, backend, fmt):
    path = tmp_path / f"f.{fmt.lower()}"
    Image.fromarray(synthetic(200, 150)).save(
        path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    assert np.array_equal(decode_image(str(path), (56, 72), backend), reference(path, (56, 72)))
    assert np.array_equal(decode_image(str(path), None, backend), synthetic(200, 150))
    assert draft_scales == [] and opencv_decodes == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_size_decode_without_a_size_is_the_reference(tmp_path, draft_scales, opencv_decodes, backend):
    path = write_jpeg(tmp_path / "f.jpg", synthetic(120, 90))
    with Image.open(path) as image:
        assert np.array_equal(decode_image(str(path), None, backend), np.asarray(image.convert("RGB")))
    assert draft_scales == [] and opencv_decodes == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [(224, 224), None])
def test_truncated_jpeg_names_the_file(tmp_path, backend, size):
    whole = write_jpeg(tmp_path / "whole.jpg", synthetic(640, 480)).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: unreadable or truncated image"):
        decode_image(str(path), size, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_not_a_jpeg_names_the_file(tmp_path, monkeypatch, backend):
    monkeypatch.setenv(images.BACKEND_VARIABLE, backend)
    path = tmp_path / "noise.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" + bytes(range(256)))
    with pytest.raises(ImageLoadError, match=rf"^{re.escape(str(path))}: "):
        load_frame(str(path), (32, 32))


@NEEDS_CV2
def test_jpeg_with_bytes_after_its_end_falls_back_to_pillow(tmp_path, draft_scales, opencv_decodes):
    """Anything but a plain whole JPEG (here a trailer after the end marker) is Pillow's to decode."""
    path = write_jpeg(tmp_path / "f.jpg", synthetic(640, 480))
    path.write_bytes(path.read_bytes() + b"camera trailer")
    frame = decode_image(str(path), (224, 224), "opencv")
    assert opencv_decodes == [] and draft_scales == [(320, 240)]
    assert np.array_equal(frame, pillow_draft_decode(path, (224, 224)))


@NEEDS_CV2
def test_opencv_ignores_exif_orientation_as_pillow_does(tmp_path, opencv_decodes):
    """A frame tagged "rotate 90" keeps its stored orientation with either backend."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = write_jpeg(tmp_path / "f.jpg", synthetic(640, 480), exif=exif.tobytes())
    assert_within_tolerance(differences([path], (120, 160), "opencv"))
    assert opencv_decodes == [(320, 240)]  # decoded by OpenCV, not turned (240x320)


def test_backend_is_chosen_by_the_environment_variable(monkeypatch):
    monkeypatch.setenv(images.BACKEND_VARIABLE, "pillow")
    assert resolve_image_backend() == "pillow"
    assert resolve_image_backend("pillow") == "pillow"
    monkeypatch.delenv(images.BACKEND_VARIABLE)
    assert resolve_image_backend() == ("opencv" if HAVE_CV2 else "pillow")
    monkeypatch.setenv(images.BACKEND_VARIABLE, "cv3")
    with pytest.raises(ValueError, match=r"image backend must be 'auto' or one of pillow, opencv, got 'cv3'"):
        resolve_image_backend()


def test_opencv_backend_without_cv2_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.delenv(images.BACKEND_VARIABLE, raising=False)
    assert resolve_image_backend() == "pillow"
    path = write_jpeg(tmp_path / "f.jpg", synthetic(640, 480))
    assert np.array_equal(decode_image(str(path), (224, 224)), pillow_draft_decode(path, (224, 224)))
    with pytest.raises(ValueError, match=r"needs opencv-python-headless: pip install 'vln-gym\[fast\]'"):
        decode_image(str(path), (224, 224), "opencv")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_cap_holds_on_either_backend(tmp_path, backend):
    path = write_jpeg(tmp_path / "f.jpg", synthetic(640, 480))
    set_max_image_pixels(640 * 480 - 1)
    try:
        with pytest.raises(ImageLoadError, match=r"640x480 = 307,200 pixels, over the 307,199 pixel cap"):
            decode_image(str(path), (224, 224), backend)
    finally:
        set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


def test_jpeg_frame_header_reads_the_start_of_frame(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    frame = synthetic(64, 48)
    plain = write_jpeg(tmp_path / "a.jpg", frame, exif=exif.tobytes()).read_bytes()
    progressive = write_jpeg(tmp_path / "b.jpg", frame, "L", progressive=True).read_bytes()
    assert jpeg_frame_header(plain) == (0xC0, 8, 64, 48, 3)
    assert jpeg_frame_header(progressive) == (0xC2, 8, 64, 48, 1)
    assert jpeg_frame_header(plain[:20]) is None  # cut before the frame header
    assert jpeg_frame_header(b"\x89PNG\r\n\x1a\n" + plain) is None
    assert jpeg_frame_header(b"\xff\xd8\xff\xda\x00\x08" + bytes(64)) is None  # scan before any frame
    assert jpeg_frame_header(b"\xff\xd8\x00\x00" + plain[2:]) is None  # not a marker


def test_size_must_be_positive(tmp_path):
    path = write_jpeg(tmp_path / "f.jpg", synthetic(64, 48))
    with pytest.raises(ValueError, match=r"size must be positive"):
        decode_image(str(path), (0, 32))


def test_bench_env_reports_both_floors_side_by_side():
    """The env's decode floor and the best reduced-scale decode, and the cold env's ratio to each."""
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
    assert figures["cold_ratio_env_decode"] == pytest.approx(
        figures["cold_steps_per_s"] / figures["reduced_frames_per_s"], rel=0.01
    )
    assert figures["cold_evicting_ratio_reduced"] == pytest.approx(
        figures["cold_evicting_steps_per_s"] / figures["best_reduced_frames_per_s"], rel=0.01
    )
    assert 1 <= figures["cold_evicting_cache_frames"] < figures["episodes"]
    assert figures["cold_faults_per_step"] >= 0 and figures["cold_evicting_faults_per_step"] >= 0
    assert figures["env_backend"] in images.BACKENDS
    assert figures["reduced_mean_abs_diff"] < MEAN_TOLERANCE
    assert figures["reduced_worst_frame_diff"] < FRAME_MEAN_TOLERANCE
    assert "pillow_draft" in figures["alternatives"]


HAVE_SIMPLEJPEG = images._simplejpeg() is not None


@pytest.mark.skipif(not (HAVE_CV2 and HAVE_SIMPLEJPEG), reason="needs both opencv and simplejpeg")
@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("RGB", {}),
        ("RGB", {"progressive": True}),
        ("RGB", {"subsampling": 0}),
        ("L", {}),
        ("L", {"progressive": True}),
    ],
)
def test_simplejpeg_decodes_the_pixels_of_cv2_imdecode(tmp_path, monkeypatch, mode, options):
    """The two libjpeg-turbo decoders of the OpenCV backend agree pixel for pixel at every DCT scale, so
    installing simplejpeg (the faster one) changes no frame; the same for whole decoded frames."""
    paths = [
        write_jpeg(tmp_path / f"f{seed}.jpg", synthetic(640, 480, seed), mode, **options) for seed in (0, 1)
    ]
    if VLN_EGO_FRAMES.is_dir():
        paths += sorted(VLN_EGO_FRAMES.glob("step_*.jpg"))[:4]
    for path in paths:
        data = path.read_bytes()
        for scale in (1, 2, 4, 8):
            shape = (480 // scale, 640 // scale, 3)
            by_simplejpeg = images._reduced_jpeg(data, scale, shape).copy()
            with monkeypatch.context() as patch:
                patch.setattr(images, "_simplejpeg", lambda: None)
                by_cv2 = images._reduced_jpeg(data, scale, shape)
            assert np.array_equal(by_simplejpeg, by_cv2), (path.name, scale)
    cases = [(path, size) for path in paths for size in [(224, 224), (112, 112), (37, 53)]]
    frames = [decode_image(str(path), size, "opencv") for path, size in cases]
    monkeypatch.setattr(images, "_simplejpeg", lambda: None)
    for frame, (path, size) in zip(frames, cases, strict=True):
        assert np.array_equal(frame, decode_image(str(path), size, "opencv")), (path.name, size)


@NEEDS_CV2
@pytest.mark.parametrize("size", [(480, 640), (224, 224), (112, 112)])
def test_reused_work_buffers_never_leak_into_returned_frames(tmp_path, size):
    """The OpenCV path decodes and blurs into per-thread buffers reused by the next decode: a frame it
    returned (here one at the source's own size, where no resize makes a new array) stays as it was."""
    first, second = (write_jpeg(tmp_path / f"f{seed}.jpg", synthetic(640, 480, seed)) for seed in (0, 1))
    frame = decode_image(str(first), size, "opencv")
    kept = frame.copy()
    other = decode_image(str(second), size, "opencv")
    assert not np.shares_memory(frame, other)
    assert np.array_equal(frame, kept)
    assert not any(np.shares_memory(frame, buffer) for buffer in images._work.arrays.values())


def test_frame_cache_size_is_settable(tmp_path):
    """A cache of 2 frames keeps the 2 most recent; a new size drops the frames, the same size keeps them."""
    paths = [str(write_jpeg(tmp_path / f"f{k}.jpg", synthetic(64, 48))) for k in range(3)]
    assert images.frame_cache_size() == images.DEFAULT_FRAME_CACHE_SIZE
    try:
        images.set_frame_cache_size(2)
        first = [load_frame(path, (32, 32)) for path in paths]
        assert load_frame(paths[2], (32, 32)) is first[2]
        assert load_frame(paths[0], (32, 32)) is not first[0]  # evicted by the third
        kept = load_frame(paths[0], (32, 32))
        images.set_frame_cache_size(2)
        assert load_frame(paths[0], (32, 32)) is kept
        for bad in (0, -1, True, 2.0):
            with pytest.raises(ValueError, match="frame cache size"):
                images.set_frame_cache_size(bad)
    finally:
        images.set_frame_cache_size(images.DEFAULT_FRAME_CACHE_SIZE)
    assert load_frame(paths[0], (32, 32)) is not kept
