"""VLN-CE metrics against values computed by hand, including degenerate paths."""

from __future__ import annotations

import math
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vln_gym.metrics import (
    dtw,
    episode_metrics,
    navigation_error,
    ndtw,
    oracle_success,
    path_length,
    sdtw,
    spl,
    success,
)


def test_path_length_sums_segments() -> None:
    assert path_length([(0, 0, 0), (3, 0, 4), (3, 0, 4), (3, 0, 0)]) == pytest.approx(9.0)
    assert path_length([(0, 0), (1, 0), (1, 2)]) == pytest.approx(3.0)  # 2-D [x, z] lifted
    assert path_length([(1, 2, 3)]) == 0.0


def test_navigation_error_is_final_distance() -> None:
    path = [(0, 0, 0), (3, 0, 0)]
    assert navigation_error(path, (3, 0, 0)) == 0.0
    assert navigation_error(path, (0, 0, 4)) == pytest.approx(5.0)
    assert navigation_error(path, (0, 0, 4), distance_fn=lambda a, b: 6.5) == 6.5


def test_success_needs_stop_within_distance() -> None:
    assert success(True, 3.0) == 1.0
    assert success(True, 3.01) == 0.0
    assert success(False, 0.0) == 0.0
    assert success(True, 1.5, success_distance=1.0) == 0.0


def test_oracle_success_any_point() -> None:
    assert oracle_success([5.0, 2.9, 4.0]) == 1.0
    assert oracle_success([5.0, 4.0]) == 0.0
    with pytest.raises(ValueError, match="distances is empty"):
        oracle_success([])


@pytest.mark.parametrize(
    ("s", "d0", "tl", "expected"),
    [
        (1.0, 10.0, 12.5, 0.8),
        (1.0, 10.0, 8.0, 1.0),  # shorter than d0 (straight-line d0): capped at 1
        (0.0, 10.0, 10.0, 0.0),
        (1.0, 0.0, 0.0, 1.0),  # started at the goal and never moved
        (0.0, 0.0, 0.0, 0.0),
        (1.0, 0.0, 2.0, 0.0),
        (True, 4.0, 5.0, 0.8),
    ],
)
def test_spl(s: float, d0: float, tl: float, expected: float) -> None:
    assert spl(s, d0, tl) == pytest.approx(expected)


def test_spl_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="shortest_distance"):
        spl(1.0, -1.0, 2.0)
    with pytest.raises(ValueError, match="success"):
        spl(0.5, 1.0, 2.0)


def test_dtw_by_hand() -> None:
    # cost rows: q0 -> [0, 1, 2], q1 -> [2, 1, 0]; best warp q0-r0, q1-r1, q1-r2 = 0 + 1 + 0.
    assert dtw([(0, 0), (2, 0)], [(0, 0), (1, 0), (2, 0)]) == pytest.approx(1.0)
    assert dtw([(0, 0, 0), (1, 0, 0)], [(0, 0, 0), (1, 0, 0)]) == 0.0
    assert dtw([(0, 0, 0), (3, 0, 4)], [(0, 0, 0)]) == pytest.approx(5.0)  # single-point reference


def test_ndtw_and_sdtw_by_hand() -> None:
    path, reference = [(0, 0), (2, 0)], [(0, 0), (1, 0), (2, 0)]
    assert ndtw(path, reference) == pytest.approx(math.exp(-1.0 / 9.0))
    assert ndtw(path, reference, success_distance=1.0) == pytest.approx(math.exp(-1.0 / 3.0))
    assert ndtw([(0, 0, 0), (3, 0, 4)], [(0, 0, 0)]) == pytest.approx(math.exp(-5.0 / 3.0))
    assert sdtw(path, reference, success=1.0) == pytest.approx(math.exp(-1.0 / 9.0))
    assert sdtw(path, reference, success=False) == 0.0


