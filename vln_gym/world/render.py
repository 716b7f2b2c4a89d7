"""First-person raycaster in numpy: one ray per image column, walls, floor, ceiling; no torch.

Camera: pinhole at ``camera_height`` with a 90-degree horizontal field of view (VLN-CE's), square pixels,
horizon in the middle row. Walls are the solid grid cells, ``wall_height`` tall; a wall face takes the
colour and texture of the region the ray comes from (so each room's walls look like that room from the
inside), landmark cells have their own colour. Floors are per-region colours in a 1-cell checkerboard;
brightness falls with distance, and x-facing walls are a little darker than z-facing ones.

Speed: the ray/grid intersection is vectorised over columns *and* grid lines at once (every crossing of
every vertical and horizontal grid line up to the plan's size, first solid one wins), and the picture is
one gather from a table of every material at every shade level. Per-size arrays are cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_gym.world.layout import Layout
from vln_gym.world.palette import (
    CEILING,
    LANDMARK_TEXTURE,
    MAX_TEXTURE_DROP,
    SHADE_LEVELS,
    TEXTURE_COLS,
    TEXTURE_ROWS,
    shade_table,
    texture,
)

HFOV_DEGREES = 90.0
FOG_LEVELS_PER_METRE = 1.3
SIDE_DARKENING = 3
SHORT_CROSSINGS = 12  # grid lines per axis looked at before tracing a ray across the whole plan
_L = SHADE_LEVELS
_TEX = TEXTURE_ROWS * TEXTURE_COLS


@dataclass(frozen=True)
class _SizeTables:
    """Arrays that depend only on the image size."""

    height: int
    width: int
    focal: float
    spread: np.ndarray  # [W] lateral ray offset per metre of depth
    rows: np.ndarray  # [H, 1] float32 pixel-row centres
    horizon_row: int  # first floor row
    floor_depth: np.ndarray  # [H - horizon_row] depth of the floor seen by each lower row
    floor_level: np.ndarray  # [H - horizon_row, 1] shade level of each floor row
    ceiling: np.ndarray  # [horizon_row, W] palette index of the ceiling


class Renderer:
    """Renders first-person views of one floor plan."""

    def __init__(self, layout: Layout) -> None:
        config = layout.config
        self.cell = float(config.cell_size)
        self.wall_height = float(config.wall_height)
        self.camera_height = float(config.camera_height)
        self.nz, self.nx = layout.solid.shape
        self.crossings = np.arange(max(self.nz, self.nx) + 1, dtype=np.int64)
        colours = [CEILING]
        textures = [texture("plain")]
        regions = len(layout.rooms) + 1
        wall_material = np.zeros(regions, dtype=np.int64)
        floor_material = np.zeros(regions, dtype=np.int64)
        for region in range(regions):
            style = layout.region_style(region)
            wall_material[region] = len(colours)
            colours.append(style.wall)
            textures.append(texture(style.texture))
            floor_material[region] = len(colours)
            colours.append(style.floor)
            textures.append(texture("plain"))
        landmark_material = []
        for landmark in layout.landmarks:
            landmark_material.append(len(colours))
            colours.append(landmark.rgb)
            textures.append(texture(LANDMARK_TEXTURE[landmark.kind]))
        self.palette = shade_table(colours)
        self.textures = np.concatenate([t.ravel() for t in textures]).astype(np.int32)
        region = layout.region.ravel().astype(np.int64)
        self.solid = np.ascontiguousarray(layout.solid.ravel())
        self.wall_of_cell = np.where(region >= 0, wall_material[np.maximum(region, 0)], 0)
        landmark_at = layout.landmark_at.ravel().astype(np.int64)
        lookup = np.asarray([*landmark_material, -1], dtype=np.int64)
        self.landmark_of_cell = lookup[np.where(landmark_at >= 0, landmark_at, len(landmark_material))]
        ii, jj = np.divmod(np.arange(self.nz * self.nx), self.nx)
        checker = ((ii + jj) % 2).astype(np.int64)
        self.floor_of_cell = (
            np.where(region >= 0, floor_material[np.maximum(region, 0)], 0) * _L - 2 * checker
        ).astype(np.int32)
        self._sizes: dict[tuple[int, int], _SizeTables] = {}

    def _tables(self, height: int, width: int) -> _SizeTables:
        tables = self._sizes.get((height, width))
        if tables is not None:
            return tables
        half_fov = math.tan(math.radians(HFOV_DEGREES) / 2)
        focal = (width / 2) / half_fov
        spread = (2 * (np.arange(width) + 0.5) / width - 1) * half_fov
        rows = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
        horizon_row = (height + 1) // 2  # first row whose centre is below the horizon
        below = np.arange(horizon_row, height) + 0.5 - height / 2
        floor_depth = self.camera_height * focal / below
        floor_level = np.clip(_L - 3 - np.rint(floor_depth * FOG_LEVELS_PER_METRE), MAX_TEXTURE_DROP, _L - 1)
        ceiling_level = np.clip(np.rint(np.linspace(_L - 1, _L - 9, horizon_row)), 0, _L - 1).astype(np.int32)
        ceiling = np.repeat(ceiling_level[:, None], width, axis=1)  # material 0 = ceiling
        tables = _SizeTables(
            height,
            width,
            focal,
            spread,
            rows,
            horizon_row,
            floor_depth.astype(np.float32),
            floor_level.astype(np.int32)[:, None],
            ceiling,
        )
        self._sizes[(height, width)] = tables
        return tables

    def _first_hits(
        self,
        origin: float,
        other: float,
        d_main: np.ndarray,
        d_other: np.ndarray,
        along_x: bool,
        k: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """First solid cell entered across grid lines of one axis, among the crossings ``k`` of each ray.

        Returns ``(t of the hit or inf, flat index of the hit cell, step direction, t of the last crossing)``.
        """
        nx, nz = self.nx, self.nz
        step = np.where(d_main >= 0, 1, -1)
        safe = np.where(np.abs(d_main) < 1e-12, 1e-12 * step, d_main)
        lines = (math.floor(origin) + (step > 0))[:, None] + step[:, None] * k[None, :]
        t = (lines - origin) / safe[:, None]
        entered = lines - (step < 0)[:, None]
        across = np.floor(other + t * d_other[:, None]).astype(np.int64)
        if along_x:
            flat = np.minimum(np.maximum(across, 0), nz - 1) * nx + np.minimum(np.maximum(entered, 0), nx - 1)
        else:
            flat = np.minimum(np.maximum(entered, 0), nz - 1) * nx + np.minimum(np.maximum(across, 0), nx - 1)
        hit = self.solid[flat]
        first = np.argmax(hit, axis=1)
        cols = np.arange(len(first))
        return np.where(hit[cols, first], t[cols, first], np.inf), flat[cols, first], step, t[:, -1]

    def _cast(self, px: float, pz: float, dcx: np.ndarray, dcz: np.ndarray):
        """Per column: depth (metres), hit cell, previous cell, wall coordinate u in [0, 1), x-face flag.

        Looks at the first ``SHORT_CROSSINGS`` grid lines of each axis first; only rays whose nearest hit
        is not certain yet (no hit before the last line looked at) are traced across the whole plan.
        """
        short = self.crossings[:SHORT_CROSSINGS]
        tx, flat_x, step_x, last_x = self._first_hits(px, pz, dcx, dcz, True, short)
        tz, flat_z, step_z, last_z = self._first_hits(pz, px, dcz, dcx, False, short)
        open_rays = np.flatnonzero(np.minimum(tx, tz) > np.minimum(last_x, last_z))
        if len(open_rays) and len(short) < len(self.crossings):
            full = self.crossings
            tx[open_rays], flat_x[open_rays], _, _ = self._first_hits(
                px, pz, dcx[open_rays], dcz[open_rays], True, full
            )
            tz[open_rays], flat_z[open_rays], _, _ = self._first_hits(
                pz, px, dcz[open_rays], dcx[open_rays], False, full
            )
        nx = self.nx
        use_x = tx <= tz
        t = np.where(use_x, tx, tz)
        flat = np.where(use_x, flat_x, flat_z)
        previous = np.where(use_x, flat_x - step_x, flat_z - step_z * nx)
        u = np.where(use_x, pz + t * dcz, px + t * dcx)
        return t * self.cell, flat, previous, u - np.floor(u), use_x

    def render(self, x: float, z: float, heading: float, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` seen from ``(x, z)`` facing ``heading`` (``size = (H, W)``)."""
        height, width = int(size[0]), int(size[1])
        if height < 2 or width < 2:
            raise ValueError(f"render size must be at least (2, 2), got {size!r}")
        tab = self._tables(height, width)
        fx, fz = -math.sin(heading), -math.cos(heading)
        dirx = fx - fz * tab.spread  # right vector is (-fz, fx)
        dirz = fz + fx * tab.spread
        px, pz = x / self.cell, z / self.cell
        depth, flat, previous, u, use_x = self._cast(px, pz, dirx / self.cell, dirz / self.cell)
        depth = np.maximum(depth, 1e-3)
        landmark = self.landmark_of_cell[flat]
        material = np.where(landmark >= 0, landmark, self.wall_of_cell[previous])
        level = np.clip(
            _L - 1 - np.rint(depth * FOG_LEVELS_PER_METRE) - SIDE_DARKENING * use_x, MAX_TEXTURE_DROP, _L - 1
        ).astype(np.int32)
        top = (height / 2 - tab.focal * (self.wall_height - self.camera_height) / depth).astype(np.float32)
        scale = (TEXTURE_ROWS * depth / (tab.focal * self.wall_height)).astype(np.float32)
        tex_base = (material * _TEX + np.minimum(u * TEXTURE_COLS, TEXTURE_COLS - 1).astype(np.int64)).astype(
            np.uint32
        )
        index_base = (material * _L + level).astype(np.int32)

        bottom = top + TEXTURE_ROWS / scale
        # only rows some wall reaches need wall pixels; floor rows above every wall's foot are all wall
        wall_from = min(max(int(top.min()), 0), height)
        wall_to = min(max(math.ceil(float(bottom.max())) + 1, wall_from), height)
        floor_from = min(max(int(bottom.min()), tab.horizon_row), height)

        # texture row per pixel; as uint32, rows above the wall wrap to huge values, so one compare finds
        # the wall and one minimum keeps every index inside the texture table
        v = tab.rows[wall_from:wall_to] - top
        v *= scale
        rows = v.astype(np.int32).view(np.uint32)
        wall = rows < TEXTURE_ROWS
        np.minimum(rows, TEXTURE_ROWS - 1, out=rows)
        rows *= TEXTURE_COLS
        rows += tex_base
        wall_index = np.take(self.textures, rows)
        wall_index += index_base

        # floor: the cell under each lower pixel; pixels hidden behind walls may land outside (clamped)
        index = np.empty((height, width), dtype=np.int32)
        index[: tab.horizon_row] = tab.ceiling
        depth_rows = tab.floor_depth[floor_from - tab.horizon_row :, None]
        floor_x = (px + depth_rows * (dirx / self.cell).astype(np.float32)).astype(np.int32)
        floor_z = (pz + depth_rows * (dirz / self.cell).astype(np.float32)).astype(np.int32)
        floor_z *= self.nx
        floor_z += floor_x
        cells = floor_z.view(np.uint32)
        np.minimum(cells, self.nz * self.nx - 1, out=cells)
        floor = index[floor_from:]
        np.take(self.floor_of_cell, cells, out=floor)
        floor += tab.floor_level[floor_from - tab.horizon_row :]
        np.copyto(index[wall_from:wall_to], wall_index, where=wall)
        return np.take(self.palette, index, axis=0)
