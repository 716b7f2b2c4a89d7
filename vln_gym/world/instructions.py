"""Templated English instructions from an expert path: turns, rooms entered, landmarks passed, the stop.

`path_events` reads the path (what happens where); `describe` turns events into text with a seeded choice
among several templates and synonyms per event, e.g. "Turn around and walk out of the yellow room. Go
through the red door, then follow the hallway. Take a right into the beige room and stop next to the
black pillar."
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vln_gym.geometry import MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, heading_towards, wrap_angle
from vln_gym.world.layout import Landmark, Layout

TURN_THRESHOLD = math.radians(50)  # a bend of the simplified path at least this sharp is a "turn"
PASS_DISTANCE = 1.6  # a landmark within this many metres of the path is "passed"
DOOR_DISTANCE = 1.0  # a door frame this close to the path is "gone through"
SIMPLIFY_TOLERANCE = 0.35  # metres, Ramer-Douglas-Peucker tolerance before looking for turns


@dataclass(frozen=True)
class Event:
    index: int  # position index along the path where it happens
    kind: str  # "turn" | "exit" | "enter" | "pass" | "door"
    text: str  # direction ("left"/"right") or the name of a room / landmark


def _simplify(points: np.ndarray, tolerance: float) -> list[int]:
    """Indices kept by Ramer-Douglas-Peucker."""
    if len(points) < 3:
        return list(range(len(points)))
    start, end = points[0], points[-1]
    chord = end - start
    length = float(np.hypot(*chord))
    rel = points - start
    if length < 1e-9:
        dist = np.hypot(rel[:, 0], rel[:, 1])
    else:
        dist = np.abs(rel[:, 0] * chord[1] - rel[:, 1] * chord[0]) / length
    k = int(np.argmax(dist))
    if dist[k] <= tolerance:
        return [0, len(points) - 1]
    left = _simplify(points[: k + 1], tolerance)
    right = _simplify(points[k:], tolerance)
    return left[:-1] + [k + i for i in right]


def initial_turn(actions: Sequence[int], turn_angle: float) -> str | None:
    """``"around"``, ``"left"``, ``"right"`` or None from the turns before the first forward step."""
    net = 0
    for action in actions:
        if action == TURN_LEFT:
            net += 1
        elif action == TURN_RIGHT:
            net -= 1
        else:
            break
    degrees = net * turn_angle
    if abs(degrees) >= 135:
        return "around"
    if abs(degrees) >= 45:
        return "left" if degrees > 0 else "right"
    return None


def path_events(
    layout: Layout, positions: Sequence[Sequence[float]], skip_landmark: Landmark | None = None
) -> list[Event]:
    """Ordered events along ``positions`` (distinct 3-D points of the path, start first)."""
    points = np.asarray([[float(p[0]), float(p[-1])] for p in positions], dtype=np.float64)
    cell = layout.config.cell_size
    events: list[Event] = []
    kept = _simplify(points, SIMPLIFY_TOLERANCE)
    for a, b, c in zip(kept[:-2], kept[1:-1], kept[2:], strict=True):
        p0, p1, p2 = (positions[k] for k in (a, b, c))
        bend = wrap_angle(heading_towards(p1, p2) - heading_towards(p0, p1))
        if abs(bend) >= TURN_THRESHOLD:
            events.append(Event(b, "turn", "left" if bend > 0 else "right"))
    cells = np.floor(points / cell).astype(np.int64)
    regions = layout.region[cells[:, 1], cells[:, 0]]
    start_region = int(regions[0])
    for k in range(1, len(regions)):
        if regions[k] != regions[k - 1]:
            if regions[k - 1] == start_region and not any(e.kind == "exit" for e in events):
                events.append(Event(k, "exit", layout.region_name(start_region)))
            events.append(Event(k, "enter", layout.region_name(int(regions[k]))))
    for landmark in layout.landmarks:
        if skip_landmark is not None and landmark.index == skip_landmark.index:
            continue
        gaps = np.hypot(points[:, 0] - landmark.position[0], points[:, 1] - landmark.position[1])
        k = int(np.argmin(gaps))
        limit = DOOR_DISTANCE if landmark.kind == "door" else PASS_DISTANCE
        if gaps[k] <= limit and 0 < k < len(points) - 2:
            events.append(Event(k, "door" if landmark.kind == "door" else "pass", landmark.name))
    order = {"exit": 0, "door": 1, "turn": 2, "enter": 3, "pass": 4}
    return sorted(events, key=lambda e: (e.index, order[e.kind]))


_WALK = ("Walk", "Go", "Head", "Move")
_TURN = ("turn {d}", "take a {d}", "make a {d} turn", "go {d}")
_ENTER = ("enter {x}", "walk into {x}", "go into {x}", "continue into {x}")
_TURN_INTO = ("turn {d} into {x}", "take a {d} into {x}", "go {d} into {x}")
_HALL = ("follow the hallway", "walk down the hallway", "go along the hallway")
_EXIT = ("walk out of {x}", "leave {x}", "exit {x}")
_PASS = ("pass {x}", "walk past {x}", "go past {x}")
_DOOR = ("go through {x}", "walk through {x}", "pass through {x}")
_STOP_AT = ("stop next to {x}", "stop by {x}", "wait near {x}", "stop in front of {x}", "stop beside {x}")
_STOP_IN = ("stop in the middle of {x}", "wait in the centre of {x}", "stop at the centre of {x}")
_JOIN = (", then ", " and ", ". Then ", ". ", ". After that, ", ". Next, ")
_OPEN_TURN = ("turn {d}", "turn to your {d}")
_OPEN_AROUND = ("turn around", "turn back")


def _pick(rng: np.random.Generator, options: Sequence[str], **values: str) -> str:
    return options[int(rng.integers(len(options)))].format(**values)


def _phrases(rng: np.random.Generator, events: Sequence[Event]) -> list[str]:
    phrases: list[str] = []
    k = 0
    while k < len(events):
        event = events[k]
        nxt = events[k + 1] if k + 1 < len(events) else None
        if event.kind == "turn" and nxt is not None and nxt.kind == "enter" and nxt.index - event.index <= 6:
            if nxt.text == "the hallway":
                phrases.append(_pick(rng, _TURN, d=event.text) + " into the hallway")
            else:
                phrases.append(_pick(rng, _TURN_INTO, d=event.text, x=nxt.text))
            k += 2
            continue
        if event.kind == "turn":
            phrases.append(_pick(rng, _TURN, d=event.text))
        elif event.kind == "enter":
            phrases.append(
                _pick(rng, _HALL) if event.text == "the hallway" else _pick(rng, _ENTER, x=event.text)
            )
        elif event.kind == "exit":
            phrases.append(_pick(rng, _EXIT, x=event.text))
        elif event.kind == "pass":
            phrases.append(_pick(rng, _PASS, x=event.text))
        else:
            phrases.append(_pick(rng, _DOOR, x=event.text))
        k += 1
    # drop immediate repeats ("follow the hallway" twice when the path leaves and re-enters it)
    return [p for i, p in enumerate(phrases) if i == 0 or p != phrases[i - 1]]


def describe(
    rng: np.random.Generator,
    events: Sequence[Event],
    *,
    first_turn: str | None,
    goal_landmark: Landmark | None,
    goal_room: str,
) -> str:
    """The instruction text for ``events`` followed by the stop phrase."""
    phrases = _phrases(rng, events)
    if goal_landmark is not None:
        phrases.append(_pick(rng, _STOP_AT, x=goal_landmark.name))
    else:
        phrases.append(_pick(rng, _STOP_IN, x=goal_room))
    if first_turn == "around":
        opening = _pick(rng, _OPEN_AROUND)
    elif first_turn is not None:
        opening = _pick(rng, _OPEN_TURN, d=first_turn)
    else:
        opening = ""
    if not phrases[0].startswith(("walk", "go", "leave", "exit", "follow")):
        phrases[0] = f"{_pick(rng, _WALK).lower()} forward and {phrases[0]}"
    text = phrases[0]
    join = ""
    for phrase in phrases[1:]:
        join = _pick(rng, [j for j in _JOIN if j != join])  # never the same joint twice in a row
        text += join + phrase
    if opening:
        text = f"{opening}, then {text}" if " and " in text.split(".")[0] else f"{opening} and {text}"
    sentences = [s.strip() for s in text.split(". ")]
    return ". ".join(s[0].upper() + s[1:] for s in sentences if s) + "."


def instruction_for_path(
    rng: np.random.Generator,
    layout: Layout,
    positions: Sequence[Sequence[float]],
    actions: Sequence[int],
    turn_angle: float,
    goal_landmark: Landmark | None,
) -> str:
    """Instruction for an expert path: ``positions`` start first, ``actions`` the expert's actions."""
    distinct = [positions[0]]
    for p in positions[1:]:
        if math.dist(p, distinct[-1]) > 1e-9:
            distinct.append(p)
    events = path_events(layout, distinct, skip_landmark=goal_landmark)
    cell = layout.config.cell_size
    end = distinct[-1]
    goal_region = int(layout.region[int(end[-1] // cell), int(end[0] // cell)])
    if MOVE_FORWARD not in actions:
        events = []
    return describe(
        rng,
        events,
        first_turn=initial_turn(actions, turn_angle),
        goal_landmark=goal_landmark,
        goal_room=layout.region_name(goal_region),
    )
