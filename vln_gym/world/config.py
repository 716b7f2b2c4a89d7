"""`WorldConfig`: the built-in world's difficulty knobs, and the ``scene_id`` that names one world.

A scene id is ``vlnworld/v1?seed=S&rooms=R&...`` listing the seed and every layout field, so a world can be
rebuilt from an episode alone (`parse_scene_id`). Episode-only fields (path lengths, success distance) are
not part of it: they do not change the floor plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl

SCENE_PREFIX = "vlnworld/v1"
MAX_ROOMS = 6
MAX_LANDMARKS = 7

# Fields that shape the floor plan or the pictures; these (and the seed) go into the scene id.
LAYOUT_FIELDS = (
    "rooms",
    "landmarks",
    "cell_size",
    "room_min_size",
    "room_max_size",
    "loop_probability",
    "agent_radius",
    "wall_height",
    "camera_height",
)

MIN_FORWARD_STEP = 0.01  # metres: the world plans paths in forward steps; shorter ones never arrive


@dataclass(frozen=True)
class WorldConfig:
    """Difficulty knobs of the procedural world (lengths in metres).

    With the defaults a world is a 2 x 2 grid of rooms 4-7 m wide joined by doorways and corridors, about
    19 m x 19 m in all. Success needs STOP within ``success_distance`` (1.0 m, geodesic) of a goal that is
    4-16 m of walking away, so an agent that acts at random essentially never succeeds (0 of 200 episodes
    for uniform random actions, STOP included; tests/test_world_navigation.py bounds it at 4 %) while the
    expert always does.
    """

    rooms: int = 4  # number of rooms, 1..6 (each has its own wall colour, floor colour and texture)
    landmarks: int = 5  # coloured pillars, cabinets and doors, 0..7, each with a unique colour
    cell_size: float = 0.5  # metres per floor-plan grid cell (walls are one cell thick)
    room_min_size: float = 4.0  # smallest room side
    room_max_size: float = 7.0  # largest room side
    loop_probability: float = 0.3  # chance that a non-tree pair of neighbouring rooms also gets a corridor
    agent_radius: float = 0.2  # collision radius; must be < cell_size / 2
    wall_height: float = 2.5  # for rendering
    camera_height: float = 1.25  # eye height for rendering (VLN-CE uses 1.25 m)
    success_distance: float = 1.0  # per-episode success radius written into generated episodes
    min_path_length: float = 4.0  # shortest allowed start-to-goal geodesic distance
    max_path_length: float = 16.0  # longest allowed start-to-goal geodesic distance

    @classmethod
    def coerce(cls, value: WorldConfig | Mapping[str, Any] | str | None) -> WorldConfig:
        """``value`` as a WorldConfig: None = the defaults, a level name (``vln_gym.world.levels``) = its
        world fields, a mapping = its fields (a bad name or value raises ``ValueError``)."""
        if value is None:
            return cls()
        if isinstance(value, str):
            from vln_gym.world.levels import level

            return cls(**level(value).world)
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"world_config must be a level name, a WorldConfig or a mapping of its fields, got {value!r}"
            )
        try:
            return cls(**value)
        except TypeError as error:  # an unknown field name
            raise ValueError(f"world_config: {error}") from error

    def __post_init__(self) -> None:
        checks = (
            ("rooms", 1 <= self.rooms <= MAX_ROOMS, f"must be in 1..{MAX_ROOMS}"),
            ("landmarks", 0 <= self.landmarks <= MAX_LANDMARKS, f"must be in 0..{MAX_LANDMARKS}"),
            ("cell_size", self.cell_size > 0, "must be > 0"),
            ("room_min_size", self.room_min_size >= 6 * self.cell_size, "must be >= 6 * cell_size"),
            ("room_max_size", self.room_max_size >= self.room_min_size, "must be >= room_min_size"),
            ("loop_probability", 0.0 <= self.loop_probability <= 1.0, "must be in [0, 1]"),
            ("agent_radius", 0 < self.agent_radius < self.cell_size / 2, "must be in (0, cell_size / 2)"),
            ("wall_height", self.wall_height > self.camera_height, "must be > camera_height"),
            ("camera_height", self.camera_height > 0, "must be > 0"),
            ("success_distance", self.success_distance > 0, "must be > 0"),
            ("min_path_length", self.min_path_length >= 0, "must be >= 0"),
            ("max_path_length", self.max_path_length > self.min_path_length, "must be > min_path_length"),
        )
        for name, ok, message in checks:
            if not ok:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r}: {message}")

    @property
    def room_min_cells(self) -> int:
        return math.ceil(self.room_min_size / self.cell_size - 1e-9)

    @property
    def room_max_cells(self) -> int:
        return math.floor(self.room_max_size / self.cell_size + 1e-9)


def scene_id(seed: int, config: WorldConfig) -> str:
    """``vlnworld/v1?seed=S&rooms=R&...`` naming the world ``World.generate(seed, config)`` builds."""
    parts = [f"seed={int(seed)}"] + [f"{name}={getattr(config, name)!r}" for name in LAYOUT_FIELDS]
    return f"{SCENE_PREFIX}?{'&'.join(parts)}"


def parse_scene_id(text: str) -> tuple[int, WorldConfig]:
    """Inverse of `scene_id` (missing fields keep their defaults); ValueError if malformed."""
    prefix, _, query = text.partition("?")
    if prefix != SCENE_PREFIX or not query:
        raise ValueError(f"scene_id {text!r}: not a built-in world id (expected '{SCENE_PREFIX}?seed=...')")
    types = {f.name: f.type for f in fields(WorldConfig)}
    values: dict[str, int | float] = {}
    seed: int | None = None
    for key, raw in parse_qsl(query, strict_parsing=True):
        try:
            if key == "seed":
                seed = int(raw)
            elif key in LAYOUT_FIELDS:
                values[key] = int(raw) if types[key] in ("int", int) else float(raw)
            else:
                raise ValueError(f"scene_id {text!r}: unknown field {key!r}")
        except ValueError as error:
            if "unknown field" in str(error):
                raise
            raise ValueError(f"scene_id {text!r}: field {key!r}: not a number: {raw!r}") from error
    if seed is None:
        raise ValueError(f"scene_id {text!r}: missing field 'seed'")
    return seed, replace(WorldConfig(), **values)
