"""Episodes as a Hugging Face `datasets.Dataset`: Arrow-backed, memory-mapped, cached on disk.

`episodes_dataset` runs the same validating readers as `load_episodes` inside
`datasets.Dataset.from_generator`, so a large input is streamed once into an Arrow cache and later
loads memory-map it. The cache key holds the options and every input file's size and mtime, so an
edited file is read again. Rows use the own-format column names; ``extra`` is a JSON string.
`episode_from_row` turns a row back into an `Episode` (images stay path strings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets

from vln_gym.data.fields import LoadOptions
from vln_gym.data.loader import (
    PathsLike,
    as_paths,
    check_on_error,
    episodes_from_rows,
    inputs_and_options,
    iter_good_episodes,
)
from vln_gym.data.problems import DataError
from vln_gym.episode import Episode

_VEC = datasets.Sequence(datasets.Value("float64"), length=3)
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Value("string")),
        "agent_position": _VEC,
        "agent_heading": datasets.Value("float64"),
        "goal_position": _VEC,
        "distance_to_goal": datasets.Value("float64"),
        "system_prompt": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "expert_response": datasets.Value("string"),
        "trajectory_id": datasets.Value("string"),
        "step_index": datasets.Value("int64"),
        "reference_path": datasets.Sequence(_VEC),
        "expert_actions": datasets.Sequence(datasets.Value("int8")),
        "geodesic_distance": datasets.Value("float64"),
        "scene_id": datasets.Value("string"),
        "success_distance": datasets.Value("float64"),
        "source": datasets.Value("string"),
        "extra": datasets.Value("string"),
    }
)


def _row(episode: Episode) -> dict[str, Any]:
    row = {name: getattr(episode, name) for name in FEATURES if name not in ("id", "extra")}
    row["id"] = episode.episode_id
    row["extra"] = json.dumps(episode.extra, ensure_ascii=False)
    return row


def _generate(
    paths: tuple[str, ...], options: LoadOptions, on_error: str, stamps: tuple
) -> Iterator[dict[str, Any]]:
    """Rows for `Dataset.from_generator` (``stamps`` only makes the cache key change with the files)."""
    for episode in iter_good_episodes(paths, options, on_error):
        yield _row(episode)


def _stamps(paths: list[Path]) -> list[tuple[str, int, int]]:
    stamps = []
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue
            stamps.append((str(file.absolute()), stat.st_size, stat.st_mtime_ns))
    return stamps


def episodes_dataset(
    paths: PathsLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    **options: Any,
) -> datasets.Dataset:
    """The episodes of ``paths`` (options as for `load_episodes`) as a cached Arrow `datasets.Dataset`.

    ``on_error="raise"`` raises `DataError` at the first bad record; ``"skip"`` leaves bad records out
    (use `validate_files` to list them).
    """
    check_on_error(on_error)
    paths, load_options = inputs_and_options(paths, **options)
    inputs = as_paths(paths)
    gen_kwargs = {
        "paths": tuple(str(path.absolute()) for path in inputs),  # tuples: nothing to shard
        "options": load_options,
        "on_error": on_error,
        "stamps": tuple(_stamps(inputs)),
    }
    try:
        return datasets.Dataset.from_generator(
            _generate,
            features=FEATURES,
            gen_kwargs=gen_kwargs,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise
    except ValueError as error:  # datasets refuses a generator that yields no row: say why in our words
        if "corresponds to no data" not in str(error):
            raise
        raise ValueError(
            f"episodes_dataset: no good record in {', '.join(map(str, inputs))} (on_error='skip' left every "
            "record out; validate_files lists their problems)"
        ) from None


def episode_from_row(row: Mapping[str, Any], media_dir: str | os.PathLike | None = None) -> Episode:
    """The `Episode` of one row (an `episodes_dataset` row, or any record format `load_episodes` reads);
    relative image paths resolve against ``media_dir``."""
    return episodes_from_rows([row], name="<row>", media_dir=media_dir)[0]
