"""Seeded episodes in built-in worlds: start pose, goal, expert path, reference path, instruction.

Goals are usually placed in front of a landmark (so "stop next to the red pillar" is answerable from the
pictures), otherwise in the middle of a room ("stop in the middle of the green room"). Starts are
anywhere the agent fits, with a start-to-goal geodesic distance in ``[min_path_length, max_path_length]``
and a uniformly random heading, so a path needs several decisions (turns, doorways). Every
``episodes_per_world`` consecutive episodes share one world; world seeds and episode draws derive from
``seed`` alone.
"""

from __future__ import annotations

import math

import numpy as np

from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, Vec3
from vln_gym.world.config import WorldConfig, scene_id
from vln_gym.world.instructions import instruction_for_path
from vln_gym.world.layout import Landmark
from vln_gym.world.world import World, world_from_scene_id

GOAL_AT_LANDMARK = 0.75  # chance that the goal is in front of a landmark (when the world has any)
LANDMARK_GAP = 0.7  # metres between a landmark's face and the goal in front of it
START_TRIES = 200
GOAL_TRIES = 50


def world_seed(seed: int, group: int) -> int:
    """Seed of the ``group``-th world of an episode set (stable, 31-bit)."""
    return int(np.random.SeedSequence([seed, group]).generate_state(1)[0] >> 1)


def _random_point(rng: np.random.Generator, world: World) -> Vec3 | None:
    """A uniformly drawn point in a random room (85 %) or corridor cell; None if the agent does not fit."""
    layout = world.layout
    cell, r = world.config.cell_size, world.config.agent_radius
    if rng.random() < 0.85 or not layout.connections:
        room = layout.rooms[int(rng.integers(len(layout.rooms)))]
        x = rng.uniform(room.x0 * cell + r, room.x1 * cell - r)
        z = rng.uniform(room.z0 * cell + r, room.z1 * cell - r)
    else:
        connection = layout.connections[int(rng.integers(len(layout.connections)))]
        i, j = connection.cells[int(rng.integers(len(connection.cells)))]
        x, z = (j + rng.uniform(0.0, 1.0)) * cell, (i + rng.uniform(0.0, 1.0)) * cell
    point = (float(x), 0.0, float(z))
    return point if world.is_navigable(point) else None


def _room_centre(rng: np.random.Generator, world: World) -> Vec3 | None:
    """The middle of a random room, or a navigable point within 0.75 m of it when a landmark is there."""
    room = world.layout.rooms[int(rng.integers(len(world.layout.rooms)))]
    cell = world.config.cell_size
    x, z = (room.x0 + room.x1) / 2 * cell, (room.z0 + room.z1) / 2 * cell
    for dx, dz in ((0, 0), (0.75, 0), (-0.75, 0), (0, 0.75), (0, -0.75)):
        point = (float(x + dx), 0.0, float(z + dz))
        if world.is_navigable(point):
            return point
    return None


def _goal_near(rng: np.random.Generator, world: World, landmark: Landmark) -> Vec3 | None:
    """A navigable point in the landmark's room about LANDMARK_GAP in front of one of its faces."""
    cell = world.config.cell_size
    rows = [i for i, _ in landmark.cells]
    cols = [j for _, j in landmark.cells]
    if landmark.kind == "door":
        half_x = half_z = 0.0
        gap = 1.0
    else:
        half_x = (max(cols) - min(cols) + 1) * cell / 2
        half_z = (max(rows) - min(rows) + 1) * cell / 2
        gap = LANDMARK_GAP + world.config.agent_radius
    x, z = landmark.position
    options = [(x + half_x + gap, z), (x - half_x - gap, z), (x, z + half_z + gap), (x, z - half_z - gap)]
    order = rng.permutation(len(options))
    for k in order:
        point = (float(options[int(k)][0]), 0.0, float(options[int(k)][1]))
        if world.is_navigable(point) and world.region_at(point) == landmark.room:
            return point
    return None


