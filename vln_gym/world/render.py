"""First-person raycaster: one ray per image column, walls, floor, ceiling; numpy (or numba), no torch.

Camera: pinhole at ``camera_height`` with a 90-degree horizontal field of view (VLN-CE's), square pixels,
horizon in the middle row. Walls are the solid grid cells, ``wall_height`` tall; a wall face takes the
colour and texture of the region the ray comes from (so each room's walls look like that room from the
inside), landmark cells have their own colour. Floors are per-region colours in a 1-cell checkerboard;
brightness falls with distance, and x-facing walls are a little darker than z-facing ones.

Speed: the ray/grid intersection is vectorised over columns *and* grid lines at once (every crossing of
every vertical and horizontal grid line up to the plan's size, first solid one wins), and the picture is
one gather from a table of every material at every shade level. Per-size tables and work buffers are
made once and reused by every frame (``out=`` operations), so a frame allocates only itself and a few
one-value-per-column vectors: freshly allocated image-sized temporaries cost a page fault per 4 KiB, as
glibc hands them back to the OS after each frame, which was half the time.

Kernels: ``"numpy"`` (above) and ``"numba"`` (`vln_gym.world.render_kernel`, the same arithmetic pixel by
pixel, several times faster; ``pip install 'vln-gym[fast]'``). Both give identical pixels. The default,
``"auto"``, is ``$VLN_GYM_RENDER_KERNEL`` when set, else numba when it imports, else numpy.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

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
KERNELS = ("numpy", "numba")
KERNEL_VARIABLE = "VLN_GYM_RENDER_KERNEL"


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


_WORD = np.dtype("<u4")  # R, G, B, and a spare byte, in memory order on any machine


class _AxisBuffers:
    """Work arrays of one axis's grid-line crossings: ``rays x crossings`` at most, flat, reshaped per use."""

    def __init__(self, rays: int, crossings: int) -> None:
        capacity = rays * crossings
        self.ray_numbers = np.arange(rays)
        self.lines = np.empty(capacity, dtype=np.int64)  # grid-line numbers, then the cell entered
        self.across = np.empty(capacity, dtype=np.int64)  # cell coordinate along the other axis, then flat
        self.t = np.empty(capacity, dtype=np.float64)
        self.scratch = np.empty(capacity, dtype=np.float64)
        self.hit = np.empty(capacity, dtype=bool)


class _NumpyWork:
    """The numpy kernel's buffers for one frame size (about 1.6 MB at 224x224); private, never pickled."""

    def __init__(self, height: int, width: int, crossings: int) -> None:
        pixels = height * width
        self.axes = (_AxisBuffers(width, crossings), _AxisBuffers(width, crossings))
        self.index = np.empty((height, width), dtype=np.int32)  # palette index of every pixel
        # the floor is drawn first, then the walls, so each pair of buffers serves both in turn
        self.real = np.empty(pixels, dtype=np.float32)  # floor coordinate, then texture row
        self.first = np.empty(pixels, dtype=np.int32)  # floor x cell, then texture table index
        self.second = np.empty(pixels, dtype=np.int32)  # floor z cell then flat cell, then palette index
        self.wall = np.empty(pixels, dtype=bool)
        self.packed = np.empty(pixels, dtype=_WORD)  # RGB of every pixel, one word each


class _KernelWork:
    """The numba kernel's per-column values for one frame width; private, never pickled."""

    def __init__(self, width: int) -> None:
        self.top = np.empty(width, dtype=np.float32)
        self.scale = np.empty(width, dtype=np.float32)
        self.tex_base = np.empty(width, dtype=np.int64)
        self.index_base = np.empty(width, dtype=np.int32)
        self.dx32 = np.empty(width, dtype=np.float32)
        self.dz32 = np.empty(width, dtype=np.float32)


def _pack(palette: np.ndarray) -> np.ndarray:
    """``[N, 3]`` uint8 colours as ``[N]`` little-endian words ``R | G << 8 | B << 16``."""
    words = np.zeros((len(palette), 4), dtype=np.uint8)
    words[:, :3] = palette
    return words.view(_WORD)[:, 0].copy()


