"""VLN-Ego trajectory folders (``ep_*/traj_*/step_N.jpg`` + ``action_list.json`` + ``instruction.txt``).

VLN-Ego stores no poses. They are rebuilt by integrating the expert actions with
`vln_gym.geometry.apply_action`, starting at the origin with heading 0 (``forward_step`` metres,
``turn_angle`` degrees): the pose before step N is the agent pose of step N, the pose after the last
action is the goal. Poses are therefore relative to the trajectory start, which is all the
distance-based rewards and metrics need. ``reference_path`` is the integrated path from start to goal
with consecutive repeats (turns in place) merged. Episodes built this way carry
``extra["pose_source"] = "vln-ego-actions"``. With ``pose_source=`` (a Habitat VLN-CE episode file), the
folder ``ep_<id>`` is joined to episode ``<id>`` and poses come from Habitat (`vln_gym.data.habitat`).

Frames beyond the last action (a view after STOP) are ignored; a missing frame for an action is an error.

Convention (checked against the VLN-Ego recorder): ``action_list[N]`` is the expert action taken at
frame ``step_N``, so ``expert_actions`` of step N starts with ``action_list[N]``. Note that VLN-R1's
LLaMA-Factory export (``r2r_16_images_4act_debug.json``) answers ``action_list[N+1 : N+5]`` for frame N,
one step ahead of that; its answer text is kept as ``expert_response``, unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vln_gym.data.fields import LoadOptions, as_actions
from vln_gym.data.habitat import HabitatEpisodes, trajectory_poses
from vln_gym.data.jsonio import BOM, iter_json_records
from vln_gym.data.media import ImageChecker, is_inside
from vln_gym.data.problems import DataError, FieldError, Location, Problem
from vln_gym.data.trajectory import Poses
from vln_gym.episode import Episode
from vln_gym.paths import absolute_path

ACTIONS_FILE = "action_list.json"
INSTRUCTION_FILE = "instruction.txt"
STEP_FILE = re.compile(r"^step_(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
EPISODE_FOLDER = re.compile(r"^ep_(\d+)$")
EMPTY_ARRAY = re.compile(rb"(?:\[\s*\])?")


@dataclass(frozen=True)
class Trajectory:
    """One VLN-Ego trajectory: its actions (with their lines in action_list.json), frames and poses."""

    folder: str
    trajectory_id: str
    actions: tuple[int, ...]
    action_lines: tuple[int, ...]
    frames: dict[int, str]
    poses: Poses

    @property
    def actions_path(self) -> str:
        return os.path.join(self.folder, ACTIONS_FILE)

    def pose_fields(self, step: int) -> dict:
        """Privileged Episode fields of step ``step``."""
        return self.poses.fields(step, self.trajectory_id)


def habitat_episode_id(folder: Path) -> str | None:
    """The Habitat episode id of a VLN-Ego folder ``ep_<id>/traj_<trajectory id>``."""
    match = EPISODE_FOLDER.match(folder.absolute().parent.name)
    return match.group(1) if match else None


def _holds_no_actions(path: Path) -> bool:
    """The file is empty (blank) or holds an empty JSON array."""
    try:
        text = path.read_bytes().removeprefix(BOM).strip()
    except OSError:
        return False
    return EMPTY_ARRAY.fullmatch(text) is not None


def _read_actions(actions_path: Path) -> tuple[list[int], list[int], list[Problem]]:
    """The actions of ``action_list.json`` with the line of each, and its problems."""
    actions, lines, problems = [], [], []
    for item in iter_json_records(actions_path):
        if isinstance(item, Problem):
            if item.field == "file" and _holds_no_actions(actions_path):
                item = Problem(item.path, item.line, "actions", "empty action list")
            problems.append(item)
            continue
        location, value = item
        if location.index is None:  # not a JSON array
            problems.append(location.problem("actions", "expected a JSON array of action ids 0-3"))
            break
        try:
            actions.extend(as_actions([value], "action"))
            lines.append(location.line)
        except FieldError as error:
            problems.append(location.problem("action", error.message))
    if not problems and not actions:
        problems.append(Problem(str(actions_path), None, "actions", "empty action list"))
    return actions, lines, problems


def read_trajectory(folder: Path, options: LoadOptions, habitat: HabitatEpisodes | None = None) -> Trajectory:
    """Read and integrate one trajectory folder; raises `DataError` naming the file and line."""
    actions, lines, problems = _read_actions(folder / ACTIONS_FILE)
    if problems:
        raise DataError(problems)
    frames: dict[int, str] = {}
    for name in sorted(os.listdir(folder)):
        match = STEP_FILE.match(name)
        if not match:
            continue
        step, path = int(match.group(1)), str((folder / name).absolute())
        if step in frames:
            problems.append(
                Problem(
                    path, None, "frames", f"step {step} has two frames: {Path(frames[step]).name} and {name}"
                )
            )
        elif not options.allow_outside_media and not is_inside(
            os.path.realpath(path), os.path.realpath(folder)
        ):
            problems.append(
                Problem(
                    path, None, "frames", f"links outside the trajectory folder to {os.path.realpath(path)}"
                )
            )
        frames[step] = path
    if problems:
        raise DataError(problems)
    try:
        poses = trajectory_poses(
            tuple(actions), habitat_episode_id(folder), options, habitat, "episode folder"
        )
    except FieldError as error:
        raise DataError([Problem(str(folder), None, error.field, error.message)]) from None
    return Trajectory(
        folder=str(folder.absolute()),
        trajectory_id=f"{folder.absolute().parent.name}/{folder.name}",
        actions=tuple(actions),
        action_lines=tuple(lines),
        frames=frames,
        poses=poses,
    )


class TrajectoryCache:
    """Trajectories read during one load, by folder (each folder is read and integrated once)."""

    def __init__(self, options: LoadOptions, habitat: HabitatEpisodes | None = None):
        self.options = options
        self.habitat = habitat
        self._cache: dict[str, Trajectory | DataError] = {}

    def get(self, folder: str) -> Trajectory:
        if folder not in self._cache:
            try:
                self._cache[folder] = read_trajectory(Path(folder), self.options, self.habitat)
            except DataError as error:
                self._cache[folder] = error
        cached = self._cache[folder]
        if isinstance(cached, DataError):
            raise cached
        return cached

    def for_image(self, path: str, name: str) -> tuple[Trajectory, int] | None:
        """The trajectory and step of image ``path`` if it is ``step_N.*`` in a folder with action_list.json.

        Raises `FieldError` (column ``name``) when the folder's action list is broken or too short.
        """
        folder, file_name = os.path.split(path)
        match = STEP_FILE.match(file_name)
        if match is None or not os.path.isfile(os.path.join(folder, ACTIONS_FILE)):
            return None
        try:
            trajectory = self.get(folder)
        except DataError as error:
            raise FieldError(
                name, f"cannot rebuild the pose from VLN-Ego actions: {error.problems[0]}"
            ) from error
        step = int(match.group(1))
        if step >= len(trajectory.actions):
            raise FieldError(
                name,
                f"cannot rebuild the pose: {file_name} is step {step} but {trajectory.actions_path} has only "
                f"{len(trajectory.actions)} actions",
            )
        return trajectory, step


def find_trajectories(root: Path) -> list[Path]:
    """Trajectory folders at or under ``root`` (folders holding action_list.json), in natural order."""
    if (root / ACTIONS_FILE).is_file():
        return [root]
    folders = {path.parent for path in root.rglob(ACTIONS_FILE)}
    return sorted(
        folders, key=lambda path: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]
    )


def _read_instruction(folder: Path) -> str:
    path = folder / INSTRUCTION_FILE
    try:
        text = path.read_bytes().decode("utf-8-sig").strip()
    except FileNotFoundError:
        raise DataError([Problem(str(path), None, "instruction", "missing instruction.txt")]) from None
    except UnicodeDecodeError as error:
        raise DataError(
            [Problem(str(path), None, "instruction", f"not valid UTF-8 ({error.reason})")]
        ) from None
    if not text:
        raise DataError([Problem(str(path), None, "instruction", "instruction.txt is empty")])
    return text


def iter_vln_ego(root: Path, options: LoadOptions, cache: TrajectoryCache, checker: ImageChecker) -> Iterator:
    """``(location, Episode)`` per step of every trajectory under ``root``; problems as `DataError` items."""
    if not root.is_dir():
        yield DataError(
            [Problem(str(root), None, "file", "not a folder (VLN-Ego input is a trajectory folder)")]
        )
        return
    folders = find_trajectories(Path(absolute_path(root)))
    if not folders:
        yield DataError(
            [Problem(str(root), None, "file", f"no VLN-Ego trajectory folders ({ACTIONS_FILE}) found")]
        )
        return
    for folder in folders:
        try:
            trajectory = cache.get(str(folder.absolute()))
        except DataError as error:  # no action list to count the steps by: one bad record
            yield error
            continue
        try:
            instruction = _read_instruction(folder)
        except DataError as error:
            yield from _all_steps_bad(error, len(trajectory.actions))
            continue
        yield from _trajectory_episodes(trajectory, instruction, options, checker)


def _all_steps_bad(error: DataError, steps: int) -> Iterator[DataError]:
    """A trajectory's problem, then one empty `DataError` per further step: every step a bad record."""
    yield error
    yield from (DataError([]) for _ in range(steps - 1))


