"""`World`: one procedural floor plan with its navigation truth, renderer and map drawing."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from vln_gym.geometry import STOP, Vec3
from vln_gym.world.config import WorldConfig, parse_scene_id, scene_id
from vln_gym.world.layout import Landmark, Layout, generate_layout
from vln_gym.world.navigation import Navigator
from vln_gym.world.render import Renderer
from vln_gym.world.topdown import TopDown


class World:
    """A built-in world: ``World.generate(seed, config)``; same seed and config, same world.

    Positions are Habitat ``[x, y, z]`` metres (floor at y = 0, the plan spans x, z >= 0), headings radians
    (0 faces -z, TURN_LEFT increases heading). Geodesic distances are in metres through free space.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.seed = layout.seed
        self.config = layout.config
        self.navigator = Navigator(layout)
        self._renderer: Renderer | None = None
        self._top_down: TopDown | None = None

    @classmethod
    def generate(cls, seed: int, config: WorldConfig = WorldConfig()) -> World:  # noqa: B008 (frozen)
        return cls(generate_layout(int(seed), config))

    @property
    def scene_id(self) -> str:
        return scene_id(self.seed, self.config)

    @property
    def landmarks(self) -> tuple[Landmark, ...]:
        return self.layout.landmarks

    @property
    def extent(self) -> tuple[float, float]:
        """``(width along x, depth along z)`` of the plan in metres."""
        nz, nx = self.layout.solid.shape
        return nx * self.config.cell_size, nz * self.config.cell_size

    # ------------------------------------------------------------------ pictures

    def render(
        self, position: Sequence[float], heading: float, size: tuple[int, int] = (224, 224)
    ) -> np.ndarray:
        """First-person RGB uint8 ``[H, W, 3]`` (``size = (H, W)``, 90-degree horizontal field of view)."""
        if self._renderer is None:
            self._renderer = Renderer(self.layout)
        return self._renderer.render(float(position[0]), float(position[-1]), float(heading), size)

    def top_down(
        self,
        path: Sequence[Sequence[float]] = (),
        reference: Sequence[Sequence[float]] = (),
        goal: Sequence[float] | None = None,
        success_distance: float | None = None,
        size: tuple[int, int] = (256, 256),
    ) -> np.ndarray:
        """Map RGB uint8 ``[H, W, 3]``: path (blue), reference (green), goal and success circle (red)."""
        if self._top_down is None:
            self._top_down = TopDown(self.layout)
        return self._top_down.draw(path, reference, goal, success_distance, size)

    # ------------------------------------------------------------------ navigation

    def move(
        self,
        position: Vec3,
        heading: float,
        action: int,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
    ) -> tuple[Vec3, float, bool]:
        """``(position, heading, collided)`` after one action; a forward step into a wall is refused whole."""
        return self.navigator.move(position, heading, int(action), forward_step, turn_angle)

    def is_navigable(self, position: Sequence[float]) -> bool:
        """The agent (a disc of ``config.agent_radius``) fits at ``position``."""
        return self.navigator.is_navigable(position)

    def geodesic_distance(self, position: Sequence[float], goal: Sequence[float]) -> float:
        """Shortest free-space walking distance in metres (>= Euclidean; inf inside a wall)."""
        return self.navigator.distance(position, goal)

    def expert_actions(
        self,
        position: Vec3,
        heading: float,
        goal: Sequence[float],
        success_distance: float = 1.0,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
    ) -> list[int]:
        """Shortest-path actions (greedy geodesic follower) from the pose; ends with STOP (0).

        The expert walks to within ``min(success_distance, forward_step)`` of the goal, so executing these
        actions with `move` always ends in success. Memoised: calls along a plan cost a dict lookup.
        """
        return self.navigator.expert_actions(
            position, heading, goal, success_distance, forward_step, turn_angle
        )

    def next_expert_action(
        self,
        position: Vec3,
        heading: float,
        goal: Sequence[float],
        success_distance: float = 1.0,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        *,
        distance: float | None = None,
    ) -> int:
        """``expert_actions(...)[0]`` at the cost of one greedy decision (~0.1 ms instead of a full plan).

        The greedy rule is evaluated at the pose only; the full plan is computed only where the expert
        would need its bounded search around an obstacle. Always taking this action reaches the goal.
        ``distance``: the pose's geodesic distance to ``goal`` if the caller already has it.
        """
        return self.navigator.next_expert_action(
            position, heading, goal, success_distance, forward_step, turn_angle, distance=distance
        )

    def follow(
        self,
        position: Vec3,
        heading: float,
        actions: Sequence[int],
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
    ) -> list[tuple[Vec3, float, bool]]:
        """Poses ``(position, heading, collided)`` after each action, executing them with `move`."""
        poses = []
        for action in actions:
            position, heading, collided = self.move(position, heading, action, forward_step, turn_angle)
            poses.append((position, heading, collided))
            if action == STOP:
                break
        return poses

    def region_at(self, position: Sequence[float]) -> int:
        """Region index under ``position`` (room index, ``len(rooms)`` for hallway, -1 solid/outside)."""
        cell = self.config.cell_size
        i, j = int(np.floor(float(position[-1]) / cell)), int(np.floor(float(position[0]) / cell))
        nz, nx = self.layout.solid.shape
        if not (0 <= i < nz and 0 <= j < nx):
            return -1
        return int(self.layout.region[i, j])


@lru_cache(maxsize=32)
def world_from_scene_id(scene: str) -> World:
    """The world named by a ``vlnworld/v1?...`` scene id (cached: 32 most recent)."""
    seed, config = parse_scene_id(scene)
    return World.generate(seed, config)
