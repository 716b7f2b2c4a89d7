"""Public entry points: `iter_episodes`, `load_episodes`, `validate_files`.

Records are parsed and validated by our own streaming readers (that is where line numbers come from);
ids must be unique across all inputs of one call. ``on_error="raise"`` raises `DataError` listing every
problem (`iter_episodes` raises at the first bad record, since it streams); ``on_error="skip"`` keeps
every good record and logs, as a warning on the ``vln_gym.data`` logger, how many were skipped and why.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import operator
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.dataset_info import read_dataset_info
from vln_gym.data.fields import ON_ERROR, LoadOptions
from vln_gym.data.habitat import HabitatEpisodes
from vln_gym.data.problems import DataError, Location, ValidationReport, format_problems
from vln_gym.data.readers import Item, iter_path, iter_rows
from vln_gym.episode import Episode

logger = logging.getLogger("vln_gym.data")
PathsLike = str | Path | Sequence[str | Path]
MAX_LOGGED_PROBLEMS = 20


def as_paths(paths: PathsLike) -> list[Path]:
    """One path or a sequence of paths, as a non-empty list (ValueError naming anything else)."""
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    if isinstance(paths, bytes | Mapping) or not isinstance(paths, Iterable):
        raise ValueError(f"paths must be a path or a list of paths, got {paths!r}")
    result = []
    for path in paths:
        if not isinstance(path, str | os.PathLike):
            raise ValueError(f"paths must be a path or a list of paths; got {path!r} in {paths!r}")
        result.append(Path(path))
    if not result:
        raise ValueError("no input paths given")
    return result


def inputs_and_options(
    paths: PathsLike | None,
    dataset_info: str | Path | None = None,
    dataset: str | None = None,
    **options: Any,
) -> tuple[PathsLike, LoadOptions]:
    """The inputs and validated options of one load; a LLaMA-Factory ``dataset_info`` entry fills in
    the files, format, columns, tags and media folder that the caller did not give."""
    if (dataset_info is None) != (dataset is None):
        raise ValueError(
            "dataset_info and dataset go together: the dataset_info.json file and the entry's name"
        )
    if dataset_info is not None:
        entry = read_dataset_info(dataset_info, dataset)
        if paths is None:
            paths = list(entry.paths)
        if options.get("format", "auto") == "auto":
            options["format"] = entry.format
        options["field_map"] = {**entry.field_map, **(options.get("field_map") or {})}
        options["chat_tags"] = {**entry.chat_tags, **(options.get("chat_tags") or {})}
        if options.get("media_dir") is None:
            options["media_dir"] = entry.media_dir
    if paths is None:
        raise ValueError("no input paths given (pass paths, or dataset_info= and dataset=)")
    return distinct_inputs(paths), LoadOptions.create(**options)


def distinct_inputs(paths: PathsLike) -> list[Path]:
    """`as_paths` of ``paths``; ValueError when one input is given twice (by any spelling or link) or lies
    inside an input folder: its records would be read twice, every episode doubled."""
    inputs = as_paths(paths)
    seen: dict[Path, Path] = {}  # real path -> the input as given
    for path in inputs:
        real = Path(os.path.realpath(path))
        if real in seen:
            raise ValueError(f"input {path} is given twice (also as {seen[real]}): give it once")
        seen[real] = path
    for real, path in seen.items():
        outer = next((seen[parent] for parent in real.parents if parent in seen), None)
        if outer is not None:
            raise ValueError(f"input {path} is inside the input folder {outer}: give one of them")
    return inputs


def iter_items(paths: PathsLike, options: LoadOptions) -> Iterator[Item]:
    """Every record of every input (``paths`` and ``options`` from `inputs_and_options`, which checked
    them) as ``(location, Episode)`` or `DataError`, duplicate ids flagged."""
    ctx = ReadContext(options)
    if ctx.habitat is not None:
        ctx.habitat.read()  # a pose source that cannot be read fails the whole load, once
    items = itertools.chain.from_iterable(iter_path(path, ctx) for path in as_paths(paths))
    checked = checked_items(items, options)
    yield from checked if ctx.habitat is None else _noting_unused_pose_source(checked, ctx.habitat)


def _noting_unused_pose_source(items: Iterable[Item], habitat: HabitatEpisodes) -> Iterator[Item]:
    """``items``; then, if some record was good and none of them read ``habitat``, a warning: a pose
    source given for records that carry their own poses is otherwise ignored without a word."""
    good = 0
    for item in items:
        good += not isinstance(item, DataError)
        yield item
    if good and not habitat.used:
        logger.warning(
            "pose_source %s was not used: no record of this load takes its poses from a Habitat episode "
            "(frame trajectories do: VLN-Ego folders and the chat records built on them, StreamVLN, "
            "NaVILA); the poses are the records' own",
            ", ".join(habitat.paths),
        )


def checked_items(items: Iterable[Item], options: LoadOptions) -> Iterator[Item]:
    """``items`` with the checks across records: unique ids, text that is valid Unicode.

    An id seen before is a duplicate unless both were read at the same location (path, line and array
    index: the episodes of one record); a one-line JSON array or a Parquet file tells its records apart by
    the index."""
    first_seen: dict[str, Location] = {}
    id_column = options.column("id")
    for item in items:
        if isinstance(item, DataError):
            yield item
            continue
        location, episode = item
        bad_text = _lone_surrogate_problems(location, episode, options)
        if bad_text:
            yield DataError(bad_text)
            continue
        first = first_seen.setdefault(episode.episode_id, location)
        if first is not location and first != location:
            where = str(first) if first.index is None else f"{first} [{first.index}]"
            yield DataError(
                [location.problem(id_column, f"duplicate id {episode.episode_id!r} (first at {where})")]
            )
        else:
            yield item


TEXT_FIELDS = ("episode_id", "instruction", "system_prompt", "prompt", "expert_response")
_texts_of = operator.attrgetter(*TEXT_FIELDS)


def _lone_surrogate_problems(location, episode: Episode, options: LoadOptions) -> list:
    """Text that JSON escapes can hold but no tokenizer can encode (``"\\ud800"``) is a problem here."""
    values = _texts_of(episode)
    try:  # the common case: each text field holds a string or None (or "", which adds nothing)
        joined = "".join(filter(None, values))
    except TypeError:
        joined = "".join(value for value in values if isinstance(value, str))
    if joined.isascii():  # a flag CPython keeps on each string: no surrogate, nothing to encode
        return []
    try:
        joined.encode("utf-8")  # a surrogate stays one even next to another: one check for all
        return []
    except UnicodeEncodeError:
        pass
    problems = []
    for name in TEXT_FIELDS:
        value = getattr(episode, name)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                column = options.column("id" if name == "episode_id" else name)
                where = f"{value[error.start]!r} at character {error.start}"
                problems.append(location.problem(column, f"holds a lone surrogate ({where}): not valid text"))
    return problems


def log_skipped(report: ValidationReport) -> None:
    """One warning for what a ``"skip"`` load left out: its bad records and the inputs that read none."""
    if report.problems:
        logger.warning("%s:\n%s", report.skipped(), format_problems(report.problems, MAX_LOGGED_PROBLEMS))


def check_on_error(on_error: str) -> None:
    """ValueError unless ``on_error`` is ``"raise"`` or ``"skip"``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")


