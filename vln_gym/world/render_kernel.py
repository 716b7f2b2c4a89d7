"""The renderer's compiled path: the numpy raycaster of `vln_gym.world.render`, one pixel at a time in numba.

Every value is computed with the same operations, in the same order and the same precision (float64 for
the rays, float32 for the wall rows and the floor) as the numpy path, so the two give identical pixels;
`tests/test_world_render_reference.py` checks both against frames stored from the original renderer.
Importing this module needs numba (the ``fast`` extra); `vln_gym.world.render` imports it lazily, when a
renderer picks its kernel, and falls back to numpy without it. Compiled code is cached on disk
(``cache=True``, next to this file or in numba's user cache), so only the first process pays the compile.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from vln_gym.world.palette import MAX_TEXTURE_DROP, TEXTURE_COLS, TEXTURE_ROWS
from vln_gym.world.palette import SHADE_LEVELS as LEVELS
from vln_gym.world.render import FOG_LEVELS_PER_METRE, SHORT_CROSSINGS, SIDE_DARKENING


@numba.njit(cache=True, inline="always")
def _crossing(origin, other, d_other, safe, step, base, k, along_x, nx, nz):
    """``(t, flat cell index)`` where a ray crosses its ``k``-th grid line of one axis."""
    line = base + step * k
    t = (line - origin) / safe
    entered = line - (1 if step < 0 else 0)
    across = np.int64(np.floor(other + t * d_other))
    if along_x:
        i, j = min(max(across, 0), nz - 1), min(max(entered, 0), nx - 1)
    else:
        i, j = min(max(entered, 0), nz - 1), min(max(across, 0), nx - 1)
    return t, i * nx + j


@numba.njit(cache=True)
def _first_hit(origin, other, d_main, d_other, along_x, k0, k1, solid, nx, nz):
    """First solid cell among crossings ``k0 <= k < k1``: ``(t or inf, flat index, found)``."""
    step = 1 if d_main >= 0 else -1
    safe = 1e-12 * step if abs(d_main) < 1e-12 else d_main
    base = np.int64(math.floor(origin)) + (1 if step > 0 else 0)
    for k in range(k0, k1):
        t, flat = _crossing(origin, other, d_other, safe, step, base, k, along_x, nx, nz)
        if solid[flat]:
            return t, flat, True
    return np.inf, -1, False


@numba.njit(cache=True)
def _last_crossing(origin, other, d_main, d_other, along_x, k, nx, nz):
    """``(t, flat index)`` of crossing ``k`` (the numpy path's fallback cell when nothing is hit)."""
    step = 1 if d_main >= 0 else -1
    safe = 1e-12 * step if abs(d_main) < 1e-12 else d_main
    base = np.int64(math.floor(origin)) + (1 if step > 0 else 0)
    return _crossing(origin, other, d_other, safe, step, base, k, along_x, nx, nz)


@numba.njit(cache=True)
def _cast(px, pz, dcx, dcz, solid, nx, nz, crossings):
    """One ray: ``(t in cells or inf, hit cell, previous cell, wall coordinate u in [0, 1), x-face)``."""
    short = min(SHORT_CROSSINGS, crossings)
    tx, flat_x, found_x = _first_hit(px, pz, dcx, dcz, True, 0, short, solid, nx, nz)
    tz, flat_z, found_z = _first_hit(pz, px, dcz, dcx, False, 0, short, solid, nx, nz)
    last_x = _last_crossing(px, pz, dcx, dcz, True, short - 1, nx, nz)[0]
    last_z = _last_crossing(pz, px, dcz, dcx, False, short - 1, nx, nz)[0]
    if min(tx, tz) > min(last_x, last_z) and short < crossings:
        if not found_x:
            tx, flat_x, found_x = _first_hit(px, pz, dcx, dcz, True, short, crossings, solid, nx, nz)
        if not found_z:
            tz, flat_z, found_z = _first_hit(pz, px, dcz, dcx, False, short, crossings, solid, nx, nz)
    if not found_x:
        flat_x = _last_crossing(px, pz, dcx, dcz, True, 0, nx, nz)[1]
    if not found_z:
        flat_z = _last_crossing(pz, px, dcz, dcx, False, 0, nx, nz)[1]
    use_x = tx <= tz
    if use_x:
        t, flat, previous, u = tx, flat_x, flat_x - (1 if dcx >= 0 else -1), pz + tx * dcz
    else:
        t, flat, previous, u = tz, flat_z, flat_z - (1 if dcz >= 0 else -1) * nx, px + tz * dcx
    return t, flat, previous, u - np.floor(u), use_x


@numba.njit(cache=True)
def _columns(frame_args, world, columns):
    """Per column: wall top and texture scale, texture and palette bases, floor ray steps.

    Returns the highest wall top and the lowest wall foot (the rows that can hold wall pixels)."""
    px, pz, fx, fz, cell, height, focal, wall_height, camera_height = frame_args
    solid, wall_of_cell, landmark_of_cell, nx, nz, crossings = world
    spread, top, scale, tex_base, index_base, dx32, dz32 = columns
    top_min, bottom_max = np.inf, -np.inf
    rise = focal * (wall_height - camera_height)
    span = focal * wall_height
    for c in range(spread.shape[0]):
        dcx = (fx - fz * spread[c]) / cell
        dcz = (fz + fx * spread[c]) / cell
        dx32[c], dz32[c] = np.float32(dcx), np.float32(dcz)
        t, flat, previous, u, use_x = _cast(px, pz, dcx, dcz, solid, nx, nz, crossings)
        depth = max(t * cell, 1e-3)
        material = landmark_of_cell[flat]
        if material < 0:
            material = wall_of_cell[previous]
        level = LEVELS - 1 - np.rint(depth * FOG_LEVELS_PER_METRE) - (SIDE_DARKENING if use_x else 0)
        level = min(max(level, MAX_TEXTURE_DROP), LEVELS - 1)
        top[c] = np.float32(height / 2 - rise / depth)
        scale[c] = np.float32(TEXTURE_ROWS * depth / span)
        tex_base[c] = material * TEXTURE_ROWS * TEXTURE_COLS + np.int64(
            min(u * TEXTURE_COLS, TEXTURE_COLS - 1)
        )
        index_base[c] = material * LEVELS + np.int32(level)
        bottom = top[c] + np.float32(TEXTURE_ROWS) / scale[c]
        top_min, bottom_max = min(top_min, top[c]), max(bottom_max, bottom)
    return top_min, bottom_max


@numba.njit(cache=True)
def render_into(out, frame_args, world, pictures, columns, rows):
    """Fill ``out`` (uint8 ``[H, W, 3]``); the arguments are packed by `Renderer._render_compiled`.

    A pixel is wall where its texture row is inside the wall (rows ``wall_from:wall_to`` only, as on the
    numpy path), else ceiling above the horizon and floor below it."""
    px, pz = frame_args[0], frame_args[1]
    nx, nz = world[3], world[4]
    textures, floor_of_cell, palette = pictures
    row_centre, floor_depth, floor_level, ceiling_level = rows
    top, scale, tex_base, index_base, dx32, dz32 = columns[1:]
    height, width = out.shape[0], out.shape[1]
    horizon_row = ceiling_level.shape[0]
    top_min, bottom_max = _columns(frame_args, world, columns)
    wall_from = min(max(int(top_min), 0), height)
    wall_to = min(max(math.ceil(np.float64(bottom_max)) + 1, wall_from), height)
    px32, pz32 = np.float32(px), np.float32(pz)
    cells = nz * nx
    for r in range(height):
        wall_row = wall_from <= r < wall_to
        floor_row = r >= horizon_row
        if floor_row:
            depth = floor_depth[r - horizon_row]
            floor_shade = floor_level[r - horizon_row]
        for c in range(width):
            index = -1
            if wall_row:
                v = (row_centre[r] - top[c]) * scale[c]
                if -1.0 < v < TEXTURE_ROWS:  # the numpy path's int32 cast then unsigned compare
                    index = textures[np.int64(np.int32(v)) * TEXTURE_COLS + tex_base[c]] + index_base[c]
            if index < 0:
                if floor_row:
                    cx = np.int64(np.int32(px32 + depth * dx32[c]))
                    cz = np.int64(np.int32(pz32 + depth * dz32[c]))
                    cell = cz * nx + cx
                    if cell < 0 or cell >= cells:
                        cell = cells - 1
                    index = floor_of_cell[cell] + floor_shade
                else:
                    index = ceiling_level[r]
            out[r, c, 0] = palette[index, 0]
            out[r, c, 1] = palette[index, 1]
            out[r, c, 2] = palette[index, 2]