def _trajectory_episodes(
    trajectory: Trajectory, instruction: str, options: LoadOptions, checker: ImageChecker
) -> Iterator:
    count = len(trajectory.actions)
    missing = [step for step in range(count) if step not in trajectory.frames]
    if missing:
        shown = ", ".join(f"step_{step}" for step in missing[:5]) + (" ..." if len(missing) > 5 else "")
        message = f"missing frame(s) {shown} ({count} actions in {ACTIONS_FILE})"
        yield from _all_steps_bad(DataError([Problem(trajectory.folder, None, "images", message)]), count)
        return
    frames = tuple(trajectory.frames[step] for step in range(count))
    broken_at = None
    for step in range(count):
        location = Location(trajectory.actions_path, trajectory.action_lines[step], None)
        if options.check_images and broken_at is None:
            reason = checker.problem(frames[step])
            if reason is not None:
                broken_at = step
                yield DataError([Problem(frames[step], None, "images", reason)])
                continue
        if broken_at is not None:
            yield DataError([])  # its history holds the broken frame reported above
            continue
        yield (
            location,
            Episode(
                episode_id=f"{trajectory.trajectory_id}/step_{step}",
                instruction=instruction,
                images=frames[: step + 1],
                source=str(location),
                extra={"pose_source": trajectory.poses.source},
                **trajectory.pose_fields(step),
            ),
        )
