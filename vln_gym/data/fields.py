"""Load options, the field map, and field conversion: numbers, positions, headings, paths, actions.

Every converter takes the *file's* column name (what the user sees in the file) and raises `FieldError`
with a precise message; readers attach path and line. Units are converted here, at load time:
2-D ``[x, z]`` positions are lifted to ``[x, 0, z]``, headings in degrees become radians.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vln_gym.arguments import is_finite_real
from vln_gym.data.problems import FieldError
from vln_gym.geometry import ACTION_NAMES, Vec3, lift
from vln_gym.paths import absolute_path

FORMATS = ("auto", "vlm-r1", "sharegpt", "alpaca", "vln-ego", "streamvln", "navila", "vln-gym")
HEADING_UNITS = ("rad", "deg")
ON_ERROR = ("raise", "skip")

# Privileged fields of a record (read by `vln_gym.data.privileged`): the pose, then the optional ones.
POSE_FIELDS = ("agent_position", "agent_heading", "goal_position")
OPTIONAL_FIELDS = (
    "distance_to_goal",
    "reference_path",
    "expert_actions",
    "geodesic_distance",
    "scene_id",
    "success_distance",
    "trajectory_id",
    "step_index",
)
PRIVILEGED_FIELDS = POSE_FIELDS + OPTIONAL_FIELDS

# Our field names that a field map may rename (LLaMA-Factory ``dataset_info`` style: ours -> file's column).
MAPPABLE_FIELDS = (
    "id",
    "instruction",
    "images",
    "conversations",
    "messages",
    "system",
    *("prompt", "query", "response", "history"),  # alpaca columns
    *PRIVILEGED_FIELDS,
)
# LLaMA-Factory's alpaca columns (its DatasetAttr defaults): what an alpaca file calls prompt, query, response
ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
# LLaMA-Factory sharegpt tags (dataset_info ``tags``) a load may set.
CHAT_TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "system_tag",
    "observation_tag",
    "function_tag",
)


@dataclass(frozen=True)
class LoadOptions:
    """Every reader option of `load_episodes` (see its docstring), validated once."""

    format: str = "auto"
    field_map: tuple[tuple[str, str], ...] = ()
    media_dir: str | None = None
    path_remap: tuple[tuple[str, str], ...] = ()
    allow_outside_media: bool = False
    heading_unit: str = "rad"
    forward_step: float = 0.25
    turn_angle: float = 15.0
    check_images: bool = False
    require_pose: bool = True
    pose_source: tuple[str, ...] = ()
    chat_tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def create(
        cls,
        *,
        format: str = "auto",
        field_map: Mapping[str, str] | None = None,
        media_dir: str | Path | None = None,
        path_remap: Mapping[str, str] | None = None,
        allow_outside_media: bool = False,
        heading_unit: str = "rad",
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        check_images: bool = False,
        require_pose: bool = True,
        pose_source: str | Path | Sequence[str | Path] | None = None,
        chat_tags: Mapping[str, str] | None = None,
    ) -> LoadOptions:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
        if heading_unit not in HEADING_UNITS:
            raise ValueError(f"heading_unit must be 'rad' or 'deg'; got {heading_unit!r}")
        if not (is_finite_real(forward_step) and forward_step > 0):
            raise ValueError(f"forward_step must be a positive number of metres; got {forward_step!r}")
        if not (is_finite_real(turn_angle) and turn_angle > 0):
            raise ValueError(f"turn_angle must be a positive number of degrees; got {turn_angle!r}")
        flags = {"allow_outside_media": allow_outside_media, "check_images": check_images}
        _check_flags({**flags, "require_pose": require_pose})
        if media_dir is not None and not isinstance(media_dir, str | os.PathLike):
            raise ValueError(f"media_dir must be a folder path; got {_describe(media_dir)}")
        if media_dir is not None and not os.path.isdir(media_dir):
            reason = "is not a folder" if os.path.exists(media_dir) else "does not exist"
            raise ValueError(
                f"media_dir {os.fspath(media_dir)}: {reason} (relative image paths resolve there)"
            )
        field_map = _text_mapping("field_map", field_map, "OURS", "THEIRS")
        path_remap = _text_mapping("path_remap", path_remap, "OLD", "NEW", paths=True)
        chat_tags = _text_mapping("chat_tags", chat_tags, "TAG", "TEXT")
        unknown = sorted(set(field_map) - set(MAPPABLE_FIELDS))
        if unknown:
            raise ValueError(f"field_map: unknown field(s) {unknown}; known: {', '.join(MAPPABLE_FIELDS)}")
        unknown_tags = sorted(set(chat_tags) - set(CHAT_TAGS))
        if unknown_tags:
            raise ValueError(f"chat_tags: unknown tag(s) {unknown_tags}; known: {', '.join(CHAT_TAGS)}")
        remap = sorted((old, absolute_path(new)) for old, new in path_remap.items())
        return cls(
            format=format,
            field_map=tuple(sorted(field_map.items())),
            media_dir=None if media_dir is None else absolute_path(media_dir),
            # Longest prefix first, so that a more specific remap wins.
            path_remap=tuple(sorted(remap, key=lambda item: -len(item[0]))),
            allow_outside_media=allow_outside_media,
            heading_unit=heading_unit,
            forward_step=float(forward_step),
            turn_angle=float(turn_angle),
            check_images=check_images,
            require_pose=require_pose,
            pose_source=_paths(pose_source),
            chat_tags=tuple(sorted(chat_tags.items())),
        )

    @cached_property
    def columns(self) -> dict[str, str]:
        return dict(self.field_map)

    @cached_property
    def names(self) -> dict[str, str]:
        """The file's column name of every mappable field (``column`` as one dict, for the readers' loops)."""
        return {name: self.column(name) for name in MAPPABLE_FIELDS}

    @cached_property
    def turn_columns(self) -> tuple[str, ...]:
        """Where a chat record's turns are: the mapped column(s) when the field map names one (no falling
        back to a default column then), else ``conversations`` or ``messages``."""
        mapped = tuple(self.columns[name] for name in ("conversations", "messages") if name in self.columns)
        return mapped or (self.column("conversations"), self.column("messages"))

    @cached_property
    def pose_columns(self) -> tuple[str, str, str]:
        """The file's column names of `POSE_FIELDS` (position, heading, goal)."""
        position, heading, goal = (self.column(name) for name in POSE_FIELDS)
        return position, heading, goal

    @cached_property
    def optional_columns(self) -> tuple[tuple[str, str], ...]:
        """``(field, the file's column name)`` of each of `OPTIONAL_FIELDS`, in order."""
        return tuple((name, self.column(name)) for name in OPTIONAL_FIELDS)

    @cached_property
    def privileged_columns(self) -> frozenset[str]:
        """The file's column names of the privileged fields."""
        return frozenset(self.column(name) for name in PRIVILEGED_FIELDS)

    def column(self, name: str, default: str | None = None) -> str:
        """The file's column name for our field ``name``."""
        return self.columns.get(name, default if default is not None else name)