def iter_episodes(
    paths: PathsLike | None = None, *, on_error: str = "raise", **options: Any
) -> Iterator[Episode]:
    """Stream episodes (``options`` as for `load_episodes`); raises at the first bad record unless skip.
    Bad options and inputs are refused at the call, before the first episode is asked for."""
    check_on_error(on_error)
    return iter_good_episodes(*inputs_and_options(paths, **options), on_error)


def iter_good_episodes(paths: PathsLike, options: LoadOptions, on_error: str) -> Iterator[Episode]:
    """The good episodes, in order: a bad record raises its `DataError` (``"raise"``) or is counted and
    logged with the others once the stream ends or stops (``"skip"``)."""
    report = ValidationReport()
    try:
        for item in iter_items(paths, options):
            if isinstance(item, DataError) and on_error == "raise":
                raise item
            report.add(item)
            if not isinstance(item, DataError):
                yield item[1]
    finally:
        log_skipped(report)


def load_episodes(
    paths: PathsLike | None = None,
    *,
    format: str = "auto",
    field_map: Mapping[str, str] | None = None,
    media_dir: str | Path | None = None,
    path_remap: Mapping[str, str] | None = None,
    allow_outside_media: bool = False,
    on_error: str = "raise",
    heading_unit: str = "rad",
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    check_images: bool = False,
    require_pose: bool = True,
    pose_source: str | Path | Sequence[str | Path] | None = None,
    chat_tags: Mapping[str, str] | None = None,
    dataset_info: str | Path | None = None,
    dataset: str | None = None,
) -> list[Episode]:
    """Read VLN records from files / folders into Episodes.

    Args:
        paths: one path or several: jsonl / JSON array files, or VLN-Ego trajectory folders.
        format: ``"auto"`` (per file), ``"vlm-r1"``, ``"sharegpt"``, ``"vln-ego"`` or ``"vln-gym"``.
        field_map: our field name -> the file's column name (LLaMA-Factory ``dataset_info`` style).
        media_dir: folder that relative image paths resolve against (default: the data file's folder);
            image paths must stay inside it unless ``allow_outside_media``.
        path_remap: path prefix written on another machine -> local folder.
        on_error: ``"raise"`` (DataError with every problem) or ``"skip"`` (keep good records, log the rest).
        heading_unit: unit of heading fields in the file, ``"rad"`` or ``"deg"`` (converted to radians).
        forward_step, turn_angle: metres / degrees used to integrate VLN-Ego expert actions into poses.
        check_images: decode every image once to catch missing, truncated or non-image files.
        require_pose: missing pose fields are an error (else NaN pose, ``extra["pose_source"] = "missing"``).
        pose_source: Habitat VLN-CE episode file(s) (``val_seen.json.gz``, its ``_gt`` file beside it) or
            split folders: frame trajectories (VLN-Ego, StreamVLN, NaVILA) take start pose, goal, geodesic
            distance, reference path and positions from the episode with their id.
        chat_tags: LLaMA-Factory sharegpt tags (role_tag, content_tag, user_tag, assistant_tag, ...).
        dataset_info, dataset: a LLaMA-Factory ``dataset_info.json`` and an entry name: its file_name,
            formatting, columns and tags (``paths`` may then be left out; given options win).
    """
    check_on_error(on_error)
    paths, options = inputs_and_options(
        paths,
        dataset_info,
        dataset,
        format=format,
        field_map=field_map,
        media_dir=media_dir,
        path_remap=path_remap,
        allow_outside_media=allow_outside_media,
        heading_unit=heading_unit,
        forward_step=forward_step,
        turn_angle=turn_angle,
        check_images=check_images,
        require_pose=require_pose,
        pose_source=pose_source,
        chat_tags=chat_tags,
    )
    return settled(*collect_episodes(paths, options), on_error)


