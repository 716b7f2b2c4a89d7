"""`Poses`: the privileged fields of every step of one expert trajectory, however they were obtained.

Frame datasets that store actions but no poses (VLN-Ego, StreamVLN, NaVILA) get them either by
integrating the actions from the origin (`integrated_poses`: poses relative to the start, the goal is the
final pose) or from a Habitat episode file (`vln_gym.data.habitat`). Index N is the pose before action N;
the last entry is the pose after the last action.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from vln_gym.geometry import Vec3, apply_action, distance

INTEGRATED = "vln-ego-actions"


def integrate_actions(
    actions: tuple[int, ...], forward_step: float = 0.25, turn_angle: float = 15.0
) -> tuple[tuple[Vec3, ...], tuple[float, ...]]:
    """Positions and headings before each action plus the final pose (``len(actions) + 1`` of each)."""
    position, heading = (0.0, 0.0, 0.0), 0.0
    positions, headings = [position], [heading]
    for action in actions:
        position, heading = apply_action(position, heading, action, forward_step, turn_angle)
        positions.append(position)
        headings.append(heading)
    return tuple(positions), tuple(headings)


def merge_repeats(points: tuple[Vec3, ...]) -> tuple[Vec3, ...]:
    """Consecutive equal points (turns in place) merged into one."""
    merged = [points[0]]
    merged.extend(point for previous, point in pairwise(points) if point != previous)
    return tuple(merged)


@dataclass(frozen=True)
class Poses:
    """Per-step poses of one trajectory (``len(actions) + 1`` positions and headings) and its goal."""

    positions: tuple[Vec3, ...]
    headings: tuple[float, ...]
    goal: Vec3
    actions: tuple[int, ...]
    reference_path: tuple[Vec3, ...]
    source: str
    success_distance: float | None = None
    geodesic_distance: float | None = None
    scene_id: str | None = None

    def fields(self, step: int, trajectory_id: str) -> dict:
        """Episode keyword arguments of step ``step`` (the start's geodesic distance only at step 0)."""
        position, goal = self.positions[step], self.goal
        values = {
            "agent_position": position,
            "agent_heading": self.headings[step],
            "goal_position": goal,
            "distance_to_goal": distance(position, goal),
            "reference_path": self.reference_path,
            "expert_actions": self.actions[step:],
            "trajectory_id": trajectory_id,
            "step_index": step,
        }
        if self.success_distance is not None:
            values["success_distance"] = self.success_distance
        if step == 0 and self.geodesic_distance is not None:
            values["geodesic_distance"] = self.geodesic_distance
        if self.scene_id is not None:
            values["scene_id"] = self.scene_id
        return values


def integrated_poses(actions: tuple[int, ...], forward_step: float, turn_angle: float) -> Poses:
    """Poses relative to the start (origin, heading 0); the goal is where the actions end."""
    positions, headings = integrate_actions(actions, forward_step, turn_angle)
    return Poses(
        positions=positions,
        headings=headings,
        goal=positions[-1],
        actions=actions,
        reference_path=merge_repeats(positions),
        source=INTEGRATED,
    )
