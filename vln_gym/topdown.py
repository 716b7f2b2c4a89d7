"""Top-down picture of a dataset-mode episode (no floor plan known): path, reference, goal, success circle.

Image axes follow the Habitat ground plane seen from above: +x to the right, +z down, so heading 0
(facing -z) points up. The view is fitted to everything drawn plus a margin, with equal scale on both axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vln_gym.geometry import forward_vector

BACKGROUND = (246, 244, 238)
GRID = (222, 219, 210)
# Overlay palette, also used by the floor-plan map (vln_gym.world.topdown).
REFERENCE = (60, 170, 80)
PATH = (40, 90, 220)
GOAL = (220, 40, 40)
SUCCESS = (240, 150, 150)
START = (90, 90, 90)
AGENT = (20, 20, 120)


def _bounds(points: Sequence[Sequence[float]], radius: float) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in points]
    zs = [float(p[2]) for p in points]
    return min(xs) - radius, max(xs) + radius, min(zs) - radius, max(zs) + radius


def draw_top_down(
    path: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]] = (),
    goal: Sequence[float] | None = None,
    success_distance: float | None = None,
    heading: float | None = None,
    size: tuple[int, int] = (256, 256),
    margin: float = 0.5,
) -> np.ndarray:
    """RGB uint8 ``[height, width, 3]`` map of ``path`` (blue), ``reference`` (green), ``goal`` (red dot)
    with its success circle, the start (grey) and the agent's last pose (arrow along ``heading``)."""
    height, width = int(size[0]), int(size[1])
    points = [*path, *reference] + ([goal] if goal is not None else [])
    if not points:
        raise ValueError("draw_top_down needs at least one point (path, reference or goal)")
    circle = float(success_distance) if goal is not None and success_distance else 0.0
    x0, x1, z0, z1 = _bounds(points, margin)
    if goal is not None:
        gx0, gx1, gz0, gz1 = _bounds([goal], circle + margin)
        x0, x1, z0, z1 = min(x0, gx0), max(x1, gx1), min(z0, gz0), max(z1, gz1)
    scale = min((width - 1) / max(x1 - x0, 1e-6), (height - 1) / max(z1 - z0, 1e-6))
    # Centre the fitted box in the picture.
    off_x = (width - 1 - scale * (x1 - x0)) / 2.0 - scale * x0
    off_z = (height - 1 - scale * (z1 - z0)) / 2.0 - scale * z0

    def pixel(p: Sequence[float]) -> tuple[float, float]:
        return off_x + scale * float(p[0]), off_z + scale * float(p[2])

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for gx in range(math.floor(x0), math.ceil(x1) + 1):  # 1 m grid
        u = off_x + scale * gx
        draw.line([(u, 0), (u, height - 1)], fill=GRID)
    for gz in range(math.floor(z0), math.ceil(z1) + 1):
        v = off_z + scale * gz
        draw.line([(0, v), (width - 1, v)], fill=GRID)
    line_width = max(2, round(min(width, height) / 128))
    if goal is not None:
        gu, gv = pixel(goal)
        if circle > 0:
            r = circle * scale
            draw.ellipse([gu - r, gv - r, gu + r, gv + r], outline=SUCCESS, width=line_width)
    if len(reference) >= 2:
        draw.line([pixel(p) for p in reference], fill=REFERENCE, width=line_width)
    if len(path) >= 2:
        draw.line([pixel(p) for p in path], fill=PATH, width=line_width)
    dot = 2 * line_width
    if path:
        su, sv = pixel(path[0])
        draw.ellipse([su - dot, sv - dot, su + dot, sv + dot], fill=START)
    if goal is not None:
        draw.ellipse([gu - dot, gv - dot, gu + dot, gv + dot], fill=GOAL)
    if path and heading is not None:
        au, av = pixel(path[-1])
        dx, dz = forward_vector(heading)
        tip = (au + 3 * dot * dx, av + 3 * dot * dz)
        draw.line([(au, av), tip], fill=AGENT, width=line_width)
        draw.ellipse([au - dot, av - dot, au + dot, av + dot], fill=AGENT)
    return np.asarray(image, dtype=np.uint8)
