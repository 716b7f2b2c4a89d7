"""The package's own jsonl (``"format": "vln-gym/1"``): one Episode per line, Episode field names.

Keys: ``id``, ``instruction``, ``images`` (relative paths resolve against ``media_dir``, else the file's
folder), ``agent_position``, ``agent_heading`` (radians), ``goal_position``, ``distance_to_goal``, the
optional Episode fields, ``source`` (where the record first came from), and any other key into ``extra``.
``extra`` (a JSON object, or a string holding one, as `episodes_dataset` rows pack it) holds the extra keys
that are own-format keys themselves (a ShareGPT column ``source``, say): the writer nests those there.
"""

from __future__ import annotations

import functools
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
from vln_gym.data.problems import DataError, FieldError, Location, RecordProblems
from vln_gym.episode import Episode, episode_of_fields
from vln_gym.paths import absolute_path
from vln_gym.safe_files import atomic_writer

FORMAT_TAG = "vln-gym/1"
TEXT_FIELDS = ("system_prompt", "prompt", "expert_response")
OWN_TEXT_KEYS = (*TEXT_FIELDS, "source")
EXTRA_KEY = "extra"
# Keys the own format reads itself: an Episode's extra key among them is written nested under EXTRA_KEY.
RESERVED_KEYS = frozenset(
    {"format", "id", "instruction", "images", "source", EXTRA_KEY, *TEXT_FIELDS, *PRIVILEGED_FIELDS}
)


def _nested_extra(value: Any) -> dict[str, Any]:
    """The keys of an ``extra`` value: a JSON object, or a string holding one (``None``: no keys)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise FieldError(EXTRA_KEY, f"invalid JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise FieldError(
                EXTRA_KEY,
                f"expected a JSON object (or a string holding one), got a string holding {_kind(value)}",
            )
    elif not isinstance(value, dict):
        raise FieldError(EXTRA_KEY, f"expected a JSON object (or a string holding one), got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """``value``'s JSON type, with an article: ``a list``, ``null``."""
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "null" if value is None else "an object")


@functools.lru_cache(maxsize=16)
def _not_extra(used: tuple[str, ...], privileged_columns: frozenset[str]) -> frozenset[str]:
    """The top-level keys an own-format record's Episode fields take (none of them goes to ``extra``)."""
    return RESERVED_KEYS.union(used, privileged_columns)


def _extra(record: dict, used: tuple[str, ...], ctx: ReadContext, report: RecordProblems) -> dict[str, Any]:
    """The record's extra keys: its other top-level keys and those nested under ``extra``."""
    not_extra = _not_extra(used, ctx.options.privileged_columns)
    extra = {key: value for key, value in record.items() if key not in not_extra}
    if EXTRA_KEY not in record:  # the common case
        return extra
    nested = report.check(_nested_extra, record[EXTRA_KEY])
    if not nested:
        return extra
    both = sorted(extra.keys() & nested.keys())
    if both:
        report.add(EXTRA_KEY, f"key(s) {both} also given at the top level (which one is meant?)")
    return {**nested, **extra}


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
        value = record.get(key)
        if type(value) is str and not value.isspace() and value:  # the common case, in one go
            values[name] = value
        elif key not in record:
            report.add(key, "missing (required field)")
        else:
            values[name] = report.check(as_text, value, key)
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
    extra = _extra(record, (names["id"], names["instruction"], images_column), ctx, report)
    if report:
        raise DataError(report.problems)
    pose_source = privileged.pop("pose_source")
    if pose_source != "record":
        extra["pose_source"] = pose_source
    values.setdefault("source", str(location))
    values.update(privileged)
    values["images"] = images
    values["extra"] = extra
    return episode_of_fields(values)  # every name is a field: the id, instruction and pose are checked above


def _relative(path: str, root: str | None, real_root: str | None) -> str:
    """``path`` relative to ``root`` (posix separators) when inside it, as written or as the file system
    resolves both (``real_root``), else absolute."""
    absolute = os.path.abspath(path)
    if root is None or real_root is None:
        return absolute
    if absolute.startswith(root):
        return absolute[len(root) :].replace(os.sep, "/")
    real = os.path.realpath(absolute)
    if real.startswith(real_root):
        return real[len(real_root) :].replace(os.sep, "/")
    return absolute


def episode_record(episode: Episode, media_dir: str | Path | None = None) -> dict[str, Any]:
    """The own-format object of ``episode`` (image paths relative to ``media_dir`` when under it); its
    extra keys are top-level keys, those that are own-format keys nested under ``extra``."""
    root = None if media_dir is None else absolute_path(media_dir).rstrip(os.sep) + os.sep
    real_root = None if root is None else os.path.realpath(root).rstrip(os.sep) + os.sep
    record: dict[str, Any] = {
        "format": FORMAT_TAG,
        "id": episode.episode_id,
        "instruction": episode.instruction,
        "images": [_relative(path, root, real_root) for path in episode.images],
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
    nested = {key: value for key, value in episode.extra.items() if key in RESERVED_KEYS}
    record.update((key, value) for key, value in episode.extra.items() if key not in RESERVED_KEYS)
    if nested:
        record[EXTRA_KEY] = nested
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
