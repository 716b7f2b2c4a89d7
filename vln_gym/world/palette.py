"""Colours, names and wall textures of the built-in world.

Room colours are muted and landmark colours saturated, and no name is shared between the two lists, so
"the blue room" and "the red pillar" never refer to the same thing. Textures are small tables of shade
offsets (``TEXTURE_ROWS x TEXTURE_COLS``, values in ``[-MAX_TEXTURE_DROP, 0]``) stretched over one grid cell
of wall; every room has its own pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class RoomStyle:
    name: str  # colour word used in instructions ("blue" -> "the blue room")
    wall: RGB
    floor: RGB
    texture: str


ROOM_STYLES: tuple[RoomStyle, ...] = (
    RoomStyle("blue", (80, 125, 215), (58, 70, 105), "stripes"),
    RoomStyle("green", (95, 180, 95), (62, 95, 60), "bricks"),
    RoomStyle("yellow", (225, 200, 80), (120, 100, 55), "panels"),
    RoomStyle("pink", (230, 140, 185), (120, 80, 100), "tiles"),
    RoomStyle("brown", (150, 100, 60), (85, 62, 45), "planks"),
    RoomStyle("beige", (215, 200, 165), (110, 104, 92), "dots"),
)
HALLWAY = RoomStyle("grey", (165, 165, 160), (92, 92, 90), "plain")
CEILING: RGB = (236, 234, 228)

LANDMARK_COLOURS: tuple[tuple[str, RGB], ...] = (
    ("red", (210, 30, 30)),
    ("orange", (250, 130, 10)),
    ("purple", (120, 40, 170)),
    ("black", (28, 28, 28)),
    ("white", (252, 252, 252)),
    ("cyan", (0, 200, 215)),
    ("magenta", (225, 0, 160)),
)
LANDMARK_KINDS = ("pillar", "cabinet", "door")
LANDMARK_TEXTURE = {"pillar": "rings", "cabinet": "shelves", "door": "frame"}

TEXTURE_ROWS = 16
TEXTURE_COLS = 16
MAX_TEXTURE_DROP = 8
SHADE_LEVELS = 32


def _texture(name: str) -> np.ndarray:
    v, u = np.mgrid[0:TEXTURE_ROWS, 0:TEXTURE_COLS]
    t = np.zeros((TEXTURE_ROWS, TEXTURE_COLS), dtype=np.int32)
    if name == "stripes":
        t[(u // 4) % 2 == 1] = -3
    elif name == "bricks":
        mortar_row = v % 4 == 3
        joint = (u + np.where((v // 4) % 2 == 0, 0, 8)) % 16 == 0
        t[mortar_row | joint] = -6
    elif name == "panels":
        t[v >= 9] = -3
        t[v == 8] = -7
    elif name == "tiles":
        t[(v % 8 == 7) | (u % 8 == 7)] = -5
    elif name == "planks":
        t[u % 5 == 4] = -6
        t[(u // 5) % 2 == 1] -= 1
    elif name == "dots":
        t[(v % 6 == 2) & (u % 6 == 2)] = -7
    elif name == "rings":
        t[(v == 2) | (v == 13)] = -6
    elif name == "shelves":
        t[v % 5 == 0] = -8
    elif name == "frame":
        t[(u < 2) | (u >= TEXTURE_COLS - 2)] = -4
    elif name != "plain":
        raise ValueError(f"unknown texture {name!r}")
    if name != "frame":
        t[v >= TEXTURE_ROWS - 1] = -MAX_TEXTURE_DROP  # dark skirting board where wall meets floor
    return np.clip(t, -MAX_TEXTURE_DROP, 0)


def texture(name: str) -> np.ndarray:
    """Shade-offset table ``[TEXTURE_ROWS, TEXTURE_COLS]`` (int32, values in ``[-MAX_TEXTURE_DROP, 0]``)."""
    return _texture(name)


def shade_table(colours: list[RGB]) -> np.ndarray:
    """``[len(colours) * SHADE_LEVELS, 3]`` uint8: every colour at every brightness level, darkest first."""
    levels = 0.22 + 0.78 * np.arange(SHADE_LEVELS, dtype=np.float64) / (SHADE_LEVELS - 1)
    rgb = np.asarray(colours, dtype=np.float64)[:, None, :] * levels[None, :, None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)