INF = math.inf
MAX_RADIANS = 2.0 * math.pi + 1e-9
ONLY_INT = frozenset({int})  # exactly int: not bool, not 1.0 (both compare equal to an action id)
ACTION_IDS = frozenset(range(len(ACTION_NAMES)))


def _check_flags(flags: Mapping[str, Any]) -> None:
    """ValueError naming the first flag that is not a bool (``"false"`` is truthy: never guess)."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name} must be True or False; got {_describe(value)}")


def _text_mapping(name: str, value: Any, key: str, item: str, paths: bool = False) -> dict[str, str]:
    """``value`` (a mapping of strings to strings, or of paths with ``paths``; or ``None``) as a dict of
    strings; ValueError otherwise."""
    if value is None:
        return {}
    kinds = str | os.PathLike if paths else str
    if not isinstance(value, Mapping) or not all(
        isinstance(k, kinds) and isinstance(v, kinds) for k, v in value.items()
    ):
        both = "both strings or paths" if paths else "both strings"
        raise ValueError(f"{name} must be a mapping of {key} to {item}, {both}; got {_describe(value)}")
    return {os.fspath(k): os.fspath(v) for k, v in value.items()}


def _paths(value: str | Path | Sequence[str | Path] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str | os.PathLike) else value
    if not isinstance(values, Sequence) or isinstance(values, bytes):
        values = [values]  # named below as the value that is not a path
    for path in values:
        if not isinstance(path, str | os.PathLike):
            raise ValueError(f"pose_source must be a file path or a list of them; got {_describe(path)}")
    return tuple(absolute_path(path) for path in values)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def as_text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    """A string (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {_type_name(value)} {_describe(value)}")
    if not allow_empty and not value.strip():
        raise FieldError(name, "is empty")
    return value


def as_number(value: Any, name: str) -> float:
    """A finite number (not a boolean, not a string)."""
    if type(value) is float and -math.inf < value < math.inf:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, f"expected a number, got {_type_name(value)} {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise FieldError(name, "is an integer too large for a float") from None
    if not math.isfinite(number):
        raise FieldError(name, f"is {value!r}; must be a finite number")
    return number


def as_nonnegative(value: Any, name: str) -> float:
    number = as_number(value, name)
    if number < 0:
        raise FieldError(name, f"is {number!r}; must be >= 0")
    return number


def as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"expected an integer, got {_type_name(value)} {_describe(value)}")
    return value


