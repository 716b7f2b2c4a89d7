"""Decision-level metrics: how each answer compares with the expert's actions at that moment.

Record (dataset) mode runs one decision per record, so an episode rarely reaches a goal metres away and
episode metrics (SR, SPL, NE) say little there; these say whether each decision was right:

- ``first_action_accuracy``: the first action applied equals the expert's action now;
- ``sequence_accuracy``: every action of the answer equals the expert's action at its position (a
  multi-action answer, e.g. VLN-R1's four, must match the expert's next four);
- ``time_decayed_match``: VLN-R1's TDR, ``sum_k 0.8^k [a_k == e_k] / sum_k 0.8^k``;
- ``invalid_answer_rate``: answers that did not parse into actions (they count as misses above);
- ``progress``: metres of distance to the goal gained by the decision (negative: moved away).

Decisions whose expert is unknown are left out of the three matches (``decisions_with_expert`` says how
many were scored). Rates get Wilson 95% intervals, means the normal approximation (the time-decayed match's
clipped to [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.eval.intervals import mean_interval, wilson_interval
from rewards.terms import decayed_match

MATCH_KEYS = ("first_action_accuracy", "sequence_accuracy", "time_decayed_match")
RATE_KEYS = ("first_action_accuracy", "sequence_accuracy", "invalid_answer_rate")
BOUNDS = {"time_decayed_match": (0.0, 1.0)}  # progress (metres gained) may be negative


def decision_record(
    expert: Sequence[int] | None,
    actions: Sequence[int],
    invalid: bool,
    distance_before: float,
    distance_after: float,
) -> dict[str, Any]:
    """The metrics of one decision (``None`` for the matches when the expert is unknown)."""
    record: dict[str, Any] = {
        "invalid_answer": bool(invalid),
        "progress": float(distance_before) - float(distance_after),
    }
    known = bool(expert)
    actions = [] if invalid else list(actions)
    record["first_action_accuracy"] = float(bool(actions) and actions[0] == expert[0]) if known else None
    record["sequence_accuracy"] = (
        float(bool(actions) and list(expert[: len(actions)]) == actions) if known else None
    )
    record["time_decayed_match"] = decayed_match(actions, expert) if known else None
    return record


def aggregate_decisions(decisions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and 95% interval of each decision metric over ``decisions``."""
    result: dict[str, Any] = {"decisions": len(decisions)}
    ci95: dict[str, list[float]] = {}
    columns = {
        "invalid_answer_rate": [float(d["invalid_answer"]) for d in decisions],
        "progress": [d["progress"] for d in decisions if math.isfinite(d["progress"])],
    }
    scored = [d for d in decisions if d["first_action_accuracy"] is not None]
    result["decisions_with_expert"] = len(scored)
    for key in MATCH_KEYS:
        columns[key] = [d[key] for d in scored]
    for key, values in columns.items():
        if not values:
            result[key], ci95[key] = math.nan, [math.nan, math.nan]
            continue
        result[key] = sum(values) / len(values)
        ci95[key] = (
            wilson_interval(sum(values), len(values))
            if key in RATE_KEYS
            else mean_interval(values, bounds=BOUNDS.get(key, (-math.inf, math.inf)))
        )
    result["ci95"] = ci95
    return result
