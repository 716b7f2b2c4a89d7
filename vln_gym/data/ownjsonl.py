"""The package's own jsonl (``"format": "vln-gym/1"``): one Episode per line, Episode field names.

Keys: ``id``, ``instruction``, ``images`` (relative paths resolve against ``media_dir``, else the file's
folder), ``agent_position``, ``agent_heading`` (radians), ``goal_position``, ``distance_to_goal``, the
optional Episode fields, ``source`` (where the record first came from), and any other key into ``extra``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import OPTIONAL_FIELDS, POSE_FIELDS, PRIVILEGED_FIELDS, as_text
from vln_gym.data.media import read_images
from vln_gym.data.privileged import read_privileged
from vln_gym.data.problems import DataError, Location, RecordProblems
from vln_gym.episode import Episode, new_episode
from vln_gym.safe_files import atomic_writer

FORMAT_TAG = "vln-gym/1"
TEXT_FIELDS = ("system_prompt", "prompt", "expert_response")
OWN_TEXT_KEYS = (*TEXT_FIELDS, "source")
RESERVED_KEYS = frozenset(
    {"format", "id", "instruction", "images", "source", *TEXT_FIELDS, *PRIVILEGED_FIELDS}
)


def own_episode(record: Any, location: Location, ctx: ReadContext) -> Episode:
    """Episode of one own-format record; raises `DataError` listing every problem."""
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    names = ctx.options.names
    report = RecordProblems(location)
    tag = record.get("format", FORMAT_TAG)
    if tag != FORMAT_TAG:
        report.add("format", f"unsupported format {tag!r}; this reader knows {FORMAT_TAG!r}")
    values: dict[str, Any] = {}
    for name, key in (("episode_id", names["id"]), ("instruction", names["instruction"])):
        if key not in record:
            report.add(key, "missing (required field)")
        else:
            values[name] = report.check(as_text, record[key], key)
    images = None
    images_column = names["images"]
    if images_column not in record:
        report.add(images_column, "missing (a VLN record needs at least the current view)")
    else:
        images = read_images(
            record[images_column],
            images_column,
            base_dir=ctx.base_dir(location.path),
            ctx=ctx,
            report=report,
        )
    for key in OWN_TEXT_KEYS:
        value = record.get(key)
        if value is not None:
            values[key] = value if type(value) is str else report.check(as_text, value, key, allow_empty=True)
    privileged = read_privileged(record, images, ctx, report)
    if report:
        raise DataError(report.problems)
    pose_source = privileged.pop("pose_source")
    used = (names["id"], names["instruction"], images_column)
    privileged_columns = ctx.options.privileged_columns
    extra = {
        key: value
        for key, value in record.items()
        if key not in RESERVED_KEYS and key not in used and key not in privileged_columns
    }
    packed = extra.pop("extra", None)  # episodes_dataset rows (and their Parquet files) pack extra as JSON
    if isinstance(packed, str) and packed:
        try:
            extra = {**json.loads(packed), **extra}
        except json.JSONDecodeError as error:
            raise DataError([location.problem("extra", f"invalid JSON ({error.msg})")]) from None
    if pose_source != "record":
        extra["pose_source"] = pose_source
    values.setdefault("source", str(location))
    values.update(privileged)
    values["images"] = images
    values["extra"] = extra
    return new_episode(values)


def _relative(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (posix separators) when inside it, else absolute."""
    absolute = os.path.abspath(path)
    if root is not None and absolute.startswith(root):
        return absolute[len(root) :].replace(os.sep, "/")
    return absolute


def episode_record(episode: Episode, media_dir: str | Path | None = None) -> dict[str, Any]:
    """The own-format object of ``episode`` (image paths relative to ``media_dir`` when under it)."""
    root = None if media_dir is None else os.path.abspath(media_dir).rstrip(os.sep) + os.sep
    record: dict[str, Any] = {
        "format": FORMAT_TAG,
        "id": episode.episode_id,
        "instruction": episode.instruction,
        "images": [_relative(path, root) for path in episode.images],
    }
    pose = {name: getattr(episode, name) for name in (*POSE_FIELDS, "distance_to_goal")}
    if all(
        math.isfinite(v) for value in pose.values() for v in (value if isinstance(value, tuple) else (value,))
    ):
        record.update(
            {name: list(value) if isinstance(value, tuple) else value for name, value in pose.items()}
        )
    for name in (*TEXT_FIELDS, *OPTIONAL_FIELDS):
        value = getattr(episode, name)
        if value is None or name in record:
            continue
        if name == "reference_path":
            value = [list(point) for point in value]
        elif name == "expert_actions":
            value = list(value)
        record[name] = value
    if episode.source:
        record["source"] = episode.source
    for key, value in episode.extra.items():
        if key in RESERVED_KEYS:
            raise ValueError(
                f"episode {episode.episode_id!r}: extra key {key!r} collides with an own-format field"
            )
        if key == "pose_source" and value == "record":
            continue
        record[key] = value
    return record


def write_episodes_jsonl(
    episodes: Iterable[Episode], path: str | Path, *, media_dir: str | Path | None = None
) -> Path:
    """Write ``episodes`` as own-format jsonl (atomically). Image paths under ``media_dir`` are written
    relative to it (load the file back with the same ``media_dir``, or keep the file in that folder);
    other paths are written absolute. Returns the path written."""
    path = Path(path)
    with atomic_writer(path) as handle:
        for episode in episodes:
            record = episode_record(episode, media_dir)
            try:
                line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"episode {episode.episode_id!r} cannot be written as JSON: {error}"
                ) from error
            handle.write(line + "\n")
    return path
