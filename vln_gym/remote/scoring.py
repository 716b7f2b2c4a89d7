"""Rewards and episode metrics computed trainer-side, from the privileged info a served simulator returns.

A backend that answers ``reward: "trainer"`` in its spec (e.g. Habitat VLN-CE, which knows poses and
geodesic distances but not our rewards) sends ``reward=None``; `TrainerScoring` rebuilds each step's
`Transition` from the info before and after it and scores it with ``rewards.make_reward``, and at the
episode's end computes ``vln_gym.metrics.episode_metrics`` from the path it collected. An info's optional
``success_distance`` (the episode's own radius) overrides the backend's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewards import make_reward
from rewards.transition import Transition
from vln_gym.geometry import STOP, lift
from vln_gym.metrics import episode_metrics

REQUIRED_INFO = ("agent_position", "agent_heading", "goal_position", "distance_to_goal")


class TrainerScoring:
    """Per-episode scorer: ``reset(info)``, then ``step(info)`` -> ``(reward, terms)``; ``metrics()``."""

    def __init__(self, rewards: Any, success_distance: float, forward_step: float) -> None:
        self.reward_fn = make_reward(rewards)
        self.success_distance = float(success_distance)
        self.forward_step = float(forward_step)
        self.state: dict[str, Any] = {}

    def reset(self, info: Mapping[str, Any]) -> None:
        _check_info(info)
        self.state = {
            "radius": float(info.get("success_distance", self.success_distance)),
            "info": dict(info),
            "path": [lift(info["agent_position"])],
            "distances": [float(info["distance_to_goal"])],
            "steps": 0,
            "stopped": False,
        }

    def step(self, info: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        _check_info(info)
        state, before = self.state, self.state["info"]
        actions = tuple(int(a) for a in info.get("actions", ()))
        stopped = bool(actions) and actions[-1] == STOP
        expert = before.get("expert_actions")
        transition = Transition(
            prev_position=lift(before["agent_position"]),
            prev_heading=float(before["agent_heading"]),
            next_position=lift(info["agent_position"]),
            next_heading=float(info["agent_heading"]),
            goal_position=lift(info["goal_position"]),
            prev_distance=float(before["distance_to_goal"]),
            next_distance=float(info["distance_to_goal"]),
            actions=actions,
            invalid_action=bool(info.get("invalid_action", False)),
            collision=bool(info.get("collision", False)),
            stopped=stopped,
            success_distance=self.state["radius"],
            forward_step=self.forward_step,
            step_index=state["steps"],
            expert_actions=None if expert is None else tuple(int(a) for a in expert),
            episode={"episode_id": info.get("episode_id"), "instruction": info.get("instruction")},
        )
        reward, terms = self.reward_fn(transition)
        if not stopped and actions:
            state["path"].append(transition.next_position)
            state["distances"].append(transition.next_distance)
        state.update(info=dict(info), steps=state["steps"] + 1, stopped=stopped)
        return float(reward), dict(terms)

    def snapshot(self) -> dict[str, Any]:
        """The episode so far, as plain data this scorer never mutates afterwards (``get_state``)."""
        return _copied(self.state)

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from a `snapshot` (copied in, so restoring it twice gives the same episode twice)."""
        self.state = _copied(snapshot)

    def success(self) -> bool:
        return self.state["stopped"] and self.state["distances"][-1] <= self.state["radius"]

    def metrics(self) -> dict[str, Any]:
        """Episode metrics of the path so far (geodesic distances as the simulator reported them)."""
        state, info = self.state, self.state["info"]
        goal = lift(info["goal_position"])
        reference = info.get("reference_path") or (state["path"][0], goal)
        shortest = info.get("geodesic_distance", state["distances"][0])
        return episode_metrics(
            state["path"],
            [lift(p) for p in reference],
            goal,
            state["stopped"],
            float(shortest),
            success_distance=self.state["radius"],
            distances=state["distances"],
            distance_kind="geodesic",
        )


def _copied(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with its growing lists and its info copied (``step`` appends to the lists)."""
    return {
        **state,
        "info": dict(state["info"]),
        "path": list(state["path"]),
        "distances": list(state["distances"]),
    }


def _check_info(info: Mapping[str, Any]) -> None:
    missing = [key for key in REQUIRED_INFO if key not in info]
    if missing:
        raise ValueError(f"the server's info lacks {', '.join(missing)}: trainer-side rewards need the pose")
