"""StreamVLN / InternNav trajectories: ``annotations.json`` (a JSON array) plus ``<video>/rgb/NNN.jpg``.

As StreamVLN's trajectory writer saves them and its ``vln_action_dataset.py`` reads them: an entry is
``{"id", "video": "images/<scene>_<dataset>_<episode_id:06d>", "instructions": [...], "actions": [...]}``
with ``actions = [-1, a1, ..., aN]`` (-1: no action before the first frame; 0 STOP, 1 MOVE_FORWARD 0.25 m,
2 TURN_LEFT 15 deg, 3 TURN_RIGHT 15 deg) and ``rgb/001.jpg ... rgb/{N+1:03d}.jpg``, one frame per entry.
Frame k (0-based) is the view before ``a(k+1)``; the writer never stores the final STOP, so, as the
reader does, a STOP is appended and the last frame is the decision to stop (a STOP before the last action
is an error: STOP ends the episode). ``id`` is a string or an integer. Every frame is one decision:
an Episode with the frames up to it and the expert actions from it. Several instructions make several
trajectories (``<id>/i<n>/step_<k>``). ``video`` resolves against ``media_dir`` (default: the folder of
annotations.json). Poses: from a Habitat episode file (``pose_source=``, joined on the episode id at the
end of ``video``), else integrated from the origin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import as_actions, as_text
from vln_gym.data.habitat import trajectory_poses
from vln_gym.data.media import resolve_image
from vln_gym.data.problems import DataError, FieldError, Location, RecordProblems, read_each
from vln_gym.episode import Episode
from vln_gym.geometry import STOP

KEYS = ("video", "instructions", "actions")
FRAME_FILE = re.compile(r"^(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
EPISODE_SUFFIX = re.compile(r"_(\d+)$")
INITIAL = -1


def video_episode_id(video: str) -> str | None:
    """The Habitat episode id at the end of ``images/<scene>_<dataset>_<episode_id:06d>``."""
    match = EPISODE_SUFFIX.search(video.rstrip("/"))
    return str(int(match.group(1))) if match else None


def _actions(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise FieldError("actions", "expected a non-empty list: -1 (the initial frame), then action ids 0-3")
    if value[0] != INITIAL:
        raise FieldError("actions[0]", f"is {value[0]!r}; StreamVLN starts with -1 (the initial frame)")
    if len(value) < 2:
        raise FieldError("actions", "holds only the initial frame: no decision to make")
    try:
        actions = as_actions(value[1:], "actions")
    except FieldError as error:  # name the entry's own index (the list starts with -1)
        index = int(error.field.removeprefix("actions[").rstrip("]")) + 1
        raise FieldError(f"actions[{index}]", error.message) from None
    if STOP in actions[:-1]:
        index = actions.index(STOP) + 1
        raise FieldError("actions", f"STOP at index {index} before the end (STOP ends the episode)")
    return actions


def _record_id(value: Any) -> str:
    """An entry's ``id``: a non-empty string or an integer (not a bool), as text."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise FieldError("id", f"expected a non-empty string or an integer, got {value!r:.60}")
    return str(value)


def _frames(video: str, location: Location, ctx: ReadContext, count: int) -> tuple[str, ...]:
    """The ``count`` frames of ``<video>/rgb``, in numeric order; `FieldError` on ``video`` otherwise."""
    base_dir = ctx.base_dir(location.path)
    folder = resolve_image(os.path.join(video, "rgb"), "video", base_dir=base_dir, options=ctx.options)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        where = ctx.options.media_dir or base_dir
        raise FieldError("video", f"frame folder {folder} not found (media folder: {where})") from None
    numbered = sorted((int(m.group(1)), name) for name in names if (m := FRAME_FILE.match(name)))
    if len(numbered) != count:
        raise FieldError(
            "video", f"{folder} holds {len(numbered)} frames for {count} action entries (one frame each)"
        )
    return tuple(os.path.join(folder, name) for _, name in numbered)


def _episodes(record: Any, location: Location, ctx: ReadContext) -> list[Episode]:
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    report = RecordProblems(location)
    for key in KEYS:
        if key not in record:
            report.add(key, "missing (a StreamVLN entry has id, video, instructions, actions)")
    if report:
        raise DataError(report.problems)
    record_id = report.check(_record_id, record["id"]) if "id" in record else None
    video = report.check(as_text, record["video"], "video")
    actions = report.check(_actions, record["actions"])
    if actions and actions[-1] != STOP:
        actions = (*actions, STOP)  # the implicit STOP at the last frame (the writer omits it)
    instructions = record["instructions"]
    if not isinstance(instructions, list) or not instructions:
        report.add("instructions", "expected a non-empty list of instruction strings")
        instructions = []
    texts = [report.check(as_text, text, f"instructions[{i}]") for i, text in enumerate(instructions)]
    count = len(record["actions"]) if isinstance(record["actions"], list) else 0
    frames = report.check(_frames, video, location, ctx, count) if video and actions else None
    episode_id = video_episode_id(video) if video else None
    poses = None
    if not report:
        poses = report.check(trajectory_poses, actions, episode_id, ctx.options, ctx.habitat, "video")
    if report:
        raise DataError(report.problems)
    if record_id is None:  # no id: the Habitat episode id, else the video folder's name
        record_id = episode_id or Path(video).name
    extra = {key: value for key, value in record.items() if key not in (*KEYS, "id")}
    extra["pose_source"] = poses.source
    result = []
    for index, instruction in enumerate(texts):
        trajectory_id = record_id if len(texts) == 1 else f"{record_id}/i{index}"
        for step in range(len(frames) if len(actions) == len(frames) else len(frames) - 1):
            result.append(
                Episode(
                    episode_id=f"{trajectory_id}/step_{step}",
                    instruction=instruction,
                    images=frames[: step + 1],
                    source=str(location),
                    extra=dict(extra),
                    **poses.fields(step, trajectory_id),
                )
            )
    return result


def iter_streamvln(records: Iterable, ctx: ReadContext) -> Iterator:
    """``(location, Episode)`` for every decision of every trajectory entry."""
    for item in read_each(records, lambda record, location: _episodes(record, location, ctx)):
        if isinstance(item, DataError):
            yield item
            continue
        location, episodes = item
        for episode in episodes:
            yield location, episode