@pytest.mark.parametrize(
    ("path", "reference", "match"),
    [
        ([(0, 0, 0)], [], "reference"),
        ([], [(0, 0, 0)], "path"),
        ([(0, 0, 0, 0)], [(0, 0, 0)], "path"),
        ([(0, math.nan, 0)], [(0, 0, 0)], "non-finite"),
    ],
)
def test_bad_paths_raise_clear_errors(path: list, reference: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ndtw(path, reference)


def test_episode_metrics_by_hand_with_a_turn() -> None:
    # Forward, turn (position repeats), forward; heading 0 faces -z. Goal 4 m ahead.
    path = [(0, 0, 0), (0, 0, -1), (0, 0, -1), (0, 0, -2)]
    reference = [(0, 0, 0), (0, 0, -2), (0, 0, -4)]
    metrics = episode_metrics(path, reference, goal=(0, 0, -4), stopped=True, shortest_distance=4.0)
    # nDTW ignores the repeated point (VLN-CE): DTW([0,-1,-2], [0,-2,-4]) = 0 + 1 + 2 = 3 by hand.
    assert metrics == pytest.approx(
        {
            "navigation_error": 2.0,
            "success": 1.0,
            "oracle_success": 1.0,
            "spl": 1.0,
            "trajectory_length": 2.0,
            "ndtw": math.exp(-3.0 / 9.0),
            "sdtw": math.exp(-3.0 / 9.0),
            "steps": 3,
            "distance_kind": "euclidean",
        }
    )
    assert dtw(path, reference) == pytest.approx(4.0)  # with the repeat it would be 4


def test_episode_metrics_with_geodesic_distances() -> None:
    path = [(0, 0, 0), (0, 0, -1), (0, 0, -1), (0, 0, -2)]
    metrics = episode_metrics(
        path,
        [(0, 0, 0), (0, 0, -4)],
        goal=(0, 0, -4),
        stopped=True,
        shortest_distance=6.0,
        distances=[6.0, 5.0, 5.0, 3.5],
        distance_kind="geodesic",
    )
    assert metrics["navigation_error"] == 3.5
    assert metrics["success"] == metrics["spl"] == metrics["sdtw"] == metrics["oracle_success"] == 0.0
    assert metrics["trajectory_length"] == pytest.approx(2.0)
    assert metrics["distance_kind"] == "geodesic"


def test_episode_metrics_zero_length_path() -> None:
    metrics = episode_metrics([(1, 0, 1)], [(1, 0, 1)], goal=(1, 0, 1), stopped=True, shortest_distance=0.0)
    assert metrics["spl"] == 1.0 and metrics["success"] == 1.0 and metrics["ndtw"] == 1.0
    assert metrics["trajectory_length"] == 0.0 and metrics["steps"] == 0
    not_stopped = episode_metrics(
        [(9, 0, 9)], [(1, 0, 1)], goal=(1, 0, 1), stopped=False, shortest_distance=11.3
    )
    assert not_stopped["success"] == 0.0 and not_stopped["oracle_success"] == 0.0


def test_episode_metrics_rejects_inconsistent_inputs() -> None:
    path = [(0, 0, 0), (0, 0, -1)]
    with pytest.raises(ValueError, match="needs the per-point distances"):
        episode_metrics(path, path, (0, 0, -1), True, 1.0, distance_kind="geodesic")
    with pytest.raises(ValueError, match="2 path points"):
        episode_metrics(path, path, (0, 0, -1), True, 1.0, distances=[1.0])
    with pytest.raises(ValueError, match="distance_kind"):
        episode_metrics(path, path, (0, 0, -1), True, 1.0, distance_kind="manhattan")
    with pytest.raises(ValueError, match="reference"):
        episode_metrics(path, [], (0, 0, -1), True, 1.0)


def _dtw_recursive(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Textbook recursive definition, for cross-checking the DP."""

    @cache
    def cost(i: int, j: int) -> float:
        here = math.dist(a[i], b[j])
        if i == 0 and j == 0:
            return here
        options = []
        if i > 0:
            options.append(cost(i - 1, j))
        if j > 0:
            options.append(cost(i, j - 1))
        if i > 0 and j > 0:
            options.append(cost(i - 1, j - 1))
        return here + min(options)

    return cost(len(a) - 1, len(b) - 1)


_coord = st.integers(-5, 5).map(float)
_paths = st.lists(st.tuples(_coord, _coord), min_size=1, max_size=7)


@settings(max_examples=150, deadline=None)
@given(a=_paths, b=_paths)
def test_dtw_matches_recursive_definition_and_is_symmetric(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> None:
    value = dtw(a, b)
    assert value == pytest.approx(_dtw_recursive(a, b))
    assert value == pytest.approx(dtw(b, a))
    assert dtw(a, a) == 0.0
    assert 0.0 < ndtw(a, b) <= 1.0
