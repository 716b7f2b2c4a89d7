"""VLN-CE episode metrics (DESIGN.md): NE, SR, OS, TL, SPL, nDTW, SDTW as pure functions.

Points are ``[x, y, z]`` in metres (2-D ``[x, z]`` is lifted with ``y = 0``); a path is the sequence of
agent positions, start first. Success distance is 3.0 m unless given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "dtw",
    "episode_metrics",
    "navigation_error",
    "ndtw",
    "oracle_success",
    "path_length",
    "sdtw",
    "spl",
    "success",
]

DistanceFn = Callable[[Sequence[float], Sequence[float]], float]
DISTANCE_KINDS = ("euclidean", "geodesic")


def _points(points: Sequence[Sequence[float]], name: str) -> np.ndarray:
    """``[n, 3]`` float array of a non-empty point sequence; clear ``ValueError`` otherwise."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] not in (2, 3):
        raise ValueError(f"{name} must be a non-empty sequence of 2-D or 3-D points, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a non-finite coordinate")
    if array.shape[1] == 2:
        array = np.stack([array[:, 0], np.zeros(len(array)), array[:, 1]], axis=1)
    return array


def _point(point: Sequence[float], name: str) -> np.ndarray:
    return _points([point], name)[0]


def _distance(value: float, name: str) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite distance >= 0, got {value}")
    return value


def path_length(path: Sequence[Sequence[float]]) -> float:
    """TL: sum of the Euclidean lengths of consecutive path segments (0 for a single point)."""
    array = _points(path, "path")
    return float(np.linalg.norm(np.diff(array, axis=0), axis=1).sum())


def navigation_error(
    path: Sequence[Sequence[float]], goal: Sequence[float], distance_fn: DistanceFn | None = None
) -> float:
    """NE: distance from the final position to the goal (``distance_fn``, e.g. geodesic, or Euclidean)."""
    final = _points(path, "path")[-1]
    goal_point = _point(goal, "goal")
    if distance_fn is None:
        return float(np.linalg.norm(final - goal_point))
    return _distance(distance_fn(tuple(final), tuple(goal_point)), "distance_fn result")


def success(stopped: bool, final_distance: float, success_distance: float = 3.0) -> float:
    """SR: 1.0 when STOP was called within ``success_distance`` of the goal, else 0.0."""
    final_distance = _distance(final_distance, "final_distance")
    return 1.0 if stopped and final_distance <= _distance(success_distance, "success_distance") else 0.0


def oracle_success(distances: Sequence[float], success_distance: float = 3.0) -> float:
    """OS: 1.0 when any point of the path came within ``success_distance`` of the goal."""
    values = [_distance(d, "distances[i]") for d in distances]
    if not values:
        raise ValueError("distances is empty: a path has at least its start point")
    return 1.0 if min(values) <= _distance(success_distance, "success_distance") else 0.0


def spl(success: float | bool, shortest_distance: float, path_length: float) -> float:
    """SPL = S * d0 / max(d0, TL); S when both d0 and TL are 0 (already at the goal, never moved)."""
    d0 = _distance(shortest_distance, "shortest_distance")
    tl = _distance(path_length, "path_length")
    s = float(success)
    if s not in (0.0, 1.0):
        raise ValueError(f"success must be 0 or 1, got {success}")
    longest = max(d0, tl)
    return s if longest == 0.0 else s * d0 / longest


def dtw(path: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> float:
    """Dynamic time warping distance (classic DP, Euclidean point cost, steps (1,0), (0,1), (1,1))."""
    query = _points(path, "path")
    ref = _points(reference, "reference")
    cost = np.linalg.norm(query[:, None, :] - ref[None, :, :], axis=2).tolist()
    previous = [math.inf] * len(ref)
    for i, row in enumerate(cost):
        current = [0.0] * len(ref)
        left = math.inf
        for j, c in enumerate(row):
            if i == 0 and j == 0:
                best = 0.0
            else:
                diagonal = previous[j - 1] if j > 0 else math.inf
                up = previous[j]
                best = min(left, up, diagonal)
            left = current[j] = c + best
        previous = current
    return float(previous[-1])


def ndtw(
    path: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], success_distance: float = 3.0
) -> float:
    """nDTW = exp(-DTW(path, reference) / (|reference| * success_distance)) (Ilharco et al. 2019)."""
    scale = _distance(success_distance, "success_distance")
    if scale == 0.0:
        raise ValueError("success_distance must be > 0 for nDTW")
    return math.exp(-dtw(path, reference) / (len(_points(reference, "reference")) * scale))


def sdtw(
    path: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    success: float | bool,
    success_distance: float = 3.0,
) -> float:
    """SDTW = S * nDTW."""
    s = float(success)
    if s not in (0.0, 1.0):
        raise ValueError(f"success must be 0 or 1, got {success}")
    return s * ndtw(path, reference, success_distance)


def _without_repeats(points: np.ndarray) -> np.ndarray:
    """Drop points equal to their predecessor (turns), as VLN-CE's NDTW measure records positions."""
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    return points[keep]


def episode_metrics(
    path: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    goal: Sequence[float],
    stopped: bool,
    shortest_distance: float,
    success_distance: float = 3.0,
    distances: Sequence[float] | None = None,
    distance_kind: str = "euclidean",
) -> dict[str, float | int | str]:
    """All VLN-CE metrics of one finished episode.

    ``path`` has one point per step (start first; turns repeat a position). ``distances`` are the
    per-point distances to the goal (geodesic when known; ``distance_kind`` says which); without them
    Euclidean distances are computed and ``distance_kind`` must be ``"euclidean"``. As in VLN-CE,
    nDTW ignores repeated consecutive positions. ``steps`` = ``len(path) - 1``.
    """
    if distance_kind not in DISTANCE_KINDS:
        raise ValueError(f"distance_kind must be one of {DISTANCE_KINDS}, got {distance_kind!r}")
    points = _points(path, "path")
    goal_point = _point(goal, "goal")
    if distances is None:
        if distance_kind != "euclidean":
            raise ValueError(f"distance_kind={distance_kind!r} needs the per-point distances")
        to_goal = np.linalg.norm(points - goal_point, axis=1).tolist()
    else:
        to_goal = [_distance(d, "distances[i]") for d in distances]
        if len(to_goal) != len(points):
            raise ValueError(f"distances has {len(to_goal)} values for {len(points)} path points")
    sr = success(stopped, to_goal[-1], success_distance)
    tl = path_length(points)
    normalised = ndtw(_without_repeats(points), reference, success_distance)
    return {
        "navigation_error": float(to_goal[-1]),
        "success": sr,
        "oracle_success": oracle_success(to_goal, success_distance),
        "spl": spl(sr, shortest_distance, tl),
        "trajectory_length": tl,
        "ndtw": normalised,
        "sdtw": sr * normalised,
        "steps": len(points) - 1,
        "distance_kind": distance_kind,
    }
