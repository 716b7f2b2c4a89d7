"""Seeded floor plans: rooms on a metric grid joined by doorways and corridors, plus coloured landmarks.

The plan is a grid of square cells (``cell_size`` metres). Cell ``[i, j]`` covers ``x in [j, j+1) * cell``
and ``z in [i, i+1) * cell``. Rooms sit one per slot of a coarse slot grid; neighbouring rooms are joined
by two-cell-wide (1 m with the default cell) openings through both walls, which become corridors when the
rooms are far apart; a random spanning tree keeps every room reachable and extra joins make loops.
Landmarks (pillars, cabinets, coloured door frames) keep two free cells to every other solid cell, so all
passages stay at least two cells wide. Everything comes from ``numpy.random.default_rng(seed)``: the same
seed and config give the same plan, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_gym.world.config import WorldConfig
from vln_gym.world.palette import HALLWAY, LANDMARK_COLOURS, LANDMARK_KINDS, RGB, ROOM_STYLES, RoomStyle

PASSAGE_CELLS = 2  # width of doorways and corridors, in cells
CLEARANCE_CELLS = 2  # free cells kept between a landmark and any other solid cell


@dataclass(frozen=True)
class Room:
    """A rectangular room; interior cells ``x0 <= j < x1``, ``z0 <= i < z1``; walls one cell outside."""

    index: int
    style: RoomStyle
    x0: int
    z0: int
    x1: int
    z1: int

    @property
    def name(self) -> str:
        return f"the {self.style.name} room"


@dataclass(frozen=True)
class Connection:
    """An opening (doorway, or corridor when the rooms are apart) between two rooms."""

    room_a: int
    room_b: int
    cells: tuple[tuple[int, int], ...]  # carved (i, j) cells, hallway region
    door_a: tuple[float, float]  # (x, z) metres: centre of the opening in room_a's wall
    door_b: tuple[float, float]
    frames: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]  # wall cells beside each door


@dataclass(frozen=True)
class Landmark:
    """A coloured solid thing that instructions can name: ``"the red pillar"``."""

    index: int
    kind: str  # "pillar" | "cabinet" | "door"
    colour: str
    rgb: RGB
    cells: tuple[tuple[int, int], ...]
    position: tuple[float, float]  # (x, z) metres: centre (for a door: centre of the opening)
    room: int  # room it stands in (a door: the room whose wall holds it)

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.kind}"


@dataclass(frozen=True)
class Layout:
    """A floor plan. ``region``: room index, ``len(rooms)`` for hallway cells, -1 for solid cells."""

    seed: int
    config: WorldConfig
    solid: np.ndarray  # bool [nz, nx]
    region: np.ndarray  # int16 [nz, nx]
    landmark_at: np.ndarray  # int16 [nz, nx]: landmark index of a solid cell, -1 otherwise
    rooms: tuple[Room, ...]
    connections: tuple[Connection, ...]
    landmarks: tuple[Landmark, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.solid.shape  # type: ignore[return-value]

    @property
    def hallway_region(self) -> int:
        return len(self.rooms)

    def region_name(self, region: int) -> str:
        return "the hallway" if region == self.hallway_region else self.rooms[region].name

    def region_style(self, region: int) -> RoomStyle:
        return HALLWAY if region == self.hallway_region else self.rooms[region].style


def _slot_grid(rooms: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(rooms))
    return math.ceil(rooms / cols), cols


def _place_rooms(rng: np.random.Generator, config: WorldConfig, slot: int, cols: int) -> list[Room]:
    styles = rng.permutation(len(ROOM_STYLES))[: config.rooms]
    band = PASSAGE_CELLS + 1  # every room covers its slot's centre lines +- band, so openings line up
    rooms = []
    for index in range(config.rooms):
        row, col = divmod(index, cols)
        bounds = []
        for start in (col * slot, row * slot):
            size = int(rng.integers(config.room_min_cells, config.room_max_cells + 1))
            mid = start + slot // 2
            low, high = max(start + 1, mid + band - size), min(mid - band, start + slot - 1 - size)
            origin = int(rng.integers(low, high + 1))
            bounds.append((origin, origin + size))
        (x0, x1), (z0, z1) = bounds
        rooms.append(Room(index, ROOM_STYLES[int(styles[index])], x0, z0, x1, z1))
    return rooms


def _room_graph(rng: np.random.Generator, config: WorldConfig, cols: int) -> list[tuple[int, int]]:
    """Random spanning tree over slot neighbours, plus each remaining neighbour pair with loop_probability."""
    pairs = []
    for index in range(config.rooms):
        _row, col = divmod(index, cols)
        if col + 1 < cols and index + 1 < config.rooms:
            pairs.append((index, index + 1))
        if index + cols < config.rooms:
            pairs.append((index, index + cols))
    order = rng.permutation(len(pairs))
    parent = list(range(config.rooms))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    chosen = []
    for k in order:
        a, b = pairs[int(k)]
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            chosen.append((a, b))
        elif rng.random() < config.loop_probability:
            chosen.append((a, b))
    return sorted(chosen)


def _connect(rng: np.random.Generator, a: Room, b: Room, slot: int, cell: float) -> Connection:
    """Carve an opening from room ``a`` to room ``b`` (``b`` right of or below ``a``)."""
    horizontal = b.x0 >= a.x1
    mid = (a.z0 // slot) * slot + slot // 2 if horizontal else (a.x0 // slot) * slot + slot // 2
    start = int(rng.integers(mid - PASSAGE_CELLS, mid + 1))
    band = range(start, start + PASSAGE_CELLS)
    centre = (start + PASSAGE_CELLS / 2) * cell
    if horizontal:
        cells = tuple((i, j) for j in range(a.x1, b.x0) for i in band)
        door_a, door_b = ((a.x1 + 0.5) * cell, centre), ((b.x0 - 0.5) * cell, centre)
        frames = (
            ((start - 1, a.x1), (start + PASSAGE_CELLS, a.x1)),
            ((start - 1, b.x0 - 1), (start + PASSAGE_CELLS, b.x0 - 1)),
        )
    else:
        cells = tuple((i, j) for i in range(a.z1, b.z0) for j in band)
        door_a, door_b = (centre, (a.z1 + 0.5) * cell), (centre, (b.z0 - 0.5) * cell)
        frames = (
            ((a.z1, start - 1), (a.z1, start + PASSAGE_CELLS)),
            ((b.z0 - 1, start - 1), (b.z0 - 1, start + PASSAGE_CELLS)),
        )
    return Connection(a.index, b.index, cells, door_a, door_b, frames)


def _block_fits(solid: np.ndarray, i0: int, j0: int, height: int, width: int) -> bool:
    c = CLEARANCE_CELLS
    if i0 - c < 0 or j0 - c < 0 or i0 + height + c > solid.shape[0] or j0 + width + c > solid.shape[1]:
        return False
    return not solid[i0 - c : i0 + height + c, j0 - c : j0 + width + c].any()


def _place_block(
    rng: np.random.Generator, solid: np.ndarray, room: Room, kind: str
) -> tuple[tuple[int, int], ...] | None:
    height, width = (1, 1) if kind == "pillar" else ((1, 2) if rng.random() < 0.5 else (2, 1))
    spots = [
        (i, j)
        for i in range(room.z0, room.z1 - height + 1)
        for j in range(room.x0, room.x1 - width + 1)
        if _block_fits(solid, i, j, height, width)
    ]
    if not spots:
        return None
    i0, j0 = spots[int(rng.integers(len(spots)))]
    return tuple((i0 + di, j0 + dj) for di in range(height) for dj in range(width))


def _place_landmarks(
    rng: np.random.Generator,
    config: WorldConfig,
    solid: np.ndarray,
    rooms: list[Room],
    connections: list[Connection],
) -> list[Landmark]:
    cell = config.cell_size
    colours = rng.permutation(len(LANDMARK_COLOURS))[: config.landmarks]
    doors = [(c, side) for c in connections for side in (0, 1)]
    doors = [doors[int(k)] for k in rng.permutation(len(doors))]
    room_order = [int(k) for k in rng.permutation(len(rooms))]
    landmarks: list[Landmark] = []
    for index, colour_index in enumerate(colours):
        colour, rgb = LANDMARK_COLOURS[int(colour_index)]
        kind = LANDMARK_KINDS[int(rng.choice(3, p=(0.4, 0.3, 0.3)))]
        if kind == "door" and doors:
            connection, side = doors.pop()
            cells = connection.frames[side]
            position = connection.door_b if side else connection.door_a
            room = connection.room_b if side else connection.room_a
        else:
            kind = "pillar" if kind == "door" else kind
            placed = None
            for attempt in range(len(rooms)):
                room = room_order[(index + attempt) % len(rooms)]
                placed = _place_block(rng, solid, rooms[room], kind)
                if placed is not None:
                    break
            if placed is None:
                raise ValueError(
                    f"WorldConfig.landmarks={config.landmarks}: no room has space for landmark {index} "
                    f"({kind}); use bigger rooms or fewer landmarks"
                )
            cells = placed
            position = (
                (np.mean([j for _, j in cells]) + 0.5) * cell,
                (np.mean([i for i, _ in cells]) + 0.5) * cell,
            )
        for i, j in cells:
            solid[i, j] = True
        landmarks.append(
            Landmark(index, kind, colour, rgb, cells, (float(position[0]), float(position[1])), room)
        )
    return landmarks


def _check_connected(solid: np.ndarray) -> None:
    free = ~solid
    start = np.argwhere(free)[0]
    seen = np.zeros_like(free)
    seen[tuple(start)] = True
    frontier = seen.copy()
    while frontier.any():
        grown = np.zeros_like(frontier)
        grown[1:] |= frontier[:-1]
        grown[:-1] |= frontier[1:]
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        frontier = grown & free & ~seen
        seen |= frontier
    if (free & ~seen).any():
        raise RuntimeError(
            "layout generation produced unreachable free cells (a bug in vln_gym.world.layout)"
        )


def generate_layout(seed: int, config: WorldConfig) -> Layout:
    """The floor plan for ``seed`` and ``config`` (deterministic)."""
    rng = np.random.default_rng(int(seed))
    rows, cols = _slot_grid(config.rooms)
    slot = config.room_max_cells + 6
    solid = np.ones((rows * slot, cols * slot), dtype=bool)
    region = np.full(solid.shape, -1, dtype=np.int16)
    rooms = _place_rooms(rng, config, slot, cols)
    for room in rooms:
        solid[room.z0 : room.z1, room.x0 : room.x1] = False
        region[room.z0 : room.z1, room.x0 : room.x1] = room.index
    connections = [
        _connect(rng, rooms[a], rooms[b], slot, config.cell_size) for a, b in _room_graph(rng, config, cols)
    ]
    for connection in connections:
        for i, j in connection.cells:
            solid[i, j] = False
            region[i, j] = len(rooms)
    landmarks = _place_landmarks(rng, config, solid, rooms, connections)
    landmark_at = np.full(solid.shape, -1, dtype=np.int16)
    for landmark in landmarks:
        for i, j in landmark.cells:
            landmark_at[i, j] = landmark.index
            region[i, j] = -1
    _check_connected(solid)
    for array in (solid, region, landmark_at):
        array.setflags(write=False)
    return Layout(
        int(seed), config, solid, region, landmark_at, tuple(rooms), tuple(connections), tuple(landmarks)
    )
