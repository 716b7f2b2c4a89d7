"""`Episode`: the one in-memory record type. Every reader converts into it at load time."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Episode:
    """One VLN record = one Gymnasium episode.

    Units follow the Habitat convention (DESIGN.md): positions ``[x, y, z]`` in metres with y up,
    heading in radians about +y, heading 0 faces -z, TURN_LEFT increases heading.
    ``images`` are resolved file paths, decoded lazily (see ``vln_gym.images``), oldest first,
    the current view last. ``source`` says where the record came from (``path:line``).
    """

    episode_id: str
    instruction: str
    images: tuple[str, ...]
    agent_position: Vec3
    agent_heading: float
    goal_position: Vec3
    distance_to_goal: float
    system_prompt: str | None = None
    prompt: str | None = None
    expert_response: str | None = None
    trajectory_id: str | None = None
    step_index: int | None = None
    reference_path: tuple[Vec3, ...] | None = None
    expert_actions: tuple[int, ...] | None = None
    geodesic_distance: float | None = None
    scene_id: str | None = None
    success_distance: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_images(self) -> int:
        return len(self.images)


_FIELDS = dataclasses.fields(Episode)
_DEFAULTS = {f.name: f.default for f in _FIELDS if f.default is not dataclasses.MISSING}
_REQUIRED = frozenset(f.name for f in _FIELDS if f.name not in _DEFAULTS)  # ``extra`` too
_NAMES = frozenset(f.name for f in _FIELDS)


def new_episode(values: dict[str, Any]) -> Episode:
    """``Episode(**values)`` for ``values`` that name every field without a default and ``extra``: the
    same object without the frozen dataclass ``__init__``'s one ``object.__setattr__`` per field (about
    2 us a record, for the loaders; ``Episode`` has no ``__post_init__`` to skip)."""
    if not (_REQUIRED.issubset(values) and _NAMES.issuperset(values)):
        missing, unknown = sorted(_REQUIRED - values.keys()), sorted(values.keys() - _NAMES)
        raise TypeError(f"new_episode: missing fields {missing}, unknown fields {unknown}")
    return episode_of_fields(values)


def episode_of_fields(values: dict[str, Any]) -> Episode:
    """`new_episode` without its check of the names: for ``values`` built from known names only (NaVILA's
    `Poses.fields` and its own; the tests rebuild such Episodes by the dataclass)."""
    episode = object.__new__(Episode)
    state = episode.__dict__
    state.update(_DEFAULTS)
    state.update(values)
    return episode
