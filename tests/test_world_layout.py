"""Floor plans: determinism, scene ids, config checks, landmark placement rules, connectivity."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from vln_gym.world import World, WorldConfig, parse_scene_id, scene_id, world_from_scene_id
from vln_gym.world.layout import CLEARANCE_CELLS, generate_layout


def _same_layout(a, b) -> bool:
    return (
        np.array_equal(a.solid, b.solid)
        and np.array_equal(a.region, b.region)
        and np.array_equal(a.landmark_at, b.landmark_at)
        and a.rooms == b.rooms
        and a.landmarks == b.landmarks
        and a.connections == b.connections
    )


def test_same_seed_same_layout_and_different_seed_differs() -> None:
    assert _same_layout(generate_layout(7, WorldConfig()), generate_layout(7, WorldConfig()))
    assert not _same_layout(generate_layout(7, WorldConfig()), generate_layout(8, WorldConfig()))


def test_scene_id_round_trip_rebuilds_the_same_world() -> None:
    config = WorldConfig(rooms=3, landmarks=2, loop_probability=0.5)
    world = World.generate(11, config)
    assert world.scene_id == scene_id(11, config)
    assert world.scene_id.startswith("vlnworld/v1?seed=11&rooms=3&landmarks=2&")
    seed, parsed = parse_scene_id(world.scene_id)
    assert (seed, parsed) == (11, config)
    rebuilt = world_from_scene_id(world.scene_id)
    assert _same_layout(rebuilt.layout, world.layout)
    assert world_from_scene_id(world.scene_id) is rebuilt  # cached


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("habitat/v1?seed=1", "not a built-in world id"),
        ("vlnworld/v1?rooms=2", "missing field 'seed'"),
        ("vlnworld/v1?seed=1&colour=3", "unknown field 'colour'"),
        ("vlnworld/v1?seed=1&rooms=many", "field 'rooms': not a number"),
    ],
)
def test_bad_scene_ids_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scene_id(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [("rooms", 0), ("rooms", 7), ("landmarks", 8), ("agent_radius", 0.3), ("max_path_length", 1.0)],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"WorldConfig.{field}="):
        WorldConfig(**{field: value})


@pytest.mark.parametrize("seed", range(6))
def test_layout_rules(seed: int) -> None:
    config = WorldConfig(rooms=1 + seed % 6, landmarks=seed + 1)
    layout = generate_layout(seed, config)
    assert len(layout.rooms) == config.rooms
    assert len(layout.landmarks) == config.landmarks
    assert len({lm.colour for lm in layout.landmarks}) == config.landmarks
    assert len({room.style.name for room in layout.rooms}) == config.rooms
    solid = layout.solid
    assert solid[0].all() and solid[-1].all() and solid[:, 0].all() and solid[:, -1].all()
    for landmark in layout.landmarks:
        for i, j in landmark.cells:
            assert solid[i, j] and layout.landmark_at[i, j] == landmark.index
        if landmark.kind != "door":
            rows = [i for i, _ in landmark.cells]
            cols = [j for _, j in landmark.cells]
            c = CLEARANCE_CELLS
            ring = solid[min(rows) - c : max(rows) + c + 1, min(cols) - c : max(cols) + c + 1].copy()
            ring[c:-c, c:-c] = False
            assert not ring.any(), f"{landmark.name} is closer than {c} cells to another solid cell"
    # every free cell is reachable from every other (4-connected BFS)
    free = np.argwhere(~solid)
    seen = {tuple(free[0])}
    queue = deque(seen)
    while queue:
        i, j = queue.popleft()
        for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            cell = (i + di, j + dj)
            if not solid[cell] and cell not in seen:
                seen.add(cell)
                queue.append(cell)
    assert len(seen) == len(free)


def test_rooms_are_one_region_and_hallway_joins_them() -> None:
    layout = generate_layout(3, WorldConfig())
    for room in layout.rooms:
        inside = layout.region[room.z0 : room.z1, room.x0 : room.x1]
        assert ((inside == room.index) | (inside == -1)).all()  # -1: landmarks standing in the room
    assert len(layout.connections) >= len(layout.rooms) - 1
    for connection in layout.connections:
        assert all(layout.region[i, j] == layout.hallway_region for i, j in connection.cells)
