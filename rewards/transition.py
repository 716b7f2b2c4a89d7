"""`Transition`: everything a reward term may look at for one env step, as plain values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Transition:
    """One env step (a macro step when the text held several actions).

    Distances are geodesic in the built-in world, Euclidean otherwise. ``actions`` are the Habitat
    ids actually applied (empty when the action was invalid). ``expert_actions`` are the record's
    expert actions from this step on (first = what the expert did here), when known.
    """

    prev_position: Vec3
    prev_heading: float
    next_position: Vec3
    next_heading: float
    goal_position: Vec3
    prev_distance: float
    next_distance: float
    actions: tuple[int, ...] = ()
    text: str | None = None
    invalid_action: bool = False
    collision: bool = False
    stopped: bool = False
    success_distance: float = 3.0
    forward_step: float = 0.25
    step_index: int = 0
    expert_actions: tuple[int, ...] | None = None
    episode: dict[str, Any] = field(default_factory=dict)

    @property
    def pose_known(self) -> bool:
        """Both distances to the goal are known (records loaded with ``require_pose=False`` have NaN)."""
        return math.isfinite(self.prev_distance) and math.isfinite(self.next_distance)

    @property
    def success(self) -> bool:
        """STOP called within the success distance."""
        return self.stopped and self.next_distance <= self.success_distance
