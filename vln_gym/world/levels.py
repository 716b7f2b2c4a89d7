"""Named difficulty levels of the built-in world: ``gym.make("VLN-v0", world_config="easy")``.

A level fixes the world's episode knobs (goal distances, success radius) and the env settings that make
its goals reachable (step, turn, decision budget); env arguments given explicitly win over the level's.

- ``easy``: goals 1.5-3 m of walking away, success within 1 m, 0.5 m steps, 45 degree turns, 12 decisions
  (the expert's full path is 4-16 actions, median 8.5, but STOP within 1 m comes sooner: the oracle
  succeeds in 98 % of held-out episodes); an agent acting at random in about 2 %.
- ``medium``: goals 3-8 m away, success within 1 m, 0.25 m steps, 30 degree turns, 80 decisions (the
  expert's path is 15-53 single actions, median 28, over 200 held-out episodes).
- ``standard``: the world's defaults (goals 4-16 m, success within 1 m) with VLN-CE's 0.25 m / 15 degrees
  and 500 decisions, as an R2R-CE episode has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorldLevel:
    """World fields (`WorldConfig`) plus the env settings of one level."""

    name: str
    world: dict[str, Any] = field(default_factory=dict)
    forward_step: float = 0.25
    turn_angle: float = 15.0
    max_steps: int = 500


LEVELS: dict[str, WorldLevel] = {
    "easy": WorldLevel(
        "easy",
        {"min_path_length": 1.5, "max_path_length": 3.0, "success_distance": 1.0},
        forward_step=0.5,
        turn_angle=45.0,
        max_steps=12,
    ),
    "medium": WorldLevel(
        "medium",
        {"min_path_length": 3.0, "max_path_length": 8.0, "success_distance": 1.0},
        forward_step=0.25,
        turn_angle=30.0,
        max_steps=80,
    ),
    "standard": WorldLevel("standard", {}, forward_step=0.25, turn_angle=15.0, max_steps=500),
}


def level(name: str) -> WorldLevel:
    """The level called ``name``; ValueError naming the known ones."""
    if name not in LEVELS:
        raise ValueError(f"world_config: unknown level {name!r}; levels: {', '.join(LEVELS)}")
    return LEVELS[name]


def level_settings(
    world_config: Any, forward_step: float | None, turn_angle: float | None, max_steps: int | None
) -> tuple[float, float, int | None]:
    """Step, turn and decision budget: the arguments given, else the named level's (``world_config`` a
    level name), else VLN-CE's 0.25 m / 15 degrees and no budget."""
    if isinstance(world_config, str):
        chosen = level(world_config)
        return (
            chosen.forward_step if forward_step is None else forward_step,
            chosen.turn_angle if turn_angle is None else turn_angle,
            chosen.max_steps if max_steps is None else max_steps,
        )
    return (
        0.25 if forward_step is None else forward_step,
        15.0 if turn_angle is None else turn_angle,
        max_steps,
    )
