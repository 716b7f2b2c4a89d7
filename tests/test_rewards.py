"""Reward terms on plain values, the weighted composite, and building rewards from configs."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

import rewards
from rewards import (
    DEFAULT_REWARDS,
    Composite,
    TimeDecayedMatch,
    Transition,
    collision,
    expert_match,
    invalid_action,
    make_reward,
    progress,
    step_cost,
    success,
    time_decayed_match,
    wrong_stop,
)
from rewards import format as format_term
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

F, L, R, S = MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, STOP


def step(**fields: object) -> Transition:
    """A forward step 0.25 m towards a goal 5 m away, overridable per test."""
    base = Transition(
        prev_position=(0.0, 0.0, 0.0),
        prev_heading=0.0,
        next_position=(0.0, 0.0, -0.25),
        next_heading=0.0,
        goal_position=(0.0, 0.0, -5.0),
        prev_distance=5.0,
        next_distance=4.75,
        actions=(F,),
    )
    return replace(base, **fields)


def test_progress_in_forward_steps() -> None:
    assert progress(step()) == pytest.approx(1.0)
    assert progress(step(prev_distance=5.0, next_distance=5.5)) == pytest.approx(-2.0)
    assert progress(step(next_distance=4.0, forward_step=0.5)) == pytest.approx(2.0)
    assert progress(step(next_distance=5.0, actions=(L,))) == 0.0


def test_success_and_wrong_stop() -> None:
    near = step(stopped=True, actions=(S,), next_distance=2.9)
    far = step(stopped=True, actions=(S,), next_distance=3.1)
    assert (success(near), wrong_stop(near)) == (1.0, 0.0)
    assert (success(far), wrong_stop(far)) == (0.0, -1.0)
    assert (success(step(next_distance=1.0)), wrong_stop(step(next_distance=9.0))) == (0.0, 0.0)
    assert success(replace(far, success_distance=3.5)) == 1.0


def test_collision_step_cost_invalid() -> None:
    assert collision(step(collision=True)) == -1.0
    assert collision(step()) == 0.0
    assert step_cost(step()) == -1.0
    assert invalid_action(step(invalid_action=True, actions=())) == -1.0
    assert invalid_action(step()) == 0.0


@pytest.mark.parametrize(
    ("text", "invalid", "expected"),
    [
        (None, False, None),
        ("<think>door ahead</think><answer>move forward</answer>", False, 1.0),
        ("  <think>a\nb</think>\n<answer>turn left</answer>\n", False, 1.0),
        ("<think>door ahead</think><answer>fly</answer>", True, 0.0),
        ("<answer>move forward</answer>", False, 0.0),
        ("move forward", False, 0.0),
        ("<think>x</think><answer>left</answer> trailing words", False, 0.0),
        ("<answer>left</answer><think>x</think>", False, 0.0),
    ],
)
def test_format(text: str | None, invalid: bool, expected: float | None) -> None:
    assert format_term(step(text=text, invalid_action=invalid)) == expected


def test_expert_match() -> None:
    assert expert_match(step(expert_actions=None)) is None
    assert expert_match(step(expert_actions=())) is None
    assert expert_match(step(actions=(F, L), expert_actions=(F, R))) == 1.0
    assert expert_match(step(actions=(L,), expert_actions=(F,))) == 0.0
    assert expert_match(step(actions=(), invalid_action=True, expert_actions=(F,))) == 0.0


def test_time_decayed_match_by_hand() -> None:
    # gamma 0.8: weights 1, 0.8, 0.64, 0.512 (sum 2.952).
    tdr = TimeDecayedMatch(gamma=0.8)
    assert tdr(step(actions=(F, F, L, R), expert_actions=(F, F, L, R, S))) == pytest.approx(1.0)
    assert tdr(step(actions=(F, L, L, R), expert_actions=(F, F, L, R))) == pytest.approx(2.152 / 2.952)
    assert tdr(step(actions=(R, F), expert_actions=(F, F))) == pytest.approx(0.8 / 1.8)
    # Predictions past the expert's end are misses.
    assert tdr(step(actions=(F, F, F), expert_actions=(F,))) == pytest.approx(1.0 / 2.44)
    assert tdr(step(actions=(), expert_actions=(F,))) == 0.0
    assert tdr(step(expert_actions=None)) is None
    assert TimeDecayedMatch(0.5)(step(actions=(L, F), expert_actions=(F, F))) == pytest.approx(0.5 / 1.5)
    assert time_decayed_match == TimeDecayedMatch(0.8)
    with pytest.raises(ValueError, match="gamma"):
        TimeDecayedMatch(0.0)


def test_composite_sums_weighted_applicable_terms() -> None:
    reward = Composite([("progress", progress, 2.0), ("step", step_cost, 0.1), ("format", format_term, 1.0)])
    total, values = reward(step())  # discrete action: format is None and left out
    assert values == {"progress": pytest.approx(1.0), "step": -1.0}
    assert total == pytest.approx(2.0 * 1.0 - 0.1)
    total, values = reward(step(text="<think>a</think><answer>forward</answer>"))
    assert values["format"] == 1.0 and total == pytest.approx(2.9)


def _not_a_number(t: Transition) -> float:
    return float("nan")


def test_composite_validates() -> None:
    with pytest.raises(ValueError, match="twice"):
        Composite([("a", progress, 1.0), ("a", success, 1.0)])
    with pytest.raises(ValueError, match="weight"):
        Composite([("a", progress, float("nan"))])
    with pytest.raises(ValueError, match="callable"):
        Composite([("a", "progress", 1.0)])  # type: ignore[list-item]
    broken = Composite([("progress", progress, 1.0), ("broken", _not_a_number, 1.0)])
    with pytest.raises(ValueError, match="'broken' returned nan"):
        broken(step())


def test_make_reward_forms() -> None:
    default = make_reward(None)
    assert default.weights == dict(DEFAULT_REWARDS)
    from_dict = make_reward({"progress": 1.0, "success": 2.5})
    assert from_dict.weights == {"progress": 1.0, "success": 2.5}
    from_str = make_reward("progress=1, success=2.5")
    assert from_str.weights == from_dict.weights
    from_list = make_reward([("progress", 0.5), (TimeDecayedMatch(0.9), 1.0), ("mine", expert_match, 3.0)])
    assert from_list.weights == {"progress": 0.5, "time_decayed_match": 1.0, "mine": 3.0}
    assert make_reward(from_list) is from_list
    total, values = from_list(step(actions=(F,), expert_actions=(F,)))
    assert values == {"progress": 1.0, "time_decayed_match": 1.0, "mine": 1.0}
    assert total == pytest.approx(0.5 + 1.0 + 3.0)


def test_make_reward_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown reward term 'speed'.*progress.*time_decayed_match"):
        make_reward({"speed": 1.0})
    with pytest.raises(ValueError, match="name=weight"):
        make_reward("progress")
    with pytest.raises(ValueError, match="not a number"):
        make_reward("progress=fast")
    with pytest.raises(ValueError, match="reward config"):
        make_reward(3)  # type: ignore[arg-type]


def test_default_reward_on_typical_steps() -> None:
    reward = make_reward()
    w = DEFAULT_REWARDS
    total, values = reward(step())
    assert set(values) == set(w)
    assert total == pytest.approx(w["progress"] - w["step_cost"])
    total, _ = reward(step(stopped=True, actions=(S,), next_distance=4.75))
    assert total == pytest.approx(w["progress"] - w["wrong_stop"] - w["step_cost"])
    total, _ = reward(step(stopped=True, actions=(S,), prev_distance=2.0, next_distance=2.0))
    assert total == pytest.approx(w["success"] - w["step_cost"])
    total, _ = reward(step(invalid_action=True, actions=(), next_distance=5.0, text="fly"))
    assert total == pytest.approx(-w["invalid_action"] - w["step_cost"])


def test_composite_pickles_with_every_term() -> None:
    reward = make_reward({name: 1.0 for name in rewards.TERMS})
    clone = pickle.loads(pickle.dumps(reward))
    t = step(text="<think>x</think><answer>forward</answer>", expert_actions=(F, L))
    assert clone(t) == reward(t)
    assert repr(clone) == repr(reward)
