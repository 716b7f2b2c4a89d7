"""NaVILA per-step VLN-CE annotations (``{"video_id", "q", "a", "frames"}``, a JSON array or jsonl).

As NaVILA's ``LazyVLNCEDataset`` reads them: ``video_id`` is ``"<episode id>-<step>"``, ``q`` the raw
instruction, ``a`` one answer sentence (``The next action is move forward 75 cm.``, ``... turn left 30
degree.``, ``I think I should stop because I have finished the instruction.``), and ``frames`` the whole
history ``frame_0.jpg ... frame_N.jpg`` (current last), one frame per primitive Habitat action, relative to
the image folder (``media_dir``). A step merges up to three equal primitives (75 cm / 45 degrees).

The records of one video are one trajectory: concatenating their answers in step order gives the
primitive actions, and each record's frame count must equal 1 + the primitives before it. Poses come
from a Habitat episode file (``pose_source=``, joined on the episode id) or, without one, from
integrating those actions from the origin. Repeated step records (NaVILA oversamples) are kept as
episodes ``<video_id>#2``, ``#3``; they must equal the first copy.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import as_text
from vln_gym.data.habitat import trajectory_poses
from vln_gym.data.media import read_images
from vln_gym.data.problems import DataError, FieldError, Location, Problem, RecordProblems, read_each
from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

KEYS = ("video_id", "q", "a", "frames")
_MOVE = re.compile(
    r"^the next action is (?P<what>move forward|turn left|turn right) (?P<amount>\d+) (?P<unit>cm|degrees?)"
    r"\.?$",
    re.I,
)
_STOP = re.compile(r"^i think i should stop\b", re.I)
_ACTION_OF = {"move forward": MOVE_FORWARD, "turn left": TURN_LEFT, "turn right": TURN_RIGHT}


def answer_actions(answer: str, forward_step: float, turn_angle: float) -> tuple[int, ...]:
    """The primitive actions of one NaVILA answer sentence; `FieldError` on ``a`` for anything else."""
    text = answer.strip()
    if _STOP.match(text):
        return (STOP,)
    match = _MOVE.match(text)
    if match is None:
        raise FieldError("a", f"unknown NaVILA answer sentence {text[:80]!r}")
    action = _ACTION_OF[match.group("what").lower()]
    amount = int(match.group("amount"))
    unit = match.group("unit").lower()
    if (action == MOVE_FORWARD) != (unit == "cm"):
        raise FieldError("a", f"{text[:80]!r}: a move is in cm, a turn in degrees")
    step = forward_step * 100.0 if action == MOVE_FORWARD else turn_angle
    count = amount / step
    if amount <= 0 or abs(count - round(count)) > 1e-6:
        raise FieldError("a", f"{text[:80]!r}: {amount} is not a multiple of the {step:g} {unit} step")
    return (action,) * round(count)


@dataclass(slots=True)
class _Step:
    location: Location
    video: str
    step: int
    instruction: str
    frames: tuple[str, ...]
    answer: str
    actions: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _read_step(record: Any, location: Location, ctx: ReadContext) -> _Step:
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    report = RecordProblems(location)
    for key in KEYS:
        if key not in record:
            report.add(key, "missing (a NaVILA record has video_id, q, a, frames)")
    if report:
        raise DataError(report.problems)
    video_id = report.check(as_text, record["video_id"], "video_id")
    video, _, step = (video_id or "").rpartition("-")
    if video_id is not None and (not video or not step.isdigit()):
        report.add("video_id", f"{video_id!r} is not '<episode id>-<step>'")
    instruction = report.check(as_text, record["q"], "q")
    answer = report.check(as_text, record["a"], "a")
    options = ctx.options
    actions = (
        report.check(answer_actions, answer, options.forward_step, options.turn_angle) if answer else None
    )
    base_dir = ctx.base_dir(location.path)
    frames = read_images(record["frames"], "frames", base_dir=base_dir, ctx=ctx, report=report)
    if report:
        raise DataError(report.problems)
    extra = {key: value for key, value in record.items() if key not in KEYS}
    return _Step(location, video, int(step), instruction.strip(), frames, answer, actions, extra)


def iter_navila(records: Iterable, ctx: ReadContext) -> Iterator:
    """``(location, Episode)`` per record, trajectory by trajectory (in order of first appearance)."""
    videos: dict[str, list[_Step]] = {}
    for item in read_each(records, lambda record, location: _read_step(record, location, ctx)):
        if isinstance(item, DataError):
            yield item
            continue
        step = item[1]
        videos.setdefault(step.video, []).append(step)
    for video, steps in videos.items():
        yield from _video_episodes(video, steps, ctx)


def _trajectory(steps: list[_Step]) -> tuple[tuple[int, ...], dict[int, _Step]] | Problem:
    """The video's primitive actions and its first record per step, or the problem that breaks it."""
    first: dict[int, _Step] = {}
    for step in steps:
        first.setdefault(step.step, step)
    actions: list[int] = []
    for number in range(max(first) + 1):
        if number not in first:
            step = first[min(s for s in first if s > number)]
            return step.location.problem(
                "video_id",
                f"step {number} of video {step.video} is missing or bad",
            )
        step = first[number]
        if len(step.frames) != len(actions) + 1:
            return step.location.problem(
                "frames",
                f"{len(step.frames)} frames at step {number}, expected {len(actions) + 1} "
                f"(1 + the {len(actions)} primitive actions of the steps before)",
            )
        actions.extend(step.actions)
    return tuple(actions), first


def _video_episodes(video: str, steps: list[_Step], ctx: ReadContext) -> Iterator:
    built = _trajectory(steps)
    if isinstance(built, Problem):  # the video's records are counted as bad, reported once
        left_out = (
            f"; the {len(steps)} records of video {video} are left out (poses need the whole trajectory)"
        )
        yield DataError([dataclasses.replace(built, message=built.message + left_out)])
        yield from (DataError([]) for _ in steps[1:])
        return
    actions, first = built
    try:
        poses = trajectory_poses(actions, video, ctx.options, ctx.habitat, "video_id")
    except FieldError as error:
        yield DataError([steps[0].location.problem(error.field, error.message)])
        yield from (DataError([]) for _ in steps[1:])
        return
    copies: dict[int, int] = {}
    for step in steps:
        copies[step.step] = copies.get(step.step, 0) + 1
        original = first[step.step]
        if step is not original and (step.frames, step.answer) != (original.frames, original.answer):
            yield DataError(
                [
                    step.location.problem(
                        "video_id", f"repeats step {step.step} of {video} with other frames or answer"
                    )
                ]
            )
            continue
        suffix = "" if copies[step.step] == 1 else f"#{copies[step.step]}"
        yield (
            step.location,
            Episode(
                episode_id=f"{video}-{step.step}{suffix}",
                instruction=step.instruction,
                images=step.frames,
                expert_response=step.answer,
                source=str(step.location),
                extra={**step.extra, "pose_source": poses.source},
                **poses.fields(len(step.frames) - 1, video),
            ),
        )
