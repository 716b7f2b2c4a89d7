"""Evaluation pictures (matplotlib, Agg) and report.md writing, from plain data (episode records, metrics).

Files are byte-identical for identical inputs: no timestamps, fixed DPI, PNG metadata without the
matplotlib version string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from vln_gym.safe_files import atomic_write_text

_PNG_METADATA = {"Software": None}
_DPI = 80

# metrics.json key -> (column title, format) for tables; rates print as percentages.
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "success_rate": ("SR", "pct"),
    "spl": ("SPL", "pct"),
    "oracle_success_rate": ("OS", "pct"),
    "navigation_error": ("NE (m)", "num"),
    "trajectory_length": ("TL (m)", "num"),
    "ndtw": ("nDTW", "pct"),
    "sdtw": ("SDTW", "pct"),
    "steps": ("steps", "num"),
    "invalid_action_rate": ("invalid", "pct"),
    "reward": ("reward", "num"),
    "episodes": ("episodes", "int"),
}


def _format(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100.0 * float(value):.1f}%"
    if kind == "int":
        return str(int(value))
    return f"{float(value):.2f}"


def metrics_table(
    rows: Mapping[str, Mapping[str, Any]], *, markdown: bool = True, columns: Sequence[str] | None = None
) -> str:
    """A table with one row per agent (``rows``: agent label -> metrics.json dict). Markdown, or plain
    aligned text for the console. ``columns``: metrics.json keys to show (default every `TABLE_COLUMNS`)."""
    keys = list(TABLE_COLUMNS) if columns is None else list(columns)
    unknown = [key for key in keys if key not in TABLE_COLUMNS]
    if unknown:
        raise ValueError(f"metrics_table: unknown column {unknown[0]!r}; known: {', '.join(TABLE_COLUMNS)}")
    header = ["agent"] + [TABLE_COLUMNS[key][0] for key in keys]
    body = [
        [label] + [_format(metrics.get(key), TABLE_COLUMNS[key][1]) for key in keys]
        for label, metrics in rows.items()
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


INTERVAL_METHOD = (
    "95% intervals: Wilson score for the success rates; mean +- 1.96 std / sqrt(n) for the rest, clipped at "
    "each metric's natural bounds (>= 0 for lengths, steps and navigation error; [0, 1] for SPL, nDTW, SDTW "
    "and the invalid-action rate; the reward is unbounded)."
)


def confidence_table(metrics: Mapping[str, Any]) -> str:
    """Markdown table of mean, std and 95% CI for each metric of one metrics.json dict, and the method."""
    lines = ["| metric | mean | std | 95% CI |", "|---|---|---|---|"]
    for key in TABLE_COLUMNS:
        if key == "episodes" or key not in metrics.get("std", {}):
            continue
        low, high = metrics["ci95"][key]
        lines.append(f"| {key} | {metrics[key]:.4f} | {metrics['std'][key]:.4f} | [{low:.4f}, {high:.4f}] |")
    return "\n".join([*lines, "", INTERVAL_METHOD])


DECISION_ROWS = (
    ("first_action_accuracy", "first action = expert's"),
    ("sequence_accuracy", "whole answer = expert's next actions"),
    ("time_decayed_match", "time-decayed match (VLN-R1 TDR, gamma 0.8)"),
    ("invalid_answer_rate", "answers that did not parse"),
    ("progress", "metres gained per decision"),
)
METRICS_BY_MODE = (
    "Which metrics mean what: in record (dataset) mode each record is one decision from a recorded frame, "
    "so an episode rarely reaches a goal metres away and SR / SPL / NE mostly say how far one step gets; "
    "judge a policy there by the decision metrics. In trajectory-replay and built-in-world modes an episode "
    "runs to STOP, and the episode metrics (VLN-CE definitions) are the ones to read; the decision metrics "
    "still show how often the policy agrees with the expert (in the built-in world the expert is the "
    "shortest path)."
)


def decision_table(decision: Mapping[str, Any]) -> str:
    """Markdown table of the decision metrics (``metrics.json["decision"]``) with their 95% intervals."""
    lines = [
        f"{decision['decisions']} decisions, {decision['decisions_with_expert']} with a known expert action.",
        "",
        "| metric | meaning | mean | 95% CI |",
        "|---|---|---|---|",
    ]
    for key, meaning in DECISION_ROWS:
        low, high = decision["ci95"][key]
        lines.append(f"| {key} | {meaning} | {decision[key]:.4f} | [{low:.4f}, {high:.4f}] |")
    method = (
        "95% intervals: Wilson score for the accuracies and the invalid-answer rate; "
        "mean +- 1.96 std / sqrt(n) for the time-decayed match (clipped to [0, 1]) and progress (unbounded)."
    )
    return "\n".join([*lines, "", method, "", METRICS_BY_MODE])


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, metadata=_PNG_METADATA)
    plt.close(figure)
    return path


def _xz(points: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(points, dtype=float).reshape(-1, 3)
    return array[:, 0], array[:, 2]


def _panels(count: int, size: tuple[float, float], columns: int = 3):
    """A figure of ``count`` equal panels, ``columns`` wide (``size`` inches each); spare panels hidden."""
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, axes


def plot_trajectories(records: Sequence[Mapping[str, Any]], path: str | Path, *, max_panels: int = 6) -> Path:
    """Top-down x-z plots of the first ``max_panels`` episodes: agent path, reference path, start, goal
    and success circle. Axes follow Habitat: x to the right, -z up (heading 0 points up)."""
    chosen = list(records[:max_panels])
    if not chosen:
        raise ValueError("plot_trajectories: no episodes to plot")
    figure, axes = _panels(len(chosen), (4.0, 4.0))
    for axis, record in zip(axes.flat, chosen, strict=False):
        if record.get("reference_path"):
            rx, rz = _xz(record["reference_path"])
            axis.plot(rx, rz, "--", color="tab:green", linewidth=2, label="reference")
        px, pz = _xz(record["path"])
        axis.plot(px, pz, "-", color="tab:blue", linewidth=1.5, label="agent")
        axis.plot(px[:1], pz[:1], "o", color="tab:blue", label="start")
        gx, gz = _xz([record["goal_position"]])
        axis.plot(gx, gz, "*", color="tab:red", markersize=14, label="goal")
        radius = record.get("success_distance")
        if radius:
            axis.add_patch(plt.Circle((gx[0], gz[0]), radius, color="tab:red", fill=False, linestyle=":"))
        metrics = record.get("metrics", {})
        verdict = "success" if metrics.get("success") else "fail"
        axis.set_title(
            f"{record['id']}\n{verdict}, NE {metrics.get('navigation_error', float('nan')):.2f} m", fontsize=8
        )
        axis.set_aspect("equal", adjustable="datalim")
        axis.invert_yaxis()
        axis.set_xlabel("x (m)")
        axis.set_ylabel("z (m)")
        axis.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_frame_grid(
    frames: Sequence[np.ndarray],
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    max_frames: int = 12,
) -> Path:
    """Grid of first-person frames (``uint8 [H, W, 3]``), at most ``max_frames`` evenly spaced along the
    sequence, each titled (e.g. with the step and action)."""
    if not len(frames):
        raise ValueError("plot_frame_grid: no frames")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    columns = min(4, len(picks))
    rows = math.ceil(len(picks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.0 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, picks, strict=False):
        axis.imshow(np.asarray(frames[index], dtype=np.uint8))
        axis.set_title(titles[index] if titles is not None else f"step {index}", fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_maps(
    maps: Sequence[tuple[np.ndarray, tuple[float, float, float, float]]],
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
) -> Path:
    """Top-down maps (``(image, (x left, x right, z bottom, z top))``) on equal panels with metric axes
    and a 1 m scale bar."""
    if not maps:
        raise ValueError("plot_maps: no maps")
    figure, axes = _panels(len(maps), (3.6, 3.9))
    for k, (axis, (image, extent)) in enumerate(zip(axes.flat, maps, strict=False)):
        axis.imshow(np.asarray(image, dtype=np.uint8), extent=extent, interpolation="nearest")
        left, _, bottom, top = extent
        bar_z = bottom - 0.06 * (bottom - top)
        axis.plot([left + 0.3, left + 1.3], [bar_z, bar_z], color="black", linewidth=3)
        axis.text(left + 0.8, bar_z - 0.03 * (bottom - top), "1 m", ha="center", va="bottom", fontsize=7)
        axis.set_xlabel("x (m)", fontsize=8)
        axis.set_ylabel("z (m)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.set_title(titles[k] if titles is not None else f"episode {k}", fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_histogram(
    values: Sequence[float], path: str | Path, *, xlabel: str, title: str = "", line: float | None = None
) -> Path:
    """Histogram of ``values``; ``line`` draws a vertical marker (e.g. the success distance)."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    data = np.asarray(values, dtype=float)
    axis.hist(data, bins=min(20, max(5, len(data))), color="tab:blue", edgecolor="white")
    if line is not None:
        axis.axvline(line, color="tab:red", linestyle="--", label=f"{line:g}")
        axis.legend(fontsize=8)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("episodes")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts are whole episodes
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, Path(path))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Objects of a jsonl file (blank lines skipped); a bad line raises naming file and line."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
    return rows


