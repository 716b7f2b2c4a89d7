"""Reward terms (pure functions of one ``Transition``) and their weighted ``Composite``.

Reward shaping lives here and only here: the env builds a ``Transition`` per step and calls
``make_reward(config)(transition) -> (total, per-term values)``.
"""

from __future__ import annotations

from rewards.composite import DEFAULT_REWARDS, TERMS, Composite, RewardConfig, Term, make_reward
from rewards.terms import (
    TimeDecayedMatch,
    collision,
    expert_match,
    format,
    invalid_action,
    progress,
    step_cost,
    success,
    time_decayed_match,
    wrong_stop,
)
from rewards.transition import Transition

__all__ = [
    "DEFAULT_REWARDS",
    "TERMS",
    "Composite",
    "RewardConfig",
    "Term",
    "TimeDecayedMatch",
    "Transition",
    "collision",
    "expert_match",
    "format",
    "invalid_action",
    "make_reward",
    "progress",
    "step_cost",
    "success",
    "time_decayed_match",
    "wrong_stop",
]
