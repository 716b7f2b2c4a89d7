"""Habitat VLN-CE episode files (R2R-CE, RxR-CE) as a pose source for frame datasets.

``{split}.json.gz`` (or ``{split}_{role}.json.gz`` for RxR-CE; a decompressed ``{split}.json`` reads the
same way) holds ``episodes`` with ``start_position``, ``start_rotation`` (quaternion ``[x, y, z, w]``, a
rotation about +y), ``goals[0].position/radius``, ``reference_path``, ``instruction.instruction_text`` and
``info.geodesic_distance``. The ``*_gt.json.gz`` (or ``*_gt.json``) next to it gives, per episode id, the
expert ``actions`` (ending with STOP) and ``locations``: the start and the position after every
MOVE_FORWARD (turns add none). Positions are taken from ``locations``, never integrated: Habitat slides
along walls, so a few forward steps are shorter than ``forward_step`` or bent.

These files hold no images. `HabitatEpisodes` is joined to StreamVLN / NaVILA / VLN-Ego records by
episode id (``pose_source=``); `HabitatEpisode.poses` gives every step's privileged fields.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vln_gym.data.fields import LoadOptions, as_actions, as_nonnegative, as_path, as_position, as_text
from vln_gym.data.jsonio import BOM, TOO_DEEP, json_error_message
from vln_gym.data.problems import DataError, FieldError, Problem
from vln_gym.data.trajectory import Poses, integrated_poses
from vln_gym.geometry import MOVE_FORWARD, Vec3, apply_action

GZIP_SUFFIX = ".json.gz"
PLAIN_SUFFIX = ".json"
GZIP_MAGIC = b"\x1f\x8b"
QUATERNION_TOLERANCE = 1e-3


def heading_from_quaternion(value: Any, name: str) -> float:
    """Heading (radians about +y, 0 faces -z) of a Habitat ``[x, y, z, w]`` rotation about +y."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise FieldError(name, f"expected a quaternion [x, y, z, w], got {value!r:.60}")
    for index, part in enumerate(value):
        if isinstance(part, bool) or not isinstance(part, int | float) or not math.isfinite(part):
            raise FieldError(name, f"component {index} must be a finite number, got {part!r}")
    x, y, z, w = (float(part) for part in value)
    if abs(math.sqrt(x * x + y * y + z * z + w * w) - 1.0) > QUATERNION_TOLERANCE:
        raise FieldError(name, f"{list(value)} is not a unit quaternion")
    if abs(x) > QUATERNION_TOLERANCE or abs(z) > QUATERNION_TOLERANCE:
        raise FieldError(name, f"{list(value)} is not a rotation about +y (x and z must be 0)")
    return 2.0 * math.atan2(y, w)


@dataclass(frozen=True)
class HabitatEpisode:
    """One VLN-CE episode with its ground-truth expert path when the ``_gt`` file has it."""

    episode_id: str
    trajectory_id: str | None
    scene_id: str | None
    instruction: str
    start_position: Vec3
    start_heading: float
    goal_position: Vec3
    goal_radius: float | None
    geodesic_distance: float | None
    reference_path: tuple[Vec3, ...]
    actions: tuple[int, ...] | None = None
    locations: tuple[Vec3, ...] | None = None

    def poses(self, actions: tuple[int, ...], turn_angle: float, forward_step: float = 0.25) -> Poses:
        """Privileged fields for a frame trajectory that takes ``actions`` from this episode's start.

        When ``actions`` are the gt actions, positions come from the gt ``locations`` (``pose_source``
        ``"habitat-gt"``); other action lists (another expert) are integrated from the start pose
        (``"habitat-start"``). Headings always integrate the turns from ``start_rotation``.
        """
        positions: list[Vec3] = []
        headings: list[float] = []
        position, heading = self.start_position, self.start_heading
        use_gt = self.locations is not None and actions == self.actions
        forward_count = 0
        for action in (*actions, None):
            positions.append(self.locations[forward_count] if use_gt else position)
            headings.append(heading)
            if action is None:
                break
            forward_count += action == MOVE_FORWARD
            position, heading = apply_action(position, heading, action, forward_step, turn_angle)
        return Poses(
            positions=tuple(positions),
            headings=tuple(headings),
            goal=self.goal_position,
            actions=tuple(actions),
            reference_path=self.reference_path,
            source="habitat-gt" if use_gt else "habitat-start",
            success_distance=self.goal_radius,
            geodesic_distance=self.geodesic_distance,
            scene_id=self.scene_id,
        )


