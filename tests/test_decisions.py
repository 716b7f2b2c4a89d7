"""Decision-level metrics of record-mode evaluation, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from agents.eval.decisions import aggregate_decisions, decision_record
from agents.eval.intervals import mean_interval, wilson_interval


def test_one_decision_by_hand():
    d = decision_record((1, 1, 2, 0), (1, 1, 3), False, 5.0, 4.5)
    assert d["first_action_accuracy"] == 1.0
    assert d["sequence_accuracy"] == 0.0  # the third action differs
    assert d["time_decayed_match"] == pytest.approx((1 + 0.8) / (1 + 0.8 + 0.64))
    assert d["progress"] == 0.5 and d["invalid_answer"] is False
    invalid = decision_record((1,), (), True, 5.0, 5.0)
    assert (
        invalid["first_action_accuracy"],
        invalid["sequence_accuracy"],
        invalid["time_decayed_match"],
    ) == (0.0, 0.0, 0.0)
    unknown = decision_record(None, (1,), False, 2.0, 1.75)
    assert unknown["first_action_accuracy"] is None and unknown["progress"] == 0.25


def test_aggregate_means_and_intervals():
    decisions = [
        decision_record((1, 0), (1, 0), False, 1.0, 0.75),
        decision_record((2,), (3,), False, 1.0, 1.0),
        decision_record((0,), (), True, 1.0, 1.0),
        decision_record(None, (1,), False, 2.0, 1.75),
    ]
    result = aggregate_decisions(decisions)
    assert result["decisions"] == 4 and result["decisions_with_expert"] == 3
    assert result["first_action_accuracy"] == pytest.approx(1 / 3)
    assert result["ci95"]["first_action_accuracy"] == pytest.approx(wilson_interval(1, 3))
    assert result["invalid_answer_rate"] == 0.25
    assert result["progress"] == pytest.approx(0.125)
    assert result["ci95"]["progress"] == pytest.approx(mean_interval([0.25, 0.0, 0.0, 0.25]))
    empty = aggregate_decisions([decision_record(None, (1,), False, math.nan, math.nan)])
    assert math.isnan(empty["first_action_accuracy"]) and math.isnan(empty["progress"])
