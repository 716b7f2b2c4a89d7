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
from vln_gym.data.media import known_or_plain_path, read_images
from vln_gym.data.problems import DataError, FieldError, Location, Problem, RecordProblems, read_each
from vln_gym.episode import episode_of_fields
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

KEYS = ("video_id", "q", "a", "frames")
_MOVE = re.compile(
    r"^the next action is (?P<what>move forward|turn left|turn right) (?P<amount>\d+) (?P<unit>cm|degrees?)"
    r"\.?$",
    re.I,
)
_STOP = re.compile(r"^i think i should stop\b", re.I)
_ACTION_OF = {"move forward": MOVE_FORWARD, "turn left": TURN_LEFT, "turn right": TURN_RIGHT}
MAX_PRIMITIVES_PER_ANSWER = 40  # NaVILA's own answers merge at most 3 (75 cm / 45 degrees)


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
    if round(count) > MAX_PRIMITIVES_PER_ANSWER:
        raise FieldError(
            "a",
            f"{text[:80]!r}: {round(count)} primitive steps of {step:g} {unit}; one answer merges at most "
            f"{MAX_PRIMITIVES_PER_ANSWER} (NaVILA's own: 3)",
        )
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


class _LoadMemo:
    """What one load's NaVILA records share: each record repeats its video's whole frame history (a
    record is a step-prefix of the next), and answers repeat ("The next action is move forward 75 cm.")."""

    def __init__(self) -> None:
        # (video, base folder) -> (the raw frame list of its last record, that list's resolved paths)
        self.frames: dict[tuple[str, str], tuple[list, tuple[str, ...]]] = {}
        self.actions: dict[str, tuple[int, ...]] = {}  # answer -> its primitive actions (good ones only)


def _read_step(record: Any, location: Location, ctx: ReadContext, memo: _LoadMemo) -> _Step:
    quick = _quick_step(record, location, ctx, memo)
    if quick is not None:
        return quick
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    report = RecordProblems(location)
    for key in KEYS:
        if key not in record:
            report.add(key, "missing (a NaVILA record has video_id, q, a, frames)")
    if report:
        raise DataError(report.problems)
    video_id = _text(record["video_id"], "video_id", report)
    video, _, step = (video_id or "").rpartition("-")
    if video_id is not None and (not video or not (step.isascii() and step.isdigit())):
        report.add("video_id", f"{video_id!r} is not '<episode id>-<step>'")
    instruction = _text(record["q"], "q", report)
    answer = _text(record["a"], "a", report)
    actions = memo.actions.get(answer) if answer else None
    if actions is None and answer:
        options = ctx.options
        actions = report.check(answer_actions, answer, options.forward_step, options.turn_angle)
        if actions is not None:
            memo.actions[answer] = actions
    base_dir = ctx.base_dir(location.path)
    frames = _frames(record["frames"], video, base_dir, ctx, report, memo)
    if report:
        raise DataError(report.problems)
    extra = {key: value for key, value in record.items() if key not in KEYS} if len(record) > 4 else {}
    return _Step(location, video, int(step), instruction.strip(), frames, answer, actions, extra)


def _quick_step(record: Any, location: Location, ctx: ReadContext, memo: _LoadMemo) -> _Step | None:
    """`_read_step`'s answer for the common record, or ``None`` (the full reading then decides; nothing
    is changed before this answers): exactly the four keys, plain non-blank strings, an answer met
    before in this load, frames that extend or repeat the last good list of its video (`_known_frames`)."""
    if type(record) is not dict or len(record) != 4:
        return None
    video_id, instruction, answer = record.get("video_id"), record.get("q"), record.get("a")
    if type(video_id) is not str or type(instruction) is not str or type(answer) is not str:
        return None
    actions = memo.actions.get(answer)
    video, _, step = video_id.rpartition("-")
    if (
        actions is None
        or not video
        or not (step.isascii() and step.isdigit())
        or not instruction
        or instruction.isspace()
    ):
        return None
    base_dir = ctx.base_dir(location.path)
    frames = _known_frames(record.get("frames"), (video, base_dir), ctx, memo)
    if frames is None:
        return None
    return _Step(location, video, int(step), instruction.strip(), frames, answer, actions, {})


def _text(value: Any, name: str, report: RecordProblems) -> str | None:
    """`as_text` of ``value`` (its problem to ``report``), a plain non-empty string let through first."""
    if type(value) is str and value and not value.isspace():
        return value
    return report.check(as_text, value, name)


def _frames(
    raw: Any, video: str, base_dir: str, ctx: ReadContext, report: RecordProblems, memo: _LoadMemo
) -> tuple[str, ...] | None:
    """`read_images` of a record's ``frames``. A list that starts with the last good list of the same
    video passes that list's paths as ``known`` (only its new frames are looked up); a prefix of it
    takes a prefix of its paths (every frame was read, and good, already)."""
    key = (video, base_dir)
    paths = _known_frames(raw, key, ctx, memo)
    if paths is not None:
        return paths
    last = memo.frames.get(key)
    known: tuple[str, ...] = ()
    if last is not None and type(raw) is list and len(raw) > len(last[0]) and raw[: len(last[0])] == last[0]:
        known = last[1]
    problems = len(report.problems)
    paths = read_images(raw, "frames", base_dir=base_dir, ctx=ctx, report=report, known=known)
    if paths is not None and len(report.problems) == problems:  # every frame good: a history to reuse
        memo.frames[key] = (raw, paths)
    return paths


def _known_frames(
    raw: Any, key: tuple[str, str], ctx: ReadContext, memo: _LoadMemo
) -> tuple[str, ...] | None:
    """The paths of frame list ``raw`` of ``key = (video, base folder)`` when it repeats a prefix of that
    video's last good list or extends it by one frame that `known_or_plain_path` finds; else ``None``."""
    last = memo.frames.get(key)
    if last is None or type(raw) is not list:
        return None
    last_raw, last_paths = last
    count = len(last_raw)
    if len(raw) <= count:
        if raw and raw == last_raw[: len(raw)]:
            return last_paths if len(raw) == count else last_paths[: len(raw)]
        return None
    if len(raw) == count + 1 and raw[:count] == last_raw:  # the common case: one new frame
        path = known_or_plain_path(raw[count], key[1], ctx)
        if path is not None:
            paths = memo.frames[key] = (raw, (*last_paths, path))
            return paths[1]
    return None


def iter_navila(records: Iterable, ctx: ReadContext) -> Iterator:
    """``(location, Episode)`` per record, trajectory by trajectory (in order of first appearance)."""
    videos: dict[str, list[_Step]] = {}
    memo = _LoadMemo()
    for item in read_each(records, lambda record, location: _read_step(record, location, ctx, memo)):
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
        if actions and actions[-1] == STOP:
            return first[number - 1].location.problem(
                "a", f"stop at step {number - 1} of video {step.video}, but step {number} follows"
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
        values = poses.fields(len(step.frames) - 1, video)
        values["episode_id"] = f"{video}-{step.step}{suffix}"
        values["instruction"] = step.instruction
        values["images"] = step.frames
        values["expert_response"] = step.answer
        values["source"] = str(step.location)
        values["extra"] = {**step.extra, "pose_source": poses.source}
        yield step.location, episode_of_fields(values)