def _read_bytes(path: Path) -> bytes:
    """The JSON text of ``path``: gunzipped for ``*.gz``, as stored otherwise."""
    compressed = path.name.endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError([Problem(str(path), None, "file", "file not found")]) from None
    except EOFError as error:
        raise DataError([Problem(str(path), None, "file", f"truncated gzip file ({error})")]) from None
    except OSError as error:
        kind = "gzip file" if compressed else "file"
        raise DataError([Problem(str(path), None, "file", f"not a readable {kind} ({error})")]) from None
    if raw.startswith(GZIP_MAGIC):
        raise DataError([Problem(str(path), None, "file", "is gzip-compressed: name it *.json.gz")])
    return raw


def _read_json(path: Path) -> Any:
    """The JSON value of a ``.json.gz`` or plain ``.json`` file; `DataError` naming the file otherwise."""
    raw = _read_bytes(path)
    try:
        text = raw.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError([Problem(str(path), line, "json", f"not valid UTF-8 ({error.reason})")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError([Problem(str(path), error.lineno, "json", json_error_message(text, error))]) from None
    except RecursionError:
        raise DataError([Problem(str(path), None, "json", TOO_DEEP)]) from None


def _as_id(value: Any, name: str, optional: bool = False) -> str | None:
    """An id given as a string or an integer (not a bool), as text; ``None`` when optional and null."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        allowed = "a non-empty string or an integer" + (" (or null)" if optional else "")
        raise FieldError(name, f"expected {allowed}, got {value!r:.60}")
    return str(value)


def _scene_id(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(name, f"expected a scene path string (or null), got {value!r:.60}")
    return value


def _reference_path(record: dict, where: str) -> tuple[Vec3, ...]:
    """``reference_path``; absent or null: the start position alone (an empty list is an error)."""
    value = record.get("reference_path")
    if value is None:
        return (as_position(record["start_position"], f"{where}.start_position"),)
    return as_path(value, f"{where}.reference_path")


def _episode(record: Any, where: str) -> HabitatEpisode:
    if not isinstance(record, dict):
        raise FieldError(where, f"expected an object, got {type(record).__name__}")
    for key in ("episode_id", "start_position", "start_rotation", "goals", "instruction"):
        if key not in record:
            raise FieldError(f"{where}.{key}", "missing (required by VLN-CE episodes)")
    goals = record["goals"]
    if not isinstance(goals, list) or not goals or not isinstance(goals[0], dict):
        raise FieldError(f"{where}.goals", "expected a non-empty list of {position, radius}")
    instruction = record["instruction"]
    text = instruction.get("instruction_text") if isinstance(instruction, dict) else None
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    geodesic = info.get("geodesic_distance")
    radius = goals[0].get("radius")
    return HabitatEpisode(
        episode_id=_as_id(record["episode_id"], f"{where}.episode_id"),
        trajectory_id=_as_id(record.get("trajectory_id"), f"{where}.trajectory_id", optional=True),
        scene_id=_scene_id(record.get("scene_id"), f"{where}.scene_id"),
        instruction=as_text(text, f"{where}.instruction.instruction_text"),
        start_position=as_position(record["start_position"], f"{where}.start_position"),
        start_heading=heading_from_quaternion(record["start_rotation"], f"{where}.start_rotation"),
        goal_position=as_position(goals[0].get("position"), f"{where}.goals[0].position"),
        goal_radius=None if radius is None else as_nonnegative(radius, f"{where}.goals[0].radius"),
        geodesic_distance=None
        if geodesic is None
        else as_nonnegative(geodesic, f"{where}.info.geodesic_distance"),
        reference_path=_reference_path(record, where),
    )


def _with_gt(episode: HabitatEpisode, gt: Any, where: str) -> HabitatEpisode:
    if not isinstance(gt, dict):
        raise FieldError(where, f"expected an object with actions and locations, got {type(gt).__name__}")
    actions = as_actions(gt.get("actions"), f"{where}.actions")
    locations = as_path(gt.get("locations"), f"{where}.locations")
    forwards = sum(action == MOVE_FORWARD for action in actions)
    if len(locations) != forwards + 1:
        raise FieldError(
            f"{where}.locations",
            f"{len(locations)} locations for {forwards} MOVE_FORWARD actions "
            "(expected the start plus one per forward step)",
        )
    return dataclasses.replace(episode, actions=actions, locations=locations)


def _stem(path: Path) -> tuple[str, str]:
    """``val_seen.json.gz`` -> ``("val_seen", ".json.gz")``; ``val_seen.json`` likewise."""
    for suffix in (GZIP_SUFFIX, PLAIN_SUFFIX):
        if path.name.endswith(suffix):
            return path.name.removesuffix(suffix), suffix
    return path.name, GZIP_SUFFIX


def gt_path_for(path: Path) -> Path:
    """The ``_gt`` file beside an episode file: ``val_seen.json.gz`` -> ``val_seen_gt.json.gz``,
    ``val_seen.json`` -> ``val_seen_gt.json``; when only the other kind exists (one of the two files
    decompressed), that one."""
    name, suffix = _stem(path)
    same = path.with_name(f"{name}_gt{suffix}")
    other = path.with_name(f"{name}_gt{PLAIN_SUFFIX if suffix == GZIP_SUFFIX else GZIP_SUFFIX}")
    return other if not same.is_file() and other.is_file() else same


def resolve_episode_file(path: str | Path) -> Path:
    """An episode file, or the split folder holding ``<folder name>.json.gz`` (else ``.json``)."""
    path = Path(path)
    if not path.is_dir():
        return path
    candidates = [path / f"{path.name}{suffix}" for suffix in (GZIP_SUFFIX, PLAIN_SUFFIX)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    message = f"folder has no {candidates[0].name} or {candidates[1].name} (a VLN-CE split folder)"
    raise DataError([Problem(str(path), None, "pose_source", message)])


def read_habitat_episodes(path: str | Path, gt_path: str | Path | None = None) -> dict[str, HabitatEpisode]:
    """Episodes of a VLN-CE file by episode id, with gt actions/locations when its ``_gt`` file exists.

    ``gt_path`` defaults to the ``_gt`` file next to ``path``; an explicit one must exist. Raises
    `DataError` naming the file and the field (``episodes[i].start_rotation``) for every bad episode.
    """
    path = resolve_episode_file(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise DataError([Problem(str(path), None, "episodes", "expected an object with an 'episodes' list")])
    episodes: dict[str, HabitatEpisode] = {}
    problems: list[Problem] = []
    for index, record in enumerate(data["episodes"]):
        try:
            episode = _episode(record, f"episodes[{index}]")
        except FieldError as error:
            problems.append(Problem(str(path), None, error.field, error.message))
            continue
        if episode.episode_id in episodes:
            problems.append(Problem(str(path), None, f"episodes[{index}].episode_id", "duplicate episode id"))
        episodes[episode.episode_id] = episode
    gt_file = Path(gt_path) if gt_path is not None else gt_path_for(path)
    if gt_path is not None or gt_file.is_file():
        problems.extend(_join_gt(episodes, gt_file))
    if problems:
        raise DataError(problems)
    return episodes


def _join_gt(episodes: dict[str, HabitatEpisode], gt_file: Path) -> list[Problem]:
    gt = _read_json(gt_file)
    if not isinstance(gt, dict):
        return [Problem(str(gt_file), None, "file", "expected an object keyed by episode id")]
    problems = []
    for episode_id, episode in episodes.items():
        if episode_id not in gt:
            continue  # gt files may cover a subset; such episodes have no expert path
        try:
            episodes[episode_id] = _with_gt(episode, gt[episode_id], episode_id)
        except FieldError as error:
            problems.append(Problem(str(gt_file), None, error.field, error.message))
    return problems


class HabitatEpisodes:
    """The episodes of one or more VLN-CE files, read once per load, looked up by episode id."""

    def __init__(self, paths: tuple[str, ...]):
        self.paths = paths
        self._episodes: dict[str, HabitatEpisode] | DataError | None = None
        self._looked_up = False

    @property
    def used(self) -> bool:
        """Some record of the load looked up its episode."""
        return self._looked_up

    @property
    def episodes(self) -> dict[str, HabitatEpisode]:
        """Every episode by id (files read on first use; a broken file raises its `DataError` each time)."""
        if self._episodes is None:
            merged: dict[str, HabitatEpisode] = {}
            try:
                for path in self.paths:
                    merged.update(read_habitat_episodes(path))
                self._episodes = merged
            except DataError as error:
                self._episodes = error
        if isinstance(self._episodes, DataError):
            raise self._episodes
        return self._episodes

    def read(self) -> None:
        """Read the files now (a load does, before any record): `DataError` naming a broken one."""
        self.episodes  # noqa: B018  (the property reads them once)

    def get(self, episode_id: str, name: str) -> HabitatEpisode:
        """The episode with id ``episode_id``; `FieldError` on column ``name`` when there is none."""
        self._looked_up = True
        try:
            return self.episodes[str(episode_id)]
        except KeyError:
            raise FieldError(
                name, f"episode id {episode_id!r} is not in the pose source {', '.join(self.paths)}"
            ) from None


def trajectory_poses(
    actions: tuple[int, ...],
    episode_id: str | None,
    options: LoadOptions,
    habitat: HabitatEpisodes | None,
    name: str,
) -> Poses:
    """Poses of a frame trajectory: from the pose source's episode ``episode_id`` when a pose source is
    given (`FieldError` on ``name`` when the id is unknown), else integrated from the origin."""
    if habitat is None:
        return integrated_poses(actions, options.forward_step, options.turn_angle)
    if episode_id is None:
        raise FieldError(name, "names no Habitat episode id to join with the pose source")
    return habitat.get(episode_id, name).poses(actions, options.turn_angle, options.forward_step)
