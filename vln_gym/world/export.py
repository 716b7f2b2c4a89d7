"""Write built-in-world episodes as an ordinary vln-gym jsonl dataset plus rendered image files.

Layout of ``out_dir``: ``episodes.jsonl`` (own format ``vln-gym/1``, written by
``vln_gym.data.write_episodes_jsonl``) and ``images/<episode id>/step_<k>.<jpg|png>``; image paths in the
jsonl are relative to ``out_dir``. One record per episode (the start view), or with ``per_step=True`` one
record per expert step (VLN-R1 / VLN-Ego style: pose, remaining expert actions and reference path at that
step, the last ``history`` frames up to it, ``trajectory_id`` and ``step_index``). Deterministic: the same
arguments write the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD
from vln_gym.world.config import WorldConfig
from vln_gym.world.episodes import generate_episodes, world_for_episode

IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG"}
JSONL_NAME = "episodes.jsonl"


def _save(frame, path: Path, image_format: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_format == "jpg":
        Image.fromarray(frame).save(path, format="JPEG", quality=95)
    else:
        Image.fromarray(frame).save(path, format="PNG")


def _step_records(
    episode: Episode,
    out: Path,
    size: tuple[int, int],
    image_format: str,
    history: int,
    turn_angle: float,
    forward_step: float,
) -> list[Episode]:
    world = world_for_episode(episode)
    actions = list(episode.expert_actions or ())
    poses = [(episode.agent_position, episode.agent_heading)]
    for position, heading, _ in world.follow(
        episode.agent_position, episode.agent_heading, actions[:-1], forward_step, turn_angle
    ):
        poses.append((position, heading))
    frames: list[str] = []
    records = []
    for k, (position, heading) in enumerate(poses):
        path = out / "images" / episode.episode_id / f"step_{k}.{image_format}"
        _save(world.render(position, heading, size), path, image_format)
        frames.append(str(path))
        remaining = [position] + [
            p for (p, _), a in zip(poses[k + 1 :], actions[k:], strict=False) if a == MOVE_FORWARD
        ]
        distance = world.geodesic_distance(position, episode.goal_position)
        records.append(
            dataclasses.replace(
                episode,
                episode_id=f"{episode.episode_id}-t{k}",
                images=tuple(frames[-history:]),
                agent_position=position,
                agent_heading=heading,
                distance_to_goal=distance,
                geodesic_distance=distance,
                reference_path=tuple(remaining),
                expert_actions=tuple(actions[k:]),
                trajectory_id=episode.episode_id,
                step_index=k,
                source=f"{episode.source}#t{k}",
            )
        )
    return records


def _replace_folder(target: Path, build: Callable[[Path], Path]) -> Path:
    """``build`` into a fresh sibling of ``target``, then swap it in; returns the jsonl path in ``target``."""
    target = target.resolve()
    fresh = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        os.chmod(fresh, target.stat().st_mode & 0o7777)  # mkdtemp's 0700 would replace the folder's mode
        written = build(fresh)
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
        try:
            os.replace(fresh, target)
        except OSError:
            os.replace(old / target.name, target)  # put the old dataset back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return target / written.name


def export_dataset(
    out_dir: str | Path,
    num_episodes: int,
    seed: int,
    *,
    per_step: bool = False,
    image_format: str = "jpg",
    size: tuple[int, int] = (224, 224),
    config: WorldConfig = WorldConfig(),  # noqa: B008 (frozen dataclass)
    history: int = 8,
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    success_distance: float | None = None,
    replace: bool = False,
) -> Path:
    """Generate ``num_episodes`` episodes from ``seed``, render images, write the jsonl; returns its path.

    ``replace``: build the dataset in a temporary sibling folder, then swap it for ``out_dir`` (whose old
    files, stale images included, are removed only once the new dataset is complete)."""
    if replace and Path(out_dir).exists():
        return _replace_folder(
            Path(out_dir),
            lambda folder: export_dataset(
                folder,
                num_episodes,
                seed,
                per_step=per_step,
                image_format=image_format,
                size=size,
                config=config,
                history=history,
                forward_step=forward_step,
                turn_angle=turn_angle,
                success_distance=success_distance,
            ),
        )
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    out = Path(out_dir).resolve()
    size = (int(size[0]), int(size[1]))
    episodes = generate_episodes(
        seed,
        num_episodes,
        config,
        forward_step=forward_step,
        turn_angle=turn_angle,
        success_distance=success_distance,
    )
    records: list[Episode] = []
    for episode in episodes:
        if per_step:
            records.extend(_step_records(episode, out, size, image_format, history, turn_angle, forward_step))
        else:
            world = world_for_episode(episode)
            path = out / "images" / episode.episode_id / f"step_0.{image_format}"
            _save(world.render(episode.agent_position, episode.agent_heading, size), path, image_format)
            records.append(dataclasses.replace(episode, images=(str(path),)))
    from vln_gym.data import write_episodes_jsonl

    return write_episodes_jsonl(records, out / JSONL_NAME, media_dir=out)