def episodes_from_rows(
    rows: Iterable[Mapping[str, Any]], *, name: str = "<rows>", on_error: str = "raise", **options: Any
) -> list[Episode]:
    """Episodes of in-memory rows: a `datasets.Dataset` (e.g. from `episodes_dataset` or a Hub export in
    any supported format) or a list of dicts; options as for `load_episodes` (``media_dir`` for relative
    image paths, default the working folder). Problems name ``name[row].field``."""
    check_on_error(on_error)
    load_options = LoadOptions.create(**options)
    items = checked_items(iter_rows(rows, name, ReadContext(load_options)), load_options)
    return settled(*collect_items(items), on_error)


def settled(episodes: list[Episode], report: ValidationReport, on_error: str) -> list[Episode]:
    """The good episodes of a whole load: `DataError` with every problem (``"raise"``), or the skipped
    records logged (``"skip"``)."""
    if report.problems and on_error == "raise":
        raise DataError(report.problems)
    log_skipped(report)
    return episodes


def collect_episodes(paths: PathsLike, options: LoadOptions) -> tuple[list[Episode], ValidationReport]:
    """Every good episode plus the report of the bad records (for callers that print problems themselves)."""
    return collect_items(iter_items(paths, options))


def collect_items(items: Iterable[Item]) -> tuple[list[Episode], ValidationReport]:
    """Every item of ``items``: the good episodes and the report, with the cyclic garbage collector paused
    (`gc_paused`)."""
    episodes: list[Episode] = []
    report = ValidationReport()
    with gc_paused():
        for item in items:
            report.add(item)
            if not isinstance(item, DataError):
                episodes.append(item[1])
    return episodes, report


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a whole load, back on after it (if it was on).

    A load makes ~10 containers per record (records, lists, episodes, tuples) and no reference cycles,
    so the collections they set off find nothing to free, but each one walks its generation, and the
    oldest one is every object the process holds: in ``scripts/bench_data.py`` half of a 10k-record
    NaVILA load was the collector. Reference counting still frees everything as usual; what a load
    does leave as cyclic garbage is collected by the first collection after it. (msgpack's documentation
    gives the same advice for unpacking large data.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def validate_files(
    paths: PathsLike | None = None, *, on_error: str | None = None, **options: Any
) -> ValidationReport:
    """Check every record (``options`` as for `load_episodes`; ``on_error`` is accepted and ignored)."""
    return collect_episodes(*inputs_and_options(paths, **options))[1]
