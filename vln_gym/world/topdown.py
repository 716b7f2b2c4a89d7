"""Top-down map of a floor plan with overlays (agent path, reference path, goal and success circle).

Image axes: +x to the right, +z down (heading 0, facing -z, points up), same as ``vln_gym.topdown``,
whose overlay colours it shares.
Floors are drawn in a lightened room colour, walls dark grey, landmarks in their own colour.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from vln_gym.topdown import AGENT, GOAL, PATH, REFERENCE, START, SUCCESS
from vln_gym.world.layout import Layout

WALL = (70, 70, 74)


class TopDown:
    """Draws one plan; the base map is cached per output size."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.cell = float(layout.config.cell_size)
        nz, nx = layout.solid.shape
        colours = np.zeros((nz, nx, 3), dtype=np.uint8)
        colours[:] = WALL
        for region in range(len(layout.rooms) + 1):
            floor = np.asarray(layout.region_style(region).wall, dtype=np.float64)
            colours[layout.region == region] = np.rint(0.45 * floor + 0.55 * 255).astype(np.uint8)
        for landmark in layout.landmarks:
            for i, j in landmark.cells:
                colours[i, j] = landmark.rgb
        self.cell_colours = colours
        self._bases: dict[tuple[int, int], tuple[np.ndarray, float, float, float]] = {}

    def _base(self, size: tuple[int, int]) -> tuple[np.ndarray, float, float, float]:
        """``(image, pixels per metre, x offset, z offset)`` for an output ``size = (H, W)``."""
        if size in self._bases:
            return self._bases[size]
        height, width = size
        nz, nx = self.layout.solid.shape
        scale = min(height / (nz * self.cell), width / (nx * self.cell))
        off_x = (width - nx * self.cell * scale) / 2
        off_z = (height - nz * self.cell * scale) / 2
        cols = np.floor(((np.arange(width) + 0.5 - off_x) / scale) / self.cell).astype(np.int64)
        rows = np.floor(((np.arange(height) + 0.5 - off_z) / scale) / self.cell).astype(np.int64)
        image = np.full((height, width, 3), 255, dtype=np.uint8)
        valid_r, valid_c = (rows >= 0) & (rows < nz), (cols >= 0) & (cols < nx)
        image[np.ix_(valid_r, valid_c)] = self.cell_colours[np.ix_(rows[valid_r], cols[valid_c])]
        image.setflags(write=False)
        self._bases[size] = (image, scale, off_x, off_z)
        return self._bases[size]

    def draw(
        self,
        path: Sequence[Sequence[float]] = (),
        reference: Sequence[Sequence[float]] = (),
        goal: Sequence[float] | None = None,
        success_distance: float | None = None,
        size: tuple[int, int] = (256, 256),
    ) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``: plan, success circle, reference (green), path (blue), agent, goal."""
        height, width = int(size[0]), int(size[1])
        if height < 8 or width < 8:
            raise ValueError(f"top-down size must be at least (8, 8), got {size!r}")
        base, scale, off_x, off_z = self._base((height, width))
        image = base.copy()

        def to_px(points: Sequence[Sequence[float]]) -> np.ndarray:
            xz = np.asarray([[float(p[0]), float(p[-1])] for p in points], dtype=np.float64).reshape(-1, 2)
            return np.stack([xz[:, 0] * scale + off_x, xz[:, 1] * scale + off_z], axis=1)

        def paint(px: np.ndarray, colour: tuple[int, int, int], radius: float) -> None:
            reach = int(np.ceil(radius))
            for dy in range(-reach, reach + 1):
                for dx in range(-reach, reach + 1):
                    if dx * dx + dy * dy > radius * radius + 0.5:
                        continue
                    c = np.floor(px[:, 0]).astype(np.int64) + dx
                    r = np.floor(px[:, 1]).astype(np.int64) + dy
                    ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
                    image[r[ok], c[ok]] = colour

        def polyline(points: Sequence[Sequence[float]], colour: tuple[int, int, int]) -> None:
            px = to_px(points)
            if len(px) == 1:
                paint(px, colour, 1.0)
            for a, b in itertools.pairwise(px):
                n = max(2, int(np.ceil(np.hypot(*(b - a)) * 2)) + 1)
                paint(a + (b - a) * np.linspace(0, 1, n)[:, None], colour, 1.0)

        if goal is not None and success_distance is not None:
            centre = to_px([goal])[0]
            angles = np.linspace(0, 2 * np.pi, max(64, int(success_distance * scale * 8)), endpoint=False)
            ring = centre + success_distance * scale * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            paint(ring, SUCCESS, 0.8)
        if len(reference):
            polyline(reference, REFERENCE)
        if len(path):
            polyline(path, PATH)
            paint(to_px([path[0]]), START, 2.5)
            paint(to_px([path[-1]]), AGENT, 2.5)
        if goal is not None:
            paint(to_px([goal]), GOAL, 3.0)
        return image