def plot_learning_curve(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    keys: Sequence[str],
    x_key: str = "iteration",
    titles: Mapping[str, str] | None = None,
) -> Path:
    """One panel per key in ``keys`` present in the training log rows (e.g. trainer metrics.jsonl),
    titled ``titles[key]`` (default: the key)."""

    def has_value(row: Mapping[str, Any], key: str) -> bool:
        value = row.get(key)
        return isinstance(value, int | float) and math.isfinite(value)

    present = [key for key in keys if any(has_value(row, key) for row in rows)]
    if not present:
        raise ValueError(f"plot_learning_curve: no finite value of {', '.join(keys)} in the log")
    figure, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
    for axis, key in zip(axes.flat, present, strict=True):
        points = [(row.get(x_key, i), row[key]) for i, row in enumerate(rows) if has_value(row, key)]
        xs, ys = zip(*points, strict=True)
        axis.plot(xs, ys, "o-", color="tab:blue", markersize=2, alpha=0.4, linewidth=0.8)
        window = max(1, len(ys) // 10)
        if window > 1:  # running mean over the last `window` iterations
            cumulative = np.cumsum(np.insert(np.asarray(ys, dtype=float), 0, 0.0))
            smooth = (cumulative[window:] - cumulative[:-window]) / window
            axis.plot(
                xs[window - 1 :], smooth, "-", color="tab:red", linewidth=1.8, label=f"mean of {window}"
            )
            axis.legend(fontsize=7)
        axis.set_xlabel(x_key)
        axis.set_title((titles or {}).get(key, key), fontsize=9)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_success_curve(
    points: Sequence[tuple[float, float, float, float]],
    path: str | Path,
    *,
    references: Mapping[str, float] | None = None,
    title: str = "",
    xlabel: str = "iteration",
) -> Path:
    """Success rate (in %) at each ``(x, rate, ci_low, ci_high)`` with its 95% interval as error bars;
    ``references`` (label -> rate) are dashed horizontal lines (e.g. the random agent)."""
    if not points:
        raise ValueError("plot_success_curve: no points")
    xs, rates, lows, highs = (np.asarray(column, dtype=float) for column in zip(*points, strict=True))
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    errors = 100 * np.stack([np.maximum(rates - lows, 0.0), np.maximum(highs - rates, 0.0)])
    axis.errorbar(xs, 100 * rates, yerr=errors, fmt="o-", color="tab:blue", capsize=3, label="policy")
    styles = ("tab:gray", "tab:orange", "tab:green", "tab:purple")
    for (label, rate), colour in zip((references or {}).items(), styles * 4, strict=False):
        axis.axhline(
            100 * rate, color=colour, linestyle="--", linewidth=1, label=f"{label} ({100 * rate:.0f}%)"
        )
    axis.set_xlabel(xlabel)
    axis.set_ylabel("success rate (%)")
    axis.set_ylim(bottom=0)
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _save(figure, Path(path))


def write_markdown(path: str | Path, sections: Sequence[tuple[str, str]], *, title: str) -> Path:
    """report.md from (heading, markdown body) sections."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    out = Path(path)
    atomic_write_text(out, "\n".join(parts))
    return out
