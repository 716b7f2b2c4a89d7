"""Reward terms: each takes one ``Transition`` and returns a float, or ``None`` when not applicable.

Terms return unweighted values with a fixed sign (penalties are -1.0); weights live in ``Composite``.
All are module-level functions or small classes, so they pickle (AsyncVectorEnv).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewards.transition import Transition

__all__ = [
    "TimeDecayedMatch",
    "collision",
    "expert_match",
    "format",
    "invalid_action",
    "progress",
    "step_cost",
    "success",
    "time_decayed_match",
    "wrong_stop",
]

# Whole answer = <think>...</think> then <answer>...</answer>, only whitespace around (VLM-R1 format reward).
_THINK_ANSWER = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.S)


def progress(t: Transition) -> float | None:
    """Distance to goal reduced this step, in forward steps (+1.0 = one step closer, negative = away);
    ``None`` when the pose is unknown."""
    if not t.pose_known:
        return None
    return (t.prev_distance - t.next_distance) / t.forward_step


def success(t: Transition) -> float | None:
    """1.0 when STOP was called within the success distance; ``None`` when the pose is unknown."""
    if not t.pose_known:
        return None
    return 1.0 if t.success else 0.0


def wrong_stop(t: Transition) -> float | None:
    """-1.0 when STOP was called outside the success distance; ``None`` when the pose is unknown."""
    if not t.pose_known:
        return None
    return -1.0 if t.stopped and not t.success else 0.0


def collision(t: Transition) -> float:
    """-1.0 when the step hit an obstacle."""
    return -1.0 if t.collision else 0.0


def step_cost(t: Transition) -> float:
    """-1.0 every step (weight it small: it only breaks ties in favour of shorter episodes)."""
    return -1.0


def format(t: Transition) -> float | None:
    """Text answers: 1.0 for ``<think>...</think><answer>...</answer>`` whose answer parsed, else 0.0.

    ``None`` for discrete actions (``t.text is None``). "Parsed" is the env's verdict (``invalid_action``),
    which used the env's own step sizes and options.
    """
    if t.text is None:
        return None
    return 1.0 if not t.invalid_action and _THINK_ANSWER.fullmatch(t.text) else 0.0


def invalid_action(t: Transition) -> float:
    """-1.0 when the action (text) could not be parsed or applied."""
    return -1.0 if t.invalid_action else 0.0


def expert_match(t: Transition) -> float | None:
    """1.0 when the first applied action is the expert's action here; ``None`` when the expert is unknown."""
    if not t.expert_actions:
        return None
    return 1.0 if t.actions and t.actions[0] == t.expert_actions[0] else 0.0


def decayed_match(actions: Sequence[int], expert: Sequence[int], gamma: float = 0.8) -> float:
    """``sum_k gamma^k [actions_k == expert_k] / sum_k gamma^k`` (0.0 for no actions)."""
    if not actions:
        return 0.0
    weights = [gamma**k for k in range(len(actions))]
    hits = sum(w for k, w in enumerate(weights) if k < len(expert) and actions[k] == expert[k])
    return hits / sum(weights)


class TimeDecayedMatch:
    """VLN-R1 time-decayed reward: ``sum_k gamma^k [pred_k == expert_k] / sum_k gamma^k`` over the predicted
    actions (``t.actions``, k from 0). Predictions past the end of the expert's actions count as misses;
    an invalid (empty) prediction scores 0.0; ``None`` when the expert is unknown.
    """

    name = "time_decayed_match"

    def __init__(self, gamma: float = 0.8) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.gamma = float(gamma)

    def __call__(self, t: Transition) -> float | None:
        if not t.expert_actions:
            return None
        return decayed_match(t.actions, t.expert_actions, self.gamma)

    def __repr__(self) -> str:
        return f"TimeDecayedMatch(gamma={self.gamma})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeDecayedMatch) and other.gamma == self.gamma

    def __hash__(self) -> int:
        return hash((TimeDecayedMatch, self.gamma))


time_decayed_match = TimeDecayedMatch()
