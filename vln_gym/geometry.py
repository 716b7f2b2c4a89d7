"""Pose arithmetic in the Habitat convention: y up, heading 0 faces -z, TURN_LEFT increases heading."""

from __future__ import annotations

import math
from collections.abc import Sequence

STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT")

Vec3 = tuple[float, float, float]


def lift(position: Sequence[float], height: float = 0.0) -> Vec3:
    """Return ``[x, y, z]``; a 2-D ``[x, z]`` is lifted to ``[x, height, z]``."""
    if len(position) == 2:
        return (float(position[0]), float(height), float(position[1]))
    if len(position) == 3:
        return (float(position[0]), float(position[1]), float(position[2]))
    raise ValueError(f"position must have 2 or 3 coordinates, got {len(position)}")


def wrap_angle(angle: float) -> float:
    """Wrap an angle in radians to ``[-pi, pi)``."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def forward_vector(heading: float) -> tuple[float, float]:
    """Unit ``(dx, dz)`` the agent faces at ``heading`` (0 faces -z, pi/2 faces -x)."""
    return (-math.sin(heading), -math.cos(heading))


def heading_towards(source: Sequence[float], target: Sequence[float]) -> float:
    """Heading that faces from ``source`` to ``target`` (3-D positions, y ignored)."""
    dx, dz = target[0] - source[0], target[2] - source[2]
    return math.atan2(-dx, -dz)


def apply_action(
    position: Vec3, heading: float, action: int, forward_step: float = 0.25, turn_angle_deg: float = 15.0
) -> tuple[Vec3, float]:
    """Free-space kinematics of one Habitat action (no collisions)."""
    if action == MOVE_FORWARD:
        dx, dz = forward_vector(heading)
        return (position[0] + forward_step * dx, position[1], position[2] + forward_step * dz), heading
    if action == TURN_LEFT:
        return position, wrap_angle(heading + math.radians(turn_angle_deg))
    if action == TURN_RIGHT:
        return position, wrap_angle(heading - math.radians(turn_angle_deg))
    return position, heading


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance between two points (3-D written out, the loaders' per-record path; other equal
    lengths summed in order; unequal lengths raise ``ValueError``)."""
    if len(a) == 3 and len(b) == 3:
        dx, dy, dz = float(a[0]) - float(b[0]), float(a[1]) - float(b[1]), float(a[2]) - float(b[2])
        return math.sqrt(dx**2 + dy**2 + dz**2)  # the sum below, in the same order: the same float
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))
