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
from collections.abc import Sequence
from typing import overload

import numpy as np

from vln_gym.arguments import real_number, whole_number
from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, Vec3
from vln_gym.world.config import MIN_FORWARD_STEP, WorldConfig, scene_id
from vln_gym.world.instructions import instruction_for_path
from vln_gym.world.layout import Landmark
from vln_gym.world.navigation import UnreachableGoalError
from vln_gym.world.world import World, world_from_scene_id

GOAL_AT_LANDMARK = 0.75  # chance that the goal is in front of a landmark (when the world has any)
LANDMARK_GAP = 0.7  # metres between a landmark's face and the goal in front of it
START_TRIES = 200
GOAL_TRIES = 50
# Draws of (start, goal, heading) per episode: the geodesic distance is measured in free space, but the agent
# only reaches the points of its action lattice (e.g. 0.5 m steps and 90-degree turns from the start
# heading: four directions), which can miss a narrow doorway or corridor that free space passes through.
# Such a draw is rejected and redrawn; draws the expert completes are unchanged.
POSE_TRIES = 20
# Instructions grow with the path (~20-40 characters per metre of geodesic in practice): the limit below
# leaves a wide margin, so a lazy episode set can declare a fixed observation space before any episode
# exists; `WorldEpisodes` checks every episode it builds against it.
INSTRUCTION_BASE_CHARS = 128
INSTRUCTION_CHARS_PER_METRE = 48


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
    """One episode in ``world`` drawn from ``rng``: a start, goal and heading from which the expert,
    restricted to the episode's actions, reaches the goal (draws it cannot complete are redrawn)."""
    for _ in range(POSE_TRIES):
        start, goal, geodesic, landmark = _sample(rng, world, config)
        heading = float(rng.uniform(-math.pi, math.pi))
        try:
            actions = world.expert_actions(start, heading, goal, success_distance, forward_step, turn_angle)
            break
        except UnreachableGoalError:
            continue
    else:
        raise RuntimeError(
            f"world {world.scene_id}: {POSE_TRIES} start/goal draws in a row that {forward_step:g} m steps "
            f"and {turn_angle:g}-degree turns cannot complete; use smaller steps or turns"
        )
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


def _episode_settings(
    seed: int,
    config: WorldConfig,
    success_distance: float | None,
    episodes_per_world: int,
    forward_step: float,
    turn_angle: float,
) -> float:
    """Validate the shared arguments (one ValueError line naming the argument); returns the success radius
    written into the episodes."""
    whole_number("seed", seed, low=0)
    whole_number("episodes_per_world", episodes_per_world, low=1)
    real_number("forward_step", forward_step, low=MIN_FORWARD_STEP)
    real_number("turn_angle", turn_angle, low=0.0, high=180.0, low_open=True)
    if success_distance is None:
        return config.success_distance
    return real_number("success_distance", success_distance, low=0.0, low_open=True)


def generate_episode(
    seed: int,
    index: int,
    config: WorldConfig = WorldConfig(),  # noqa: B008 (frozen dataclass)
    *,
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    success_distance: float | None = None,
    episodes_per_world: int = 10,
) -> Episode:
    """Episode ``world-s{seed}-e{index}`` alone: equal to ``generate_episodes(seed, n, ...)[index]`` for any
    ``n > index`` (each episode draws from its own ``(seed, index)`` stream in world ``index //
    episodes_per_world``), at the cost of that one episode (~10 ms)."""
    radius = _episode_settings(seed, config, success_distance, episodes_per_world, forward_step, turn_angle)
    if int(index) < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    index = int(index)
    world = world_from_scene_id(scene_id(world_seed(int(seed), index // episodes_per_world), config))
    return make_episode(
        world,
        np.random.default_rng([int(seed), index]),
        f"world-s{int(seed)}-e{index}",
        config=config,
        forward_step=forward_step,
        turn_angle=turn_angle,
        success_distance=radius,
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
    renders them); their ``scene_id`` rebuilds the world (`world_for_episode`). Prefix-stable: episode
    ``index`` does not depend on ``num_episodes`` (`generate_episode` builds one alone; `WorldEpisodes`
    builds them on demand). Instructions are at most ``instruction_length_limit(config)`` characters.
    """
    _episode_settings(seed, config, success_distance, episodes_per_world, forward_step, turn_angle)
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
    return [
        generate_episode(
            seed,
            index,
            config,
            forward_step=forward_step,
            turn_angle=turn_angle,
            success_distance=success_distance,
            episodes_per_world=episodes_per_world,
        )
        for index in range(int(num_episodes))
    ]


def instruction_length_limit(config: WorldConfig) -> int:
    """Most characters an instruction generated under ``config`` can have (at least 1024)."""
    return max(1024, INSTRUCTION_BASE_CHARS + math.ceil(INSTRUCTION_CHARS_PER_METRE * config.max_path_length))


class WorldEpisodes(Sequence[Episode]):
    """``generate_episodes(seed, num_episodes, ...)`` as a lazy sequence: episode ``i`` is generated (by
    `generate_episode`) the first time it is indexed and kept, so a large set costs nothing up front.
    ``max_instruction_length`` bounds every instruction (checked as each episode is built). Picklable (it
    holds its arguments and the episodes built so far)."""

    def __init__(
        self,
        seed: int,
        num_episodes: int,
        config: WorldConfig = WorldConfig(),  # noqa: B008 (frozen dataclass)
        *,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        success_distance: float | None = None,
        episodes_per_world: int = 10,
    ) -> None:
        _episode_settings(seed, config, success_distance, episodes_per_world, forward_step, turn_angle)
        if num_episodes < 0:
            raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
        self.seed = int(seed)
        self.num_episodes = int(num_episodes)
        self.config = config
        self._options = {
            "forward_step": float(forward_step),
            "turn_angle": float(turn_angle),
            "success_distance": success_distance,
            "episodes_per_world": int(episodes_per_world),
        }
        self.max_instruction_length = instruction_length_limit(config)
        self._built: dict[int, Episode] = {}

    def __len__(self) -> int:
        return self.num_episodes

    @overload
    def __getitem__(self, index: int) -> Episode: ...

    @overload
    def __getitem__(self, index: slice) -> list[Episode]: ...

    def __getitem__(self, index: int | slice) -> Episode | list[Episode]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_episodes))]
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"episode index must be an int or a slice, got {index!r}")
        position = int(index) + self.num_episodes if index < 0 else int(index)
        if not 0 <= position < self.num_episodes:
            raise IndexError(f"episode index {index} out of range for {self.num_episodes} episodes")
        episode = self._built.get(position)
        if episode is None:
            episode = generate_episode(self.seed, position, self.config, **self._options)
            if len(episode.instruction) > self.max_instruction_length:
                raise RuntimeError(
                    f"{episode.source}: instruction: {len(episode.instruction)} characters, more than the "
                    f"{self.max_instruction_length} allowed by instruction_length_limit (a generator bug)"
                )
            self._built[position] = episode
        return episode

    @property
    def generated(self) -> int:
        """How many episodes have been built so far."""
        return len(self._built)


def world_for_episode(episode: Episode) -> World:
    """The built-in world an episode was generated in (from ``episode.scene_id``; cached)."""
    if not episode.scene_id:
        where = episode.source or episode.episode_id
        raise ValueError(f"{where}: scene_id: missing; only built-in-world episodes have a world")
    return world_from_scene_id(episode.scene_id)
