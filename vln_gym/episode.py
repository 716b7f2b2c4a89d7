"""`Episode`: the one in-memory record type. Every reader converts into it at load time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Episode:
    """One VLN record = one Gymnasium episode.

    Units follow the Habitat convention (DESIGN.md): positions ``[x, y, z]`` in metres with y up,
    heading in radians about +y, heading 0 faces -z, TURN_LEFT increases heading.
    ``images`` are resolved file paths, decoded lazily (see ``vln_gym.images``), oldest first,
    the current view last. ``source`` says where the record came from (``path:line``).
    """

    episode_id: str
    instruction: str
    images: tuple[str, ...]
    agent_position: Vec3
    agent_heading: float
    goal_position: Vec3
    distance_to_goal: float
    system_prompt: str | None = None
    prompt: str | None = None
    expert_response: str | None = None
    trajectory_id: str | None = None
    step_index: int | None = None
    reference_path: tuple[Vec3, ...] | None = None
    expert_actions: tuple[int, ...] | None = None
    geodesic_distance: float | None = None
    scene_id: str | None = None
    success_distance: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_images(self) -> int:
        return len(self.images)