def _new_frame(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A new uint8 ``[H, W, 3]`` frame, and ``[H * W]`` overlapping 4-byte words over it, 3 bytes apart.

    Copying packed colours into the words writes each pixel's RGB and one spare byte, which the next
    pixel's word overwrites (numpy copies a 1-D array first element to last); the last spare byte lies
    just past the frame, in its buffer. About twice as fast as a gather of 3-byte rows.
    """
    buffer = np.empty(height * width * 3 + 1, dtype=np.uint8)
    words = np.ndarray((height * width,), dtype=_WORD, buffer=buffer, strides=(3,))
    return buffer[:-1].reshape(height, width, 3), words


def _rows(buffer: np.ndarray, count: int, width: int) -> np.ndarray:
    """The first ``count`` rows of ``width`` elements of a flat work buffer, as a contiguous 2-D view."""
    return buffer[: count * width].reshape(count, width)


@lru_cache(maxsize=1)
def _compiled():
    """The numba kernel module, or None when numba cannot be imported."""
    try:
        from vln_gym.world import render_kernel
    except (ImportError, OSError):  # not installed, or built for another numpy / a missing libLLVM
        return None
    return render_kernel


def numba_available() -> bool:
    """numba imports here, so the ``"numba"`` kernel can be used."""
    return _compiled() is not None


def resolve_kernel(kernel: str = "auto") -> str:
    """The kernel a renderer uses: ``"numpy"`` or ``"numba"``; ``"auto"`` reads ``$VLN_GYM_RENDER_KERNEL``
    and otherwise picks numba when it imports."""
    if kernel == "auto":
        kernel = os.environ.get(KERNEL_VARIABLE, "auto") or "auto"
        if kernel == "auto":
            return "numba" if numba_available() else "numpy"
    if kernel not in KERNELS:
        raise ValueError(f"renderer kernel must be 'auto' or one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "numba" and not numba_available():
        raise ValueError("renderer kernel 'numba' needs numba: pip install 'vln-gym[fast]' (or use 'numpy')")
    return kernel


class Renderer:
    """Renders first-person views of one floor plan.

    ``kernel``: ``"numpy"``, ``"numba"`` (compiled, the same pixels, several times faster) or ``"auto"``
    (``$VLN_GYM_RENDER_KERNEL`` if set, else numba when it imports). Every returned frame is a new array;
    the work buffers behind it are reused by the next frame, and are left out of the pickled state.
    """

    def __init__(self, layout: Layout, kernel: str = "auto") -> None:
        self.requested_kernel = kernel
        self.kernel = resolve_kernel(kernel)
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
        self.packed_palette = _pack(self.palette)
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
        self._work: dict[tuple[int, int], _NumpyWork | _KernelWork] = {}
        self._lock = threading.Lock()  # one frame at a time per renderer: the work buffers are shared

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_sizes"], state["_work"] = {}, {}  # rebuilt on first use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.kernel = resolve_kernel(self.requested_kernel)  # numba may be missing in this process

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
        compiled = self.kernel == "numba"
        work = _KernelWork(width) if compiled else _NumpyWork(height, width, len(self.crossings))
        self._work[(height, width)] = work
        return tables

    def render(self, x: float, z: float, heading: float, size: tuple[int, int]) -> np.ndarray:
        """A new RGB uint8 ``[H, W, 3]`` seen from ``(x, z)`` facing ``heading`` (``size = (H, W)``)."""
        height, width = int(size[0]), int(size[1])
        if height < 2 or width < 2:
            raise ValueError(f"render size must be at least (2, 2), got {size!r}")
        x, z, heading = float(x), float(z), float(heading)  # Python floats: float32 stays float32 below
        if not (0 <= x < self.nx * self.cell and 0 <= z < self.nz * self.cell and math.isfinite(heading)):
            raise ValueError(
                f"render pose (x={x!r}, z={z!r}, heading={heading!r}) is outside the plan "
                f"(0 <= x < {self.nx * self.cell:g}, 0 <= z < {self.nz * self.cell:g}) or not finite"
            )
        with self._lock:  # worlds are shared (world_for_episode caches them); env servers use threads
            tab = self._tables(height, width)
            work = self._work[(height, width)]
            if self.kernel == "numba":
                frame = np.empty((height, width, 3), dtype=np.uint8)
                self._render_compiled(frame, work, tab, x, z, heading)
            else:
                frame, words = _new_frame(height, width)
                self._render_numpy(words, work, tab, x, z, heading)
        return frame

    # ------------------------------------------------------------------ compiled path

    def _render_compiled(
        self, frame: np.ndarray, work: _KernelWork, tab: _SizeTables, x: float, z: float, heading: float
    ) -> None:
        frame_args = (
            x / self.cell,
            z / self.cell,
            -math.sin(heading),
            -math.cos(heading),
            self.cell,
            tab.height,
            tab.focal,
            self.wall_height,
            self.camera_height,
        )
        world = (self.solid, self.wall_of_cell, self.landmark_of_cell, self.nx, self.nz, len(self.crossings))
        pictures = (self.textures, self.floor_of_cell, self.palette)
        columns = (tab.spread, work.top, work.scale, work.tex_base, work.index_base, work.dx32, work.dz32)
        rows = (tab.rows[:, 0], tab.floor_depth, tab.floor_level[:, 0], tab.ceiling[:, 0])
        _compiled().render_into(frame, frame_args, world, pictures, columns, rows)

    # ------------------------------------------------------------------ numpy path

    def _first_hits(
        self,
        buffers: _AxisBuffers,
        origin: float,
        other: float,
        d_main: np.ndarray,
        d_other: np.ndarray,
        along_x: bool,
        count: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """First solid cell entered across grid lines of one axis, among the first ``count`` crossings of
        each ray. Returns ``(t of the hit or inf, flat index of the hit cell, step direction, t of the last
        crossing)``; the big arrays live in ``buffers``, the returned ones are new (one value per ray)."""
        nx, nz = self.nx, self.nz
        rays = len(d_main)
        step = np.where(d_main >= 0, 1, -1)
        safe = np.where(np.abs(d_main) < 1e-12, 1e-12 * step, d_main)
        lines = _rows(buffers.lines, rays, count)
        np.multiply(step[:, None], self.crossings[None, :count], out=lines)
        lines += (math.floor(origin) + (step > 0))[:, None]
        t = _rows(buffers.t, rays, count)
        np.subtract(lines, origin, out=t)
        t /= safe[:, None]
        entered = lines
        entered -= (step < 0)[:, None]
        scratch = _rows(buffers.scratch, rays, count)
        np.multiply(t, d_other[:, None], out=scratch)
        scratch += other
        np.floor(scratch, out=scratch)
        across = _rows(buffers.across, rays, count)
        np.copyto(across, scratch, casting="unsafe")
        np.maximum(across, 0, out=across)
        np.minimum(across, (nz if along_x else nx) - 1, out=across)
        np.maximum(entered, 0, out=entered)
        np.minimum(entered, (nx if along_x else nz) - 1, out=entered)
        if along_x:
            flat = across
            flat *= nx
            flat += entered
        else:
            flat = entered
            flat *= nx
            flat += across
        hit = _rows(buffers.hit, rays, count)
        np.take(self.solid, flat, out=hit, mode="clip")
        first = np.argmax(hit, axis=1)
        cols = buffers.ray_numbers[:rays]
        return np.where(hit[cols, first], t[cols, first], np.inf), flat[cols, first], step, t[:, -1].copy()

    def _cast(self, work: _NumpyWork, px: float, pz: float, dcx: np.ndarray, dcz: np.ndarray):
        """Per column: depth (metres), hit cell, previous cell, wall coordinate u in [0, 1), x-face flag.

        Looks at the first ``SHORT_CROSSINGS`` grid lines of each axis first; only rays whose nearest hit
        is not certain yet (no hit before the last line looked at) are traced across the whole plan.
        """
        ax, az = work.axes
        short = min(SHORT_CROSSINGS, len(self.crossings))
        tx, flat_x, step_x, last_x = self._first_hits(ax, px, pz, dcx, dcz, True, short)
        tz, flat_z, step_z, last_z = self._first_hits(az, pz, px, dcz, dcx, False, short)
        open_rays = np.flatnonzero(np.minimum(tx, tz) > np.minimum(last_x, last_z))
        if len(open_rays) and short < len(self.crossings):
            full = len(self.crossings)
            tx[open_rays], flat_x[open_rays], _, _ = self._first_hits(
                ax, px, pz, dcx[open_rays], dcz[open_rays], True, full
            )
            tz[open_rays], flat_z[open_rays], _, _ = self._first_hits(
                az, pz, px, dcz[open_rays], dcx[open_rays], False, full
            )
        nx = self.nx
        use_x = tx <= tz
        t = np.where(use_x, tx, tz)
        flat = np.where(use_x, flat_x, flat_z)
        previous = np.where(use_x, flat_x - step_x, flat_z - step_z * nx)
        u = np.where(use_x, pz + t * dcz, px + t * dcx)
        return t * self.cell, flat, previous, u - np.floor(u), use_x

    def _render_numpy(
        self, words: np.ndarray, work: _NumpyWork, tab: _SizeTables, x: float, z: float, heading: float
    ) -> None:
        """Fill a new frame through its pixel words (`_new_frame`)."""
        height, width = tab.height, tab.width
        fx, fz = -math.sin(heading), -math.cos(heading)
        dirx = fx - fz * tab.spread  # right vector is (-fz, fx)
        dirz = fz + fx * tab.spread
        px, pz = x / self.cell, z / self.cell
        dcx, dcz = dirx / self.cell, dirz / self.cell
        depth, flat, previous, u, use_x = self._cast(work, px, pz, dcx, dcz)
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
        index = work.index
        index[: tab.horizon_row] = tab.ceiling

        # floor: the cell under each lower pixel; pixels hidden behind walls may land outside (clamped)
        floor_rows = height - floor_from
        depth_rows = tab.floor_depth[floor_from - tab.horizon_row :, None]
        coordinate = _rows(work.real, floor_rows, width)
        floor_x = _rows(work.first, floor_rows, width)
        floor_z = _rows(work.second, floor_rows, width)
        np.multiply(depth_rows, dcx.astype(np.float32), out=coordinate)
        coordinate += px  # a Python float: added in float32
        np.copyto(floor_x, coordinate, casting="unsafe")
        np.multiply(depth_rows, dcz.astype(np.float32), out=coordinate)
        coordinate += pz
        np.copyto(floor_z, coordinate, casting="unsafe")
        floor_z *= self.nx
        floor_z += floor_x
        cells = floor_z.view(np.uint32)
        np.minimum(cells, self.nz * self.nx - 1, out=cells)
        floor = index[floor_from:]
        np.take(self.floor_of_cell, cells, out=floor, mode="clip")
        floor += tab.floor_level[floor_from - tab.horizon_row :]

        # texture row per pixel; as uint32, rows above the wall wrap to huge values, so one compare finds
        # the wall and one minimum keeps every index inside the texture table
        wall_rows = wall_to - wall_from
        v = _rows(work.real, wall_rows, width)
        np.subtract(tab.rows[wall_from:wall_to], top, out=v)
        v *= scale
        rows = _rows(work.first, wall_rows, width)
        np.copyto(rows, v, casting="unsafe")
        rows = rows.view(np.uint32)
        wall = _rows(work.wall, wall_rows, width)
        np.less(rows, TEXTURE_ROWS, out=wall)
        np.minimum(rows, TEXTURE_ROWS - 1, out=rows)
        rows *= TEXTURE_COLS
        rows += tex_base
        wall_index = _rows(work.second, wall_rows, width)
        np.take(self.textures, rows, out=wall_index, mode="clip")
        wall_index += index_base
        np.copyto(index[wall_from:wall_to], wall_index, where=wall)
        np.take(self.packed_palette, index.reshape(-1), out=work.packed, mode="clip")
        np.copyto(words, work.packed)
