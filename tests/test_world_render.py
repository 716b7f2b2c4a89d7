"""First-person renderer and top-down map: shapes, determinism, colours, geometry of turning, pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vln_gym.geometry import TURN_LEFT, heading_towards
from vln_gym.world import World, WorldConfig
from vln_gym.world.palette import shade_table


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(3)


def _shades(rgb) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in row) for row in shade_table([rgb])}


def _view_of(world: World, landmark, gap: float = 1.2):
    """A navigable pose ``gap`` metres in front of a landmark's face, facing its centre."""
    cell = world.config.cell_size
    half = max(len({i for i, _ in landmark.cells}), len({j for _, j in landmark.cells})) * cell / 2
    x, z = landmark.position
    for dx, dz in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        pose = (x + dx * (half + gap), 0.0, z + dz * (half + gap))
        if world.is_navigable(pose) and world.region_at(pose) == landmark.room:
            return pose, heading_towards(pose, (x, 0.0, z))
    raise AssertionError(f"no free view of {landmark.name}")


def test_shape_dtype_and_determinism(world: World) -> None:
    pose = (5.0, 0.0, 5.0)
    for size in ((224, 224), (64, 96), (31, 17)):
        frame = world.render(pose, 0.7, size=size)
        assert frame.shape == (*size, 3) and frame.dtype == np.uint8
    a = world.render(pose, 0.7)
    assert np.array_equal(a, World.generate(3).render(pose, 0.7))
    assert not np.array_equal(a, world.render(pose, 0.9))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_landmark_faced_fills_the_centre_columns_with_its_colour(seed: int) -> None:
    world = World.generate(seed, WorldConfig(landmarks=6))
    checked = 0
    for landmark in world.landmarks:
        if landmark.kind == "door":
            continue
        pose, heading = _view_of(world, landmark)
        frame = world.render(pose, heading, size=(64, 64))
        shades = _shades(landmark.rgb)
        centre = frame[20:44, 31:33].reshape(-1, 3)
        assert all(tuple(int(v) for v in px) in shades for px in centre), landmark.name
        checked += 1
    assert checked >= 1


def test_room_walls_take_the_room_colour(world: World) -> None:
    room = world.layout.rooms[0]
    cell = world.config.cell_size
    pose = ((room.x0 + room.x1) / 2 * cell, 0.0, room.z0 * cell + 0.6)  # 0.6 m from the north wall
    heading = 0.0  # facing -z, the north wall
    frame = world.render(pose, heading, size=(64, 64))
    assert tuple(int(v) for v in frame[32, 32]) in _shades(room.style.wall)


def test_turning_left_shifts_the_picture_right(world: World) -> None:
    pose = (5.0, 0.0, 5.0)
    assert world.is_navigable(pose)
    for heading in (0.3, 2.0, -1.5):
        before = world.render(pose, heading, size=(96, 224)).astype(np.int32)
        _, turned, _ = world.move(pose, heading, TURN_LEFT)
        after = world.render(pose, turned, size=(96, 224)).astype(np.int32)
        errors = {s: np.abs(after[:, 60 + s : 164 + s] - before[:, 60:164]).mean() for s in range(-60, 61)}
        shift = min(errors, key=errors.get)
        expected = math.tan(math.radians(15)) * 112  # 30 px at the centre of a 90-degree 224-px view
        assert abs(shift - expected) <= 6


def test_walls_grow_as_the_agent_approaches(world: World) -> None:
    room = world.layout.rooms[0]
    cell = world.config.cell_size
    x = (room.x0 + room.x1) / 2 * cell
    far = world.render((x, 0.0, room.z1 * cell - 0.5), 0.0, size=(64, 64))
    near = world.render((x, 0.0, room.z0 * cell + 0.5), 0.0, size=(64, 64))
    ceiling = set(map(tuple, shade_table([(236, 234, 228)])))

    def ceiling_rows(frame: np.ndarray) -> int:
        return sum(tuple(int(v) for v in frame[r, 32]) in ceiling for r in range(32))

    assert ceiling_rows(near) < ceiling_rows(far)


def test_pictures_saved_to_disk_have_many_colours(tmp_path, world: World) -> None:
    from vln_gym.world import generate_episodes, world_for_episode

    episode = generate_episodes(seed=1, num_episodes=1)[0]
    ep_world = world_for_episode(episode)
    frame = ep_world.render(episode.agent_position, episode.agent_heading)
    path = list(episode.reference_path[:20])
    top = ep_world.top_down(
        path=path,
        reference=episode.reference_path,
        goal=episode.goal_position,
        success_distance=1.0,
        size=(200, 240),
    )
    assert top.shape == (200, 240, 3)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    Image.fromarray(top).save(tmp_path / "map.png")
    frame_back = np.asarray(Image.open(tmp_path / "frame.png"))
    map_back = np.asarray(Image.open(tmp_path / "map.png"))
    assert np.array_equal(frame_back, frame) and np.array_equal(map_back, top)
    assert len(np.unique(frame_back.reshape(-1, 3), axis=0)) >= 12
    colours = {tuple(int(v) for v in c) for c in np.unique(map_back.reshape(-1, 3), axis=0)}
    assert len(colours) >= 8
    for overlay in (
        (40, 90, 220),
        (60, 170, 80),
        (220, 40, 40),
        (240, 150, 150),
    ):  # path, reference, goal, circle
        assert overlay in colours
    for landmark in ep_world.landmarks:
        assert tuple(landmark.rgb) in colours


def test_every_pixel_is_painted_from_the_palette() -> None:
    world = World.generate(6)
    layout = world.layout
    styles = [layout.region_style(r) for r in range(len(layout.rooms) + 1)]
    rgbs = (
        [(236, 234, 228)]
        + [s.wall for s in styles]
        + [s.floor for s in styles]
        + [lm.rgb for lm in layout.landmarks]
    )
    palette = {tuple(int(v) for v in c) for c in shade_table(rgbs)}
    rng = np.random.default_rng(4)
    width, depth = world.extent
    # the ceiling is drawn at the brightest 10 levels; no other material has those exact colours
    ceiling = {tuple(int(v) for v in c) for c in shade_table([(236, 234, 228)])[-10:]}
    poses = 0
    while poses < 40:
        pose = (float(rng.uniform(0, width)), 0.0, float(rng.uniform(0, depth)))
        if not world.is_navigable(pose):
            continue
        poses += 1
        frame = world.render(pose, float(rng.uniform(-math.pi, math.pi)), size=(48, 40))
        colours = {tuple(int(v) for v in c) for c in np.unique(frame.reshape(-1, 3), axis=0)}
        assert colours <= palette
        lower = {tuple(int(v) for v in c) for c in np.unique(frame[24:].reshape(-1, 3), axis=0)}
        assert not (lower & ceiling)
