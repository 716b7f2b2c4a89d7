"""Privileged fields of a record: pose, goal, distance, reference path, expert actions, ids.

Pose fields (``agent_position``, ``agent_heading``, ``goal_position``) come from the record. When a
record has none of them and its current (last) image is ``step_N.*`` in a VLN-Ego trajectory folder
with ``action_list.json`` (e.g. the LLaMA-Factory export of VLN-Ego, after ``path_remap``), the pose is
rebuilt from that trajectory (see `vln_gym.data.vlnego`) and ``extra["pose_source"]`` says
``"vln-ego-actions"``. Otherwise missing pose fields are an error naming each field; with
``require_pose=False`` they become NaN and ``extra["pose_source"] = "missing"`` (text-only use).
``distance_to_goal`` is Euclidean from the pose when the record does not give it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import (
    POSE_FIELDS,
    LoadOptions,
    as_actions,
    as_heading,
    as_int,
    as_nonnegative,
    as_path,
    as_position,
    as_text,
)
from vln_gym.data.problems import FieldError, RecordProblems
from vln_gym.geometry import distance

NAN3 = (math.nan, math.nan, math.nan)


def _step_index(value: Any, name: str) -> int:
    step = as_int(value, name)
    if step < 0:
        raise FieldError(name, f"is {step}; must be >= 0")
    return step


CONVERTERS = {
    "distance_to_goal": as_nonnegative,
    "reference_path": as_path,
    "expert_actions": as_actions,
    "geodesic_distance": as_nonnegative,
    "scene_id": as_text,
    "success_distance": as_nonnegative,
    "trajectory_id": as_text,
    "step_index": _step_index,
}


def _pose_from_record(record: Mapping, ctx: ReadContext, report: RecordProblems) -> dict:
    """The pose fields of a record that has at least one of them, each problem reported."""
    position, heading, goal = ctx.options.pose_columns
    values: dict[str, Any] = {"pose_source": "record"}
    for column in (position, heading, goal):
        if record.get(column) is None:
            report.add(column, f"{'null' if column in record else 'missing'} (required privileged field)")
    if record.get(position) is not None:
        values["agent_position"] = report.check(as_position, record[position], position)
    if record.get(heading) is not None:
        values["agent_heading"] = report.check(as_heading, record[heading], heading, ctx.options.heading_unit)
    if record.get(goal) is not None:
        values["goal_position"] = report.check(as_position, record[goal], goal)
    return values


def _quick_pose(record: Mapping, options: LoadOptions) -> dict | None:
    """The pose fields of the common record, all three present and good, in one go; else ``None``
    (`_pose_from_record` then reads each field and reports every problem, or the pose comes from
    elsewhere)."""
    position, heading, goal = options.pose_columns
    if position not in record:  # no pose in the record (a VLN-Ego export): no exception to pay for
        return None
    try:
        return {
            "pose_source": "record",
            "agent_position": as_position(record[position], position),
            "agent_heading": as_heading(record[heading], heading, options.heading_unit),
            "goal_position": as_position(record[goal], goal),
        }
    except (KeyError, FieldError):
        return None


def _pose_without_fields(
    images: tuple[str, ...] | None, ctx: ReadContext, report: RecordProblems
) -> dict | None:
    """Pose rebuilt from a VLN-Ego trajectory, NaN pose when not required, else ``None`` (problems added;
    none when the images are unusable: their problem is reported and the pose depends on them)."""
    column = ctx.options.column
    if images is None and ctx.options.require_pose:
        return None
    if images:
        try:
            found = ctx.trajectories.for_image(images[-1], column("images"))
        except FieldError as error:
            report.add(error.field, error.message)
            return None
        if found is not None:
            trajectory, step = found
            return {**trajectory.pose_fields(step), "pose_source": trajectory.poses.source}
    if not ctx.options.require_pose:
        return {
            "agent_position": NAN3,
            "agent_heading": math.nan,
            "goal_position": NAN3,
            "distance_to_goal": math.nan,
            "pose_source": "missing",
        }
    for name in POSE_FIELDS:
        report.add(
            column(name),
            "missing (required privileged field; the current image is not in a VLN-Ego trajectory folder "
            "with action_list.json to rebuild it from)",
        )
    return None


def read_privileged(
    record: Mapping, images: tuple[str, ...] | None, ctx: ReadContext, report: RecordProblems
) -> dict:
    """Episode keyword arguments of the privileged fields, plus ``pose_source``; problems go to ``report``."""
    values = _quick_pose(record, ctx.options)  # the common case: all three pose fields present and good
    if values is None:
        position, heading, goal = ctx.options.pose_columns
        # A null pose field is an absent one (Parquet and datasets fill a row's missing keys with null).
        if any(record.get(column) is not None for column in (position, heading, goal)):
            values = _pose_from_record(record, ctx, report)
        else:
            values = _pose_without_fields(images, ctx, report) or {}
    for name, column in ctx.options.optional_columns:
        value = record.get(column)
        if value is not None:
            try:
                values[name] = CONVERTERS[name](value, column)
            except FieldError as error:
                report.add(error.field, error.message)
                values[name] = None
    if values.get("distance_to_goal") is None:
        start, goal = values.get("agent_position"), values.get("goal_position")
        if start and goal:
            values["distance_to_goal"] = distance(start, goal)
    return values