def _sample(
    rng: np.random.Generator, world: World, config: WorldConfig
) -> tuple[Vec3, Vec3, float, Landmark | None]:
    """``(start, goal, geodesic, goal landmark)``."""
    for _ in range(GOAL_TRIES):
        landmark = None
        goal = None
        if world.landmarks and rng.random() < GOAL_AT_LANDMARK:
            landmark = world.landmarks[int(rng.integers(len(world.landmarks)))]
            goal = _goal_near(rng, world, landmark)
            landmark = landmark if goal is not None else None
        if goal is None:
            goal = _room_centre(rng, world)
        if goal is None:
            continue
        for _ in range(START_TRIES):
            start = _random_point(rng, world)
            if start is None:
                continue
            distance = world.geodesic_distance(start, goal)
            if config.min_path_length <= distance <= config.max_path_length:
                return start, goal, distance, landmark
    raise RuntimeError(
        f"world {world.scene_id}: no start/goal pair with geodesic distance in "
        f"[{config.min_path_length}, {config.max_path_length}] m; widen the path length range"
    )


def make_episode(
    world: World,
    rng: np.random.Generator,
    episode_id: str,
    *,
    config: WorldConfig,
    forward_step: float,
    turn_angle: float,
    success_distance: float,
) -> Episode:
    """One episode in ``world`` drawn from ``rng``."""
    start, goal, geodesic, landmark = _sample(rng, world, config)
    heading = float(rng.uniform(-math.pi, math.pi))
    actions = world.expert_actions(start, heading, goal, success_distance, forward_step, turn_angle)
    poses = world.follow(start, heading, actions, forward_step, turn_angle)
    reference = [start] + [p for (p, _, _), a in zip(poses, actions, strict=True) if a == MOVE_FORWARD]
    instruction = instruction_for_path(rng, world.layout, reference, actions, turn_angle, landmark)
    return Episode(
        episode_id=episode_id,
        instruction=instruction,
        images=(),
        agent_position=start,
        agent_heading=heading,
        goal_position=goal,
        distance_to_goal=geodesic,
        reference_path=tuple(reference),
        expert_actions=tuple(actions),
        geodesic_distance=geodesic,
        scene_id=world.scene_id,
        success_distance=success_distance,
        source=f"vln_gym.world:{episode_id}",
        extra={"goal_landmark": landmark.name if landmark is not None else None},
    )


def generate_episodes(
    seed: int,
    num_episodes: int,
    config: WorldConfig = WorldConfig(),  # noqa: B008 (frozen dataclass)
    *,
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    success_distance: float | None = None,
    episodes_per_world: int = 10,
) -> list[Episode]:
    """``num_episodes`` episodes ``world-s{seed}-e{index}``; same arguments, same episodes.

    ``success_distance`` defaults to ``config.success_distance`` (1.0 m). Episodes have no images (the env
    renders them); their ``scene_id`` rebuilds the world (`world_for_episode`).
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_episodes < 0 or episodes_per_world < 1:
        raise ValueError(
            f"need num_episodes >= 0 and episodes_per_world >= 1, got {num_episodes}, {episodes_per_world}"
        )
    radius = config.success_distance if success_distance is None else float(success_distance)
    if radius <= 0:
        raise ValueError(f"success_distance must be > 0, got {radius}")
    episodes = []
    world = None
    for index in range(int(num_episodes)):
        if index % episodes_per_world == 0:
            world = world_from_scene_id(scene_id(world_seed(int(seed), index // episodes_per_world), config))
        rng = np.random.default_rng([int(seed), index])
        episodes.append(
            make_episode(
                world,
                rng,
                f"world-s{int(seed)}-e{index}",
                config=config,
                forward_step=forward_step,
                turn_angle=turn_angle,
                success_distance=radius,
            )
        )
    return episodes


def world_for_episode(episode: Episode) -> World:
    """The built-in world an episode was generated in (from ``episode.scene_id``; cached)."""
    if not episode.scene_id:
        where = episode.source or episode.episode_id
        raise ValueError(f"{where}: scene_id: missing; only built-in-world episodes have a world")
    return world_from_scene_id(episode.scene_id)
