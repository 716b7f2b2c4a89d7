"""The renderer reproduces frames stored from the original numpy renderer, pixel for pixel, on every path.

The fixture ``tests/fixtures/world_render_reference.npz`` holds the inputs (world seed and config, pose,
size) and the frame of each case. It was written by the renderer as it stood before the speed work (commit
``8fb084f``); regenerate it only when the pictures are meant to change:
``python tests/test_world_render_reference.py --write``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vln_gym.world import World, WorldConfig
from vln_gym.world.render import KERNELS, Renderer, numba_available

FIXTURE = Path(__file__).parent / "fixtures" / "world_render_reference.npz"
SIZES = ((224, 224), (128, 128), (64, 96), (31, 17), (2, 3))
WORLDS: tuple[tuple[int, dict[str, Any]], ...] = (
    (0, {}),
    (3, {}),
    (11, {"rooms": 6, "landmarks": 7, "wall_height": 3.0, "camera_height": 1.5}),
    (5, {"rooms": 1, "landmarks": 2, "cell_size": 0.25, "agent_radius": 0.1, "room_min_size": 2.0}),
)
AXIS_HEADINGS = (0.0, math.pi / 2, math.pi, -math.pi / 2)


def _poses(world: World, seed: int) -> list[tuple[float, float, float]]:
    """Random navigable poses, corner and wall-hugging poses of the first room, a pose on grid lines."""
    rng = np.random.default_rng(seed)
    width, depth = world.extent
    poses: list[tuple[float, float, float]] = []
    while len(poses) < 8:
        x, z = float(rng.uniform(0, width)), float(rng.uniform(0, depth))
        if world.is_navigable((x, 0.0, z)):
            poses.append((x, z, float(rng.uniform(-math.pi, math.pi))))
    room, cell = world.layout.rooms[0], world.config.cell_size
    gap = world.config.agent_radius + 1e-3
    x0, z0, x1, z1 = room.x0 * cell + gap, room.z0 * cell + gap, room.x1 * cell - gap, room.z1 * cell - gap
    poses += [
        (x0, z0, math.pi / 4),  # into the north-west corner
        (x1, z1, -3 * math.pi / 4),  # into the south-east corner
        (x0, z1, 0.0),  # along the west wall, axis-aligned
        (x1, z0, math.pi / 2),  # facing along the north wall
        ((room.x0 + 1) * cell, (room.z0 + 1) * cell, math.pi),  # exactly on grid lines
        ((room.x0 + room.x1) / 2 * cell, z0, 0.0),  # nose to the north wall
        (x0, (room.z0 + room.z1) / 2 * cell, -math.pi / 2),  # back to the west wall, facing east
    ]
    return poses


def reference_cases() -> list[dict[str, Any]]:
    """Every stored case: world, pose and size (sizes cycle so each pose is not drawn at every size)."""
    cases = []
    for seed, fields in WORLDS:
        world = World.generate(seed, WorldConfig(**fields))
        for k, (x, z, heading) in enumerate(_poses(world, seed)):
            for size in (SIZES[k % len(SIZES)], SIZES[(k + 2) % len(SIZES)]):
                cases.append({"seed": seed, "config": fields, "pose": [x, z, heading], "size": list(size)})
        x, z, _ = _poses(world, seed)[0]
        for heading in AXIS_HEADINGS:  # odd width: the centre ray is exactly axis-aligned
            cases.append({"seed": seed, "config": fields, "pose": [x, z, heading], "size": [31, 17]})
    return cases


def _renderers(kernel: str):
    cache: dict[tuple[int, str], Renderer] = {}

    def renderer_for(case: dict[str, Any]) -> Renderer:
        key = (case["seed"], json.dumps(case["config"], sort_keys=True))
        if key not in cache:
            world = World.generate(case["seed"], WorldConfig(**case["config"]))
            cache[key] = Renderer(world.layout, kernel=kernel)
        return cache[key]

    return renderer_for


def load_reference() -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    with np.load(FIXTURE) as data:
        cases = json.loads(str(data["cases"]))
        frames = [data[f"frame_{k}"] for k in range(len(cases))]
    return cases, frames


def write_reference(path: Path = FIXTURE) -> None:
    """Render every case through ``World.render`` (the renderer's default path) and store it."""
    cases = reference_cases()
    worlds: dict[str, World] = {}
    frames = []
    for case in cases:
        key = json.dumps([case["seed"], case["config"]], sort_keys=True)
        world = worlds.setdefault(key, World.generate(case["seed"], WorldConfig(**case["config"])))
        x, z, heading = case["pose"]
        frames.append(world.render((x, 0.0, z), heading, tuple(case["size"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"frame_{k}": frame for k, frame in enumerate(frames)}
    np.savez_compressed(path, cases=np.array(json.dumps(cases)), **arrays)
    print(f"wrote {len(cases)} frames to {path} ({path.stat().st_size / 1024:.0f} KiB)")


@pytest.fixture(scope="module")
def reference() -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    return load_reference()


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_path_reproduces_the_stored_frames(kernel: str, reference) -> None:
    if kernel == "numba" and not numba_available():
        pytest.skip("numba is not installed (pip install vln-gym[fast])")
    cases, frames = reference
    renderer_for = _renderers(kernel)
    mismatched = []
    for case, frame in zip(cases, frames, strict=True):
        x, z, heading = case["pose"]
        size = tuple(case["size"])
        for _ in range(2):  # twice: a reused work buffer must not leak the previous frame into the next
            got = renderer_for(case).render(x, z, heading, size)
            if got.shape != frame.shape or not np.array_equal(got, frame):
                mismatched.append(case)
                break
    assert not mismatched, f"{len(mismatched)} of {len(cases)} frames differ, first: {mismatched[0]}"


def test_the_fixture_covers_sizes_worlds_and_wall_poses(reference) -> None:
    cases, frames = reference
    assert cases == reference_cases()  # the generator here still writes these very cases
    assert {tuple(c["size"]) for c in cases} == set(SIZES)
    assert {c["seed"] for c in cases} == {seed for seed, _ in WORLDS}
    assert all(f.dtype == np.uint8 and f.shape == (*c["size"], 3) for c, f in zip(cases, frames, strict=True))
    assert FIXTURE.stat().st_size < 1024 * 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="(Re)write the renderer's reference frames.")
    parser.add_argument("--write", action="store_true", help=f"render the cases and write {FIXTURE}")
    if parser.parse_args().write:
        write_reference()