def as_position(value: Any, name: str) -> Vec3:
    """``[x, z]`` or ``[x, y, z]`` finite numbers in metres -> ``(x, y, z)`` (2-D lifted at y = 0)."""
    if type(value) is list and len(value) == 3:  # the common case, checked in one go
        x, y, z = value
        if type(x) is float and type(y) is float and type(z) is float and -INF < x + y + z < INF:
            return (x, y, z)
    if not isinstance(value, list | tuple):
        raise FieldError(
            name,
            f"expected a list of 2 ([x, z]) or 3 ([x, y, z]) numbers, got {_type_name(value)} "
            f"{_describe(value)}",
        )
    if len(value) not in (2, 3):
        raise FieldError(name, f"expected 2 ([x, z]) or 3 ([x, y, z]) coordinates, got {len(value)}")
    for index, coordinate in enumerate(value):
        if isinstance(coordinate, bool) or not isinstance(coordinate, int | float):
            raise FieldError(
                name,
                f"coordinate {index} must be a number, got {_type_name(coordinate)} {_describe(coordinate)}",
            )
        try:
            finite = math.isfinite(coordinate)
        except OverflowError:  # an integer of hundreds of digits
            raise FieldError(name, f"coordinate {index} is an integer too large for a float") from None
        if not finite:
            raise FieldError(name, f"coordinate {index} is {coordinate!r}; must be finite")
    return lift(value)


def as_heading(value: Any, name: str, unit: str) -> float:
    """Heading in ``unit`` ('rad': |h| <= 2 pi, 'deg': |h| <= 360) -> radians."""
    if unit == "rad" and type(value) is float and -MAX_RADIANS <= value <= MAX_RADIANS:
        return value
    number = as_number(value, name)
    if unit == "deg":
        if abs(number) > 360.0:
            raise FieldError(name, f"is {number!r} degrees; must be within [-360, 360]")
        return math.radians(number)
    if abs(number) > MAX_RADIANS:
        hint = " (degrees? pass heading_unit='deg')" if abs(number) <= 360.0 else ""
        raise FieldError(name, f"is {number!r} radians; must be within [-2*pi, 2*pi]{hint}")
    return number


def as_path(value: Any, name: str) -> tuple[Vec3, ...]:
    """A non-empty list of positions."""
    if not isinstance(value, list | tuple) or not value:
        raise FieldError(name, f"expected a non-empty list of positions, got {_describe(value)}")
    return tuple(as_position(point, f"{name}[{index}]") for index, point in enumerate(value))


def as_actions(value: Any, name: str) -> tuple[int, ...]:
    """A list of Habitat action ids 0..3."""
    if type(value) is list and ONLY_INT.issuperset(map(type, value)) and ACTION_IDS.issuperset(value):
        return tuple(value)
    if not isinstance(value, list | tuple):
        raise FieldError(
            name, f"expected a list of action ids 0-3, got {_type_name(value)} {_describe(value)}"
        )
    actions = []
    for index, action in enumerate(value):
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < len(ACTION_NAMES):
            raise FieldError(
                f"{name}[{index}]", f"expected an action id 0-3 ({', '.join(ACTION_NAMES)}), got {action!r}"
            )
        actions.append(action)
    return tuple(actions)
