"""Format detection and per-file reading: every input path becomes a stream of episodes and problems.

Auto-detection is per file, from its first JSON object: ``"format": "vln-gym/1"`` -> vln-gym;
``conversations``/``messages`` with ``images`` -> sharegpt, with ``image`` -> vlm-r1; ``video`` +
``instructions`` + ``actions`` -> streamvln; ``video_id`` + ``q`` + ``a`` + ``frames`` -> navila; an
episodes_dataset row -> vln-gym; ``instruction`` + ``output`` -> alpaca (LLaMA-Factory's column names,
also the default of ``format="alpaca"``); a folder -> vln-ego.
An explicit ``format`` wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vln_gym.data.chat import alpaca_as_chat, chat_episode
from vln_gym.data.chat_quick import ChatPlan, quick_chat_episode
from vln_gym.data.context import ReadContext
from vln_gym.data.jsonio import iter_json_records, iter_parquet_records
from vln_gym.data.navila import iter_navila
from vln_gym.data.ownjsonl import FORMAT_TAG, own_episode
from vln_gym.data.problems import DataError, Location, Problem
from vln_gym.data.streamvln import iter_streamvln
from vln_gym.data.vlnego import iter_vln_ego
from vln_gym.episode import Episode

# A stream item: a good episode with where it was read, or the problems of one bad record.
Item = tuple[Location, Episode] | DataError


def detect_format(record: Any, ctx: ReadContext) -> str | None:
    """The format of a file whose first record is ``record``, or ``None`` if it cannot tell."""
    if not isinstance(record, dict):
        return None
    column = ctx.options.column
    if str(record.get("format", "")).startswith("vln-gym/"):
        return "vln-gym"
    if {"video", "instructions", "actions"} <= record.keys():
        return "streamvln"
    if {"video_id", "q", "a", "frames"} <= record.keys():
        return "navila"
    if {"id", "instruction", "images", "agent_position", "extra"} <= record.keys():
        return "vln-gym"  # an episodes_dataset row (a datasets.Dataset, or its Parquet export)
    if column("conversations") in record or column("messages") in record:
        if column("images") not in record and column("images", "image") in record:
            return "vlm-r1"
        return "sharegpt"
    if {"instruction", "output"} <= record.keys():
        return "alpaca"  # LLaMA-Factory's alpaca columns (instruction, input, output, images)
    return None


def _episode(record: Any, location: Location, ctx: ReadContext, fmt: str, plan: ChatPlan | None) -> Episode:
    if plan is not None:  # ShareGPT, VLM-R1: the common record in one pass, any other by every rule
        episode = quick_chat_episode(record, location, ctx, plan)
        if episode is not None:
            return episode
    if fmt == "vln-gym":
        return own_episode(record, location, ctx)
    if fmt == "alpaca":
        return chat_episode(alpaca_as_chat(record, location, ctx), location, ctx, "alpaca")
    return chat_episode(record, location, ctx, fmt)


def iter_path(path: Path, ctx: ReadContext) -> Iterator[Item]:
    """Items of one input: a jsonl / JSON file, or a VLN-Ego folder."""
    fmt = ctx.options.format
    if path.is_dir():
        if fmt not in ("auto", "vln-ego"):
            yield DataError(
                [Problem(str(path), None, "file", f"is a folder, but format {fmt!r} is read from files")]
            )
            return
        yield from iter_vln_ego(path, ctx.options, ctx.trajectories, ctx.images)
        return
    if fmt == "vln-ego":
        yield DataError(
            [Problem(str(path), None, "file", "format 'vln-ego' reads trajectory folders, not files")]
        )
        return
    records = iter_parquet_records(path) if path.suffix.lower() == ".parquet" else iter_json_records(path)
    yield from iter_records(records, ctx)


def iter_rows(rows: Iterable[Any], name: str, ctx: ReadContext) -> Iterator[Item]:
    """Items of in-memory rows (a `datasets.Dataset`, a list of dicts); problems name ``name[index]``."""
    yield from iter_records(((Location(name, None, index), row) for index, row in enumerate(rows)), ctx)


# Formats whose episodes need more than one record (NaVILA steps of one video) or give several per record
# (a StreamVLN trajectory): their readers take the whole record stream.
STREAM_READERS = {"navila": iter_navila, "streamvln": iter_streamvln}
QUICK = {"on": True}  # the common-record paths (`quick_chat_episode`); the tests turn them off to compare


def iter_records(records: Iterable, ctx: ReadContext) -> Iterator[Item]:
    """Items of ``(location, record)`` pairs (or `Problem` s), the format detected from the first record."""
    fmt = ctx.options.format
    detected = None if fmt == "auto" else fmt
    plan = None
    stream = iter(records)
    for item in stream:
        if isinstance(item, Problem):
            yield DataError([item])
            continue
        location, record = item
        if not isinstance(record, dict) and isinstance(record, Mapping):
            record = dict(record)
        if detected is None:
            detected = detect_format(record, ctx)
            if detected is None:
                yield DataError([location.problem("record", _undetected(record))])
                continue
        if detected in STREAM_READERS:
            yield from STREAM_READERS[detected](itertools.chain([(location, record)], stream), ctx)
            return
        if plan is None and detected in ("sharegpt", "vlm-r1") and QUICK["on"]:
            plan = ChatPlan.of(ctx.options, detected)
        try:
            yield location, _episode(record, location, ctx, detected, plan)
        except DataError as error:
            yield error


def _undetected(record: Any) -> str:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    keys = ", ".join(sorted(record)[:8])
    return (
        f"cannot detect the format from keys [{keys}]: expected 'format': '{FORMAT_TAG}', or "
        "'conversations'/'messages' with 'images' (ShareGPT) or 'image' (VLM-R1), video/instructions/actions "
        "(StreamVLN), video_id/q/a/frames (NaVILA), instruction/output (alpaca); pass format= or a field map"
    )
