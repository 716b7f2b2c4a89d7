"""Where VLNEnv's frames come from: the record's own images, a trajectory replay, or the built-in world.

Frames from files are decoded lazily through ``vln_gym.images.load_frame`` (shared LRU cache); nothing
else here touches the file system. ``FrameHistory`` turns the frames seen so far into the fixed-shape
``frames`` / ``frame_mask`` pair of the observation (valid frames last, zero padding first).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vln_gym.episode import Episode
from vln_gym.geometry import wrap_angle
from vln_gym.images import load_frame

VIEW_MODES = ("record", "trajectory", "world")
_UINT8 = np.dtype(np.uint8)


class FrameHistory:
    """The last ``length`` frames (oldest first), returned as fresh arrays on every call."""

    def __init__(self, length: int, image_size: tuple[int, int]) -> None:
        if length < 1:
            raise ValueError(f"history_frames must be >= 1, got {length}")
        self.length = length
        self.shape = (length, int(image_size[0]), int(image_size[1]), 3)
        self._frame_shape = self.shape[1:]
        self._frames: deque[np.ndarray] = deque(maxlen=length)
        # frame_mask for each number of padded slots, copied out by `observation`
        self._masks = tuple((np.arange(length) >= pad).astype(np.int8) for pad in range(length + 1))

    def reset(self, frames: Sequence[np.ndarray]) -> None:
        self._frames.clear()
        for frame in frames[-self.length :]:
            self.push(frame)

    def push(self, frame: np.ndarray) -> None:
        if frame.shape != self._frame_shape or frame.dtype != _UINT8:
            raise ValueError(f"frame must be uint8 {self._frame_shape}, got {frame.dtype} {frame.shape}")
        self._frames.append(frame)

    def frames(self) -> list[np.ndarray]:
        """The frames held now (oldest first; the arrays themselves, do not modify them)."""
        return list(self._frames)

    def observation(self) -> tuple[np.ndarray, np.ndarray]:
        """``(frames uint8 [length, H, W, 3], frame_mask int8 [length])``: new arrays, safe to keep."""
        frames = np.empty(self.shape, dtype=np.uint8)
        pad = self.length - len(self._frames)
        if pad:
            frames[:pad] = 0
        for slot, frame in enumerate(self._frames, start=pad):
            frames[slot] = frame
        return frames, self._masks[pad].copy()


def record_frames(episode: Episode, history: int, image_size: tuple[int, int]) -> list[np.ndarray]:
    """The record's last ``history`` images, decoded (cached) at ``image_size``."""
    return [load_frame(path, image_size) for path in episode.images[-history:]]


@dataclass(frozen=True)
class ReplayMatch:
    """The recorded frame chosen for a pose: which record holds it and how far its pose is."""

    episode_index: int
    position_error: float  # metres, on the ground plane
    heading_error: float  # radians, absolute
    view_error: float  # position_error + heading_weight * heading_error (metres)


class TrajectoryReplay:
    """Records sharing a ``trajectory_id`` form a replay world: each pose sees the nearest recorded frame.

    The distance between the agent's pose and a record's pose is
    ``|dx, dz| + heading_weight * |wrapped heading difference|`` (``heading_weight`` in metres per radian;
    1.0 makes a 15-degree turn cost about as much as one 0.25 m step).
    """

    def __init__(self, episodes: Sequence[Episode], heading_weight: float = 1.0) -> None:
        self.heading_weight = float(heading_weight)
        groups: dict[str, list[int]] = {}
        for index, episode in enumerate(episodes):
            if episode.trajectory_id is None:
                raise ValueError(
                    f"{episode.source or episode.episode_id}: trajectory_id: views='trajectory' needs every "
                    "record to name its trajectory"
                )
            if not episode.images:
                raise ValueError(f"{episode.source or episode.episode_id}: images: the record has no frame")
            groups.setdefault(episode.trajectory_id, []).append(index)
        self._members = {key: np.asarray(members, dtype=np.int64) for key, members in groups.items()}
        self._poses = {
            key: np.asarray(
                [
                    (episodes[i].agent_position[0], episodes[i].agent_position[2], episodes[i].agent_heading)
                    for i in members
                ],
                dtype=np.float64,
            )
            for key, members in groups.items()
        }

    def members(self, trajectory_id: str) -> np.ndarray:
        """Episode indices of the records in ``trajectory_id``."""
        return self._members[trajectory_id]

    def nearest(self, trajectory_id: str, position: Sequence[float], heading: float) -> ReplayMatch:
        """The record of ``trajectory_id`` nearest to ``(position, heading)`` (the first on ties)."""
        poses = self._poses[trajectory_id]
        position_error = np.hypot(poses[:, 0] - position[0], poses[:, 1] - position[2])
        heading_error = np.abs((heading - poses[:, 2] + math.pi) % (2.0 * math.pi) - math.pi)
        score = position_error + self.heading_weight * heading_error
        best = int(np.argmin(score))
        return ReplayMatch(
            episode_index=int(self._members[trajectory_id][best]),
            position_error=float(position_error[best]),
            heading_error=float(abs(wrap_angle(heading - poses[best, 2]))),
            view_error=float(score[best]),
        )
