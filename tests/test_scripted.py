"""Scripted agents on plain info dicts: hand-computed actions, seeding, error messages."""

from __future__ import annotations

import json
import math

import pytest

from agents.eval.scripted import (
    AgentError,
    ExpertAgent,
    ForwardAgent,
    OracleAgent,
    RandomAgent,
    make_agent,
    straight_line_action,
)
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, apply_action, distance

ORIGIN = (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        ((0.0, 0.0, -5.0), MOVE_FORWARD),  # straight ahead (heading 0 faces -z)
        ((-5.0, 0.0, 0.0), TURN_LEFT),  # -x is to the left: TURN_LEFT increases heading towards pi/2
        ((5.0, 0.0, 0.0), TURN_RIGHT),
        ((0.0, 0.0, 5.0), TURN_RIGHT),  # behind: error = -pi after wrapping -> turn right
        ((0.1, 0.0, -0.05), STOP),  # 0.112 m <= 0.125 m
        ((-math.tan(math.radians(7.0)) * 5.0, 0.0, -5.0), MOVE_FORWARD),  # 7 deg off < half a 15 deg turn
        ((-math.tan(math.radians(8.0)) * 5.0, 0.0, -5.0), TURN_LEFT),  # 8 deg off > 7.5 deg
    ],
)
def test_straight_line_action_hand_computed(goal, expected):
    assert straight_line_action(ORIGIN, 0.0, goal) == expected


def _run_straight_oracle(goal, heading=0.0, max_steps=100):
    agent = OracleAgent("straight")
    position, actions = ORIGIN, []
    for _ in range(max_steps):
        info = {"agent_position": position, "agent_heading": heading, "goal_position": goal}
        action = agent.act({}, info)
        actions.append(action)
        if action == STOP:
            return position, actions
        position, heading = apply_action(position, heading, action)
    raise AssertionError("oracle did not stop")


def test_straight_oracle_turns_then_walks_then_stops():
    # Goal 1 m to the left: 90 deg = 6 left turns of 15 deg, then 4 steps of 0.25 m, then STOP.
    position, actions = _run_straight_oracle((-1.0, 0.0, 0.0))
    assert actions == [TURN_LEFT] * 6 + [MOVE_FORWARD] * 4 + [STOP]
    assert distance(position, (-1.0, 0.0, 0.0)) == pytest.approx(0.0, abs=1e-9)


def test_straight_oracle_reaches_arbitrary_goals():
    for goal in [(3.0, 0.0, 2.0), (-2.5, 0.0, -4.1), (0.3, 0.0, 6.0)]:
        position, _ = _run_straight_oracle(goal)
        assert distance(position, goal) <= 0.125 + 1e-9


def test_expert_mode_oracle_and_expert_follow_first_expert_action():
    info = {"expert_actions": (TURN_RIGHT, MOVE_FORWARD, STOP)}
    assert OracleAgent("expert").act({}, info) == TURN_RIGHT
    assert ExpertAgent().act({}, info) == TURN_RIGHT
    assert ExpertAgent().act({}, {"expert_actions": ()}) == STOP


def test_missing_privileged_info_is_a_clear_error():
    with pytest.raises(AgentError, match=r"expert agent needs info\['expert_actions'\]"):
        ExpertAgent().act({}, {})
    with pytest.raises(AgentError, match=r"oracle agent needs info\['goal_position'\]"):
        OracleAgent("straight").act({}, {"agent_position": ORIGIN, "agent_heading": 0.0})


def test_random_agent_is_seeded_and_covers_all_actions():
    first = [RandomAgent(seed=3).act({}, {}) for _ in range(1)]
    a, b = RandomAgent(seed=3), RandomAgent(seed=3)
    seq_a = [a.act({}, {}) for _ in range(200)]
    seq_b = [b.act({}, {}) for _ in range(200)]
    assert seq_a == seq_b
    assert seq_a[0] == first[0]
    assert set(seq_a) == {STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT}
    a.reset(seed=3)
    assert [a.act({}, {}) for _ in range(200)] == seq_a
    assert [RandomAgent(seed=4).act({}, {}) for _ in range(200)] != seq_a


def test_forward_agent_walks_k_steps_then_stops_and_resets():
    agent = ForwardAgent(steps=3)
    assert [agent.act({}, {}) for _ in range(5)] == [MOVE_FORWARD] * 3 + [STOP, STOP]
    agent.reset()
    assert [agent.act({}, {}) for _ in range(4)] == [MOVE_FORWARD] * 3 + [STOP]


def test_make_agent_names_and_errors(tmp_path):
    assert make_agent("forward", forward_steps=2).steps == 2
    assert make_agent("oracle", oracle_mode="straight").mode == "straight"
    with pytest.raises(AgentError, match=r"unknown agent 'walker'; known agents: random, forward, oracle"):
        make_agent("walker")
    with pytest.raises(AgentError, match="needs --checkpoint"):
        make_agent("policy")
    with pytest.raises(AgentError, match="takes no checkpoint"):
        make_agent("random", checkpoint=tmp_path)
    with pytest.raises(AgentError, match="checkpoint not found"):
        make_agent("policy", checkpoint=tmp_path / "missing")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(AgentError, match="model_type 'bert'"):
        make_agent("policy", checkpoint=other)
    with pytest.raises(AgentError, match="not a policy checkpoint"):
        make_agent("policy", checkpoint=tmp_path)
