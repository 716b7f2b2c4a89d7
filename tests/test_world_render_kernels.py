"""Renderer kernels: selection and fallback, both agree, fresh frames, pickling, bad poses, the bench."""

from __future__ import annotations

import importlib.util
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from vln_gym.world import World
from vln_gym.world import render as render_module
from vln_gym.world.render import KERNEL_VARIABLE, Renderer, numba_available, resolve_kernel

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed (vln-gym[fast])")
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(7)


def _random_poses(world: World, count: int, seed: int):
    """Poses anywhere inside the plan, walls included, with random sizes."""
    rng = np.random.default_rng(seed)
    width, depth = world.extent
    for _ in range(count):
        size = (int(rng.integers(2, 70)), int(rng.integers(2, 70)))
        yield float(rng.uniform(0, width)), float(rng.uniform(0, depth)), float(rng.uniform(-4, 4)), size


def test_auto_picks_numba_when_it_imports_and_numpy_otherwise(monkeypatch) -> None:
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert resolve_kernel("auto") == ("numba" if numba_available() else "numpy")
    monkeypatch.setattr(render_module, "_compiled", lambda: None)  # as if numba were not installed
    assert resolve_kernel("auto") == "numpy"
    with pytest.raises(ValueError, match=r"needs numba: pip install 'vln-gym\[fast\]'"):
        resolve_kernel("numba")


def test_the_environment_variable_chooses_and_bad_names_are_refused(monkeypatch, world: World) -> None:
    monkeypatch.setenv(KERNEL_VARIABLE, "numpy")
    assert Renderer(world.layout).kernel == "numpy"
    assert world.render((5.0, 0.0, 5.0), 0.3).shape == (224, 224, 3)
    monkeypatch.setenv(KERNEL_VARIABLE, "opengl")
    with pytest.raises(ValueError, match="one of numpy, numba, got 'opengl'"):
        Renderer(world.layout)
    with pytest.raises(ValueError, match="got 'cuda'"):
        Renderer(world.layout, kernel="cuda")


@needs_numba
def test_numba_and_numpy_agree_on_random_poses_and_sizes(world: World) -> None:
    fast, slow = Renderer(world.layout, kernel="numba"), Renderer(world.layout, kernel="numpy")
    for x, z, heading, size in _random_poses(world, 150, seed=1):
        frame = slow.render(x, z, heading, size)
        assert np.array_equal(fast.render(x, z, heading, size), frame), (x, z, heading, size)


@pytest.mark.parametrize("kernel", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_each_frame_is_a_new_array_that_later_frames_leave_alone(kernel: str, world: World) -> None:
    renderer = Renderer(world.layout, kernel=kernel)
    first = renderer.render(5.0, 5.0, 0.3, (64, 80))
    kept = first.copy()
    second = renderer.render(5.0, 5.0, 2.0, (64, 80))
    assert first.flags.c_contiguous and first.flags.writeable and first.shape == (64, 80, 3)
    assert not np.shares_memory(first, second)
    assert np.array_equal(first, kept)  # the second frame reused the work buffers, not the first frame
    first[:] = 0  # the caller may write into its frame; the next frame is unaffected
    assert np.array_equal(renderer.render(5.0, 5.0, 0.3, (64, 80)), kept)


@pytest.mark.parametrize("kernel", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_a_used_renderer_pickles_without_its_buffers_and_renders_the_same(kernel: str, world: World) -> None:
    renderer = Renderer(world.layout, kernel=kernel)
    frame = renderer.render(6.0, 4.0, 1.0, (224, 224))
    data = pickle.dumps(renderer)
    assert len(data) < 64 * 1024  # the 224x224 buffers (over 1 MB) stay behind
    copy = pickle.loads(data)
    assert copy.kernel == kernel and not copy._work
    assert np.array_equal(copy.render(6.0, 4.0, 1.0, (224, 224)), frame)


@pytest.mark.parametrize("kernel", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_threads_sharing_one_renderer_get_their_own_frames(kernel: str, world: World) -> None:
    renderer = Renderer(world.layout, kernel=kernel)
    poses = [(x, z, heading) for x, z, heading, _ in _random_poses(world, 48, seed=3)]
    expected = [renderer.render(*pose, (224, 224)) for pose in poses]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda pose: renderer.render(*pose, (224, 224)), poses))
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_a_pickled_numba_renderer_falls_back_where_numba_is_missing(monkeypatch, world: World) -> None:
    data = pickle.dumps(Renderer(world.layout))  # "auto"
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    monkeypatch.setattr(render_module, "_compiled", lambda: None)
    assert pickle.loads(data).kernel == "numpy"


@pytest.mark.parametrize(
    "pose",
    [(-0.1, 5.0, 0.0), (5.0, 1e6, 0.0), (5.0, 5.0, math.nan), (math.inf, 5.0, 0.0), (5.0, 5.0, math.inf)],
)
def test_a_pose_outside_the_plan_or_not_finite_is_a_clear_error(pose, world: World) -> None:
    for kernel in ["numpy"] + (["numba"] if numba_available() else []):
        with pytest.raises(ValueError, match="outside the plan"):
            Renderer(world.layout, kernel=kernel).render(*pose, (32, 32))


def test_bench_world_reports_every_kernel_side_by_side(world: World) -> None:
    spec = importlib.util.spec_from_file_location("_bench_world_under_test", SCRIPTS / "bench_world.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    kernels = bench._kernels(None)
    figures = bench.bench_renderer(world, kernels, frames=10)
    for size in (128, 224):
        for kernel in kernels:
            assert figures[f"render_fps_{size}_{kernel}"] > 0
            assert figures[f"render_wall_fps_{size}_{kernel}"] > 0
            assert figures[f"render_page_faults_per_frame_{size}_{kernel}"] >= 0
        default = figures["render_kernel_default"]
        assert figures[f"render_fps_{size}"] == figures[f"render_fps_{size}_{default}"]
    assert ("render_numba_speedup_224" in figures) == ("numba" in kernels)
    assert bench._kernels("numpy") == ["numpy"]
    with pytest.raises(ValueError, match="got 'gpu'"):
        bench._kernels("numpy,gpu")
