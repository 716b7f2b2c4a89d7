"""Navigation truth on a floor plan: collisions, geodesic distance fields, the shortest-path expert.

- Collision: the agent is a disc of radius ``agent_radius``; a forward step is checked every 5 cm along
  its segment and is refused as a whole (the agent stays put, ``collided=True``) if the disc would touch a
  solid cell anywhere. So the agent's centre never gets closer than ``agent_radius`` to a wall.
- Geodesic distance: Dijkstra over the free cells of the plan (16-connected: straight, diagonal and
  knight moves, each only where the cells it crosses are free) from the goal, then for a point the best
  of ``field[c] + |p - c|`` over the surrounding cell centres ``c`` it can see, or the straight line when
  the goal is near and visible. Every term is a real free-space path length, so the result is never
  below the Euclidean distance.
- Expert: the greedy geodesic follower of Habitat's ShortestPathFollower in the env's own action set:
  at each decision it scores every heading reachable by turning (``turn_angle`` steps), keeps those whose
  forward step is collision-free and gets closer to the goal, picks the closest one (a small penalty per
  turn avoids dithering), turns there and steps. It stops within ``min(success_distance, forward_step)``
  of the goal. If it ever finds no improving step it runs a short best-first search over real moves to
  get past the obstacle; only if that fails too does it raise. ``next_expert_action`` makes one such
  decision at a pose (the plan's first action) and plans in full only where the search is needed. As the
  chosen heading stays the best one while the expert turns towards it (every other heading's turn penalty
  drops by at most as much), taking the next action at every pose walks exactly the planned path.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, Vec3, apply_action, wrap_angle
from vln_gym.world.layout import Layout

COLLISION_SAMPLE = 0.05  # metres between collision checks along a forward step
TURN_PENALTY = 0.02  # metres of geodesic progress one turn is worth when choosing a heading
MIN_GAIN = 0.01  # a forward step must bring the agent at least this much closer
LOS_RANGE = 2.0  # within this distance a visible goal is measured by the straight line
_PAD = 2  # solid cells added around the plan so lookups never leave the arrays
_STRAIGHT = ((0, 1), (1, 0), (0, -1), (-1, 0))
_DIAGONAL = ((1, 1), (1, -1), (-1, 1), (-1, -1))
_KNIGHT = ((1, 2), (2, 1), (1, -2), (2, -1), (-1, 2), (-2, 1), (-1, -2), (-2, -1))


class UnreachableGoalError(RuntimeError):
    """The expert cannot bring the agent to the goal (goal inside a wall or cut off)."""


class Navigator:
    """Collision checks, geodesic fields (cached per goal) and the expert for one floor plan."""

    def __init__(
        self, layout: Layout, field_cache: int = 64, plan_cache: int = 20_000, next_cache: int = 4096
    ) -> None:
        self.layout = layout
        self.cell = float(layout.config.cell_size)
        self.radius = float(layout.config.agent_radius)
        self.solid = layout.solid
        self.nz, self.nx = layout.solid.shape
        self._pw = self.nx + 2 * _PAD
        self._solid_pad = np.pad(layout.solid, _PAD, constant_values=True).ravel()
        self._neighbours = self._build_graph()
        self._fields: OrderedDict[tuple[float, float], np.ndarray] = OrderedDict()
        self._field_cache = field_cache
        self._plans: dict[tuple, tuple[int, ...]] = {}
        self._next: dict[tuple, int] = {}  # next_expert_action's greedy decisions per pose
        self._next_cache = next_cache
        self._plan_cache = plan_cache

    def clear_memo(self) -> None:
        """Forget memoised plans and next-action decisions (geodesic fields are kept)."""
        self._plans.clear()
        self._next.clear()

    # ------------------------------------------------------------------ collisions

    def _graph_ok(self, i: int, j: int) -> bool:
        return 0 <= i < self.nz and 0 <= j < self.nx and not self.solid[i, j]

    def _build_graph(self) -> list[list[tuple[int, float]]]:
        """Per free cell, ``(neighbour, metres)`` for each 16-connected move whose crossed cells are free."""
        free = np.pad(~self.solid, 2, constant_values=False)
        nz, nx = self.nz, self.nx

        def shifted(di: int, dj: int) -> np.ndarray:
            return free[2 + di : 2 + di + nz, 2 + dj : 2 + dj + nx]

        neighbours: list[list[tuple[int, float]]] = [[] for _ in range(nz * nx)]
        for di, dj in _STRAIGHT + _DIAGONAL + _KNIGHT:
            ok = shifted(0, 0) & shifted(di, dj)
            if abs(di) == 1 and abs(dj) == 1:
                ok = ok & shifted(di, 0) & shifted(0, dj)
            elif abs(di) == 2:
                ok = ok & shifted(di // 2, 0) & shifted(di // 2, dj)
            elif abs(dj) == 2:
                ok = ok & shifted(0, dj // 2) & shifted(di, dj // 2)
            weight = math.hypot(di, dj) * self.cell
            offset = di * nx + dj
            for node in np.flatnonzero(ok).tolist():
                neighbours[node].append((node + offset, weight))
        return neighbours

    def _locate(self, xz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell-unit coordinates (clamped to the padded plan) and flat padded cell index of points."""
        x = np.minimum(np.maximum(xz[..., 0] / self.cell, -1.0), self.nx + 1.0)
        z = np.minimum(np.maximum(xz[..., 1] / self.cell, -1.0), self.nz + 1.0)
        flat = (np.floor(z).astype(np.int64) + _PAD) * self._pw + np.floor(x).astype(np.int64) + _PAD
        return x, z, flat

    def in_solid(self, xz: np.ndarray) -> np.ndarray:
        """bool per point ``[..., 2]`` (x, z): inside a solid cell or outside the plan."""
        return self._solid_pad[self._locate(xz)[2]]

    def collides(self, xz: np.ndarray) -> np.ndarray:
        """bool per point ``[..., 2]``: the agent's disc centred there overlaps a solid cell.

        As ``agent_radius < cell_size / 2`` the disc can only reach the cell's own side, the neighbour on
        the nearer x side, the one on the nearer z side and the diagonal one between them.
        """
        x, z, flat = self._locate(xz)
        fx, fz = x - np.floor(x), z - np.floor(z)
        step_x = np.where(fx >= 0.5, 1, -1)
        step_z = np.where(fz >= 0.5, self._pw, -self._pw)
        dx, dz = np.minimum(fx, 1.0 - fx), np.minimum(fz, 1.0 - fz)
        r = self.radius / self.cell
        solid = self._solid_pad
        hit = solid[flat]
        hit |= solid[flat + step_x] & (dx < r)
        hit |= solid[flat + step_z] & (dz < r)
        hit |= solid[flat + step_x + step_z] & (dx * dx + dz * dz < r * r)
        return hit

    def step_blocked(self, x: np.ndarray, z: np.ndarray, heading: np.ndarray, step: float) -> np.ndarray:
        """bool per start pose: a forward step of ``step`` metres would touch a wall somewhere along it."""
        samples = max(1, math.ceil(step / COLLISION_SAMPLE))
        t = step * np.arange(1, samples + 1) / samples
        fx, fz = -np.sin(heading), -np.cos(heading)
        points = np.stack([x[..., None] + fx[..., None] * t, z[..., None] + fz[..., None] * t], axis=-1)
        return self.collides(points).any(axis=-1)

    def move(
        self,
        position: Vec3,
        heading: float,
        action: int,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
    ) -> tuple[Vec3, float, bool]:
        """One action: ``(position, heading, collided)``; a blocked forward step leaves the agent in place."""
        if action == MOVE_FORWARD:
            blocked = self.step_blocked(
                np.array([position[0]]), np.array([position[2]]), np.array([heading]), forward_step
            )
            if blocked[0]:
                return (float(position[0]), float(position[1]), float(position[2])), float(heading), True
        if action not in (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT):
            raise ValueError(
                f"action must be 0 STOP, 1 MOVE_FORWARD, 2 TURN_LEFT or 3 TURN_RIGHT, got {action!r}"
            )
        new_position, new_heading = apply_action(
            (float(position[0]), float(position[1]), float(position[2])),
            float(heading),
            action,
            forward_step,
            turn_angle,
        )
        return new_position, float(new_heading), False

    def is_navigable(self, position: Sequence[float]) -> bool:
        """The agent's disc fits at ``position`` (3-D)."""
        return not bool(self.collides(np.array([[float(position[0]), float(position[-1])]]))[0])

    # ------------------------------------------------------------------ geodesic field

    def field(self, goal: Sequence[float]) -> np.ndarray:
        """Geodesic metres from every cell centre to ``goal`` (flat padded grid, inf where unreachable)."""
        gx, gz = float(goal[0]), float(goal[-1])
        key = (round(gx, 6), round(gz, 6))
        cached = self._fields.get(key)
        if cached is not None:
            self._fields.move_to_end(key)
            return cached
        gi, gj = math.floor(gz / self.cell), math.floor(gx / self.cell)
        if not self._graph_ok(gi, gj):
            raise UnreachableGoalError(f"goal ({gx:.3f}, {gz:.3f}) is inside a wall or outside the world")
        dist = np.full(self.nz * self.nx, np.inf)
        heap: list[tuple[float, int]] = []
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                i, j = gi + di, gj + dj
                if not self._graph_ok(i, j):
                    continue
                if di and dj and not (self._graph_ok(gi + di, gj) and self._graph_ok(gi, gj + dj)):
                    continue
                d = math.hypot((j + 0.5) * self.cell - gx, (i + 0.5) * self.cell - gz)
                dist[i * self.nx + j] = d
                heap.append((d, i * self.nx + j))
        heapq.heapify(heap)
        neighbours = self._neighbours
        best = dist.tolist()
        while heap:
            d, node = heapq.heappop(heap)
            if d > best[node]:
                continue
            for other, weight in neighbours[node]:
                nd = d + weight
                if nd < best[other]:
                    best[other] = nd
                    heapq.heappush(heap, (nd, other))
        result = np.pad(np.asarray(best).reshape(self.nz, self.nx), _PAD, constant_values=np.inf).ravel()
        result.setflags(write=False)
        self._fields[key] = result
        if len(self._fields) > self._field_cache:
            self._fields.popitem(last=False)
        return result

    def distances(self, xz: np.ndarray, goal: Sequence[float]) -> np.ndarray:
        """Geodesic metres from each point ``[n, 2]`` to ``goal``; inf inside walls or where cut off."""
        field = self.field(goal)
        x, z = xz[:, 0], xz[:, 1]
        cx, cz, own = self._locate(xz)
        right = np.where(cx - np.floor(cx) >= 0.5, 1, -1)  # neighbour column whose centre is nearer
        down = np.where(cz - np.floor(cz) >= 0.5, self._pw, -self._pw)
        solid = self._solid_pad
        centre_x = (np.floor(cx) + 0.5) * self.cell
        centre_z = (np.floor(cz) + 0.5) * self.cell
        other_x = centre_x + right * self.cell
        other_z = centre_z + np.sign(down) * self.cell
        free_x, free_z = ~solid[own + right], ~solid[own + down]
        free_d = ~solid[own + right + down] & free_x & free_z  # diagonal centre seen only past free cells
        inf = np.inf
        best = np.where(solid[own], inf, field[own] + np.hypot(x - centre_x, z - centre_z))
        best = np.minimum(
            best, np.where(free_x, field[own + right] + np.hypot(x - other_x, z - centre_z), inf)
        )
        best = np.minimum(
            best, np.where(free_z, field[own + down] + np.hypot(x - centre_x, z - other_z), inf)
        )
        best = np.minimum(
            best, np.where(free_d, field[own + right + down] + np.hypot(x - other_x, z - other_z), inf)
        )
        best = np.where(solid[own], inf, best)
        gx, gz = float(goal[0]), float(goal[-1])
        euclid = np.hypot(x - gx, z - gz)
        near = euclid <= LOS_RANGE
        if near.any():
            samples = np.linspace(0.0, 1.0, 2 + math.ceil(LOS_RANGE / (0.25 * self.cell)))
            px = x[near, None] + (gx - x[near, None]) * samples
            pz = z[near, None] + (gz - z[near, None]) * samples
            clear = ~self.in_solid(np.stack([px, pz], axis=-1)).any(axis=-1)
            sub = best[near]
            best[near] = np.where(clear, np.minimum(sub, euclid[near]), sub)
        return best

    def distance(self, position: Sequence[float], goal: Sequence[float]) -> float:
        """Geodesic metres from one 3-D (or 2-D) point to ``goal``."""
        point = np.array([[float(position[0]), float(position[-1])]])
        return float(self.distances(point, goal)[0])

    # ------------------------------------------------------------------ expert

    def expert_actions(
        self,
        position: Vec3,
        heading: float,
        goal: Sequence[float],
        success_distance: float = 1.0,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
    ) -> list[int]:
        """Greedy shortest-path actions from the pose to the goal, ending with STOP (memoised along plans)."""
        params = _plan_params(goal, success_distance, forward_step, turn_angle)
        cached = self._plans.get(_state_key(position, heading) + params)
        if cached is not None:
            return list(cached)
        actions, poses = self._plan(position, heading, goal, success_distance, forward_step, turn_angle)
        if len(self._plans) + len(poses) > self._plan_cache:
            self._plans.clear()
        for index, (pose_position, pose_heading) in enumerate(poses):
            self._plans[_state_key(pose_position, pose_heading) + params] = tuple(actions[index:])
        return actions

    def _plan(
        self,
        position: Vec3,
        heading: float,
        goal: Sequence[float],
        success_distance: float,
        forward_step: float,
        turn_angle: float,
    ) -> tuple[list[int], list[tuple[Vec3, float]]]:
        """``(actions, poses)``: ``poses[k]`` is the pose before ``actions[k]``; the last action is STOP."""
        _check_steps(forward_step, turn_angle)
        stop_radius = min(success_distance, forward_step)
        pos: Vec3 = (float(position[0]), float(position[1]), float(position[2]))
        h = float(heading)
        d = self.distance(pos, goal)
        if not math.isfinite(d):
            raise UnreachableGoalError(f"no free path from {pos} to goal {tuple(goal)}")
        actions: list[int] = []
        poses: list[tuple[Vec3, float]] = []

        def act(action: int) -> bool:
            nonlocal pos, h
            new_pos, new_h, collided = self.move(pos, h, action, forward_step, turn_angle)
            if not collided:
                actions.append(action)
                poses.append((pos, h))
                pos, h = new_pos, new_h
            return not collided

        for _ in range(100_000):
            if d <= stop_radius:
                break
            choice = self._greedy_turn(pos, h, d, goal, forward_step, turn_angle)
            if choice is None:
                if d <= success_distance:
                    break
                for action in self._escape(pos, h, goal, d, forward_step, turn_angle):
                    act(action)
                d = self.distance(pos, goal)
                continue
            k, d_after = choice
            for _ in range(abs(k)):
                act(TURN_LEFT if k > 0 else TURN_RIGHT)
            if act(MOVE_FORWARD):
                # the candidate's end point is where the agent now is (up to rounding): reuse its distance
                d = d_after
                if d <= stop_radius + 1e-6:
                    d = self.distance(pos, goal)
        else:
            raise UnreachableGoalError(f"expert made no progress from {position} towards {tuple(goal)}")
        actions.append(STOP)
        poses.append((pos, h))
        return actions, poses

    def next_expert_action(
        self,
        position: Vec3,
        heading: float,
        goal: Sequence[float],
        success_distance: float = 1.0,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        *,
        distance: float | None = None,
    ) -> int:
        """The first action of ``expert_actions(...)`` from the pose, without planning the whole path.

        Where a plan through this pose is memoised its action is returned; otherwise the greedy rule is
        applied once at the pose (STOP within the stop radius, else turn towards / step along the best
        improving heading), which is exactly the plan's first decision. Only where no step improves (the
        plan would run its bounded search) is the full plan computed (and memoised along its path, so
        the following poses of a detour continue it). ``distance``: the geodesic distance of
        ``position`` to ``goal`` when the caller already has it (saves one query). Greedy results are
        memoised per pose too.
        """
        params = _plan_params(goal, success_distance, forward_step, turn_angle)
        key = _state_key(position, heading) + params
        plan = self._plans.get(key)
        if plan is not None:
            return plan[0]
        action = self._next.get(key)
        if action is not None:
            return action
        _check_steps(forward_step, turn_angle)
        pos: Vec3 = (float(position[0]), float(position[1]), float(position[2]))
        h = float(heading)
        d = self.distance(pos, goal) if distance is None else float(distance)
        if not math.isfinite(d):
            raise UnreachableGoalError(f"no free path from {pos} to goal {tuple(goal)}")
        if d <= min(success_distance, forward_step):
            action = STOP
        else:
            choice = self._greedy_turn(pos, h, d, goal, forward_step, turn_angle)
            if choice is not None:
                k = choice[0]
                action = MOVE_FORWARD if k == 0 else (TURN_LEFT if k > 0 else TURN_RIGHT)
            elif d <= success_distance:
                action = STOP
            else:  # the plan's bounded search: plan in full (memoised along the detour)
                return self.expert_actions(
                    position, heading, goal, success_distance, forward_step, turn_angle
                )[0]
        if len(self._next) >= self._next_cache:
            self._next.clear()
        self._next[key] = action
        return action

    def _greedy_turn(
        self, pos: Vec3, h: float, d: float, goal: Sequence[float], forward_step: float, turn_angle: float
    ) -> tuple[int, float] | None:
        """The expert's decision at a pose ``d`` metres from the goal: ``(turns k, distance after the step)``
        (k > 0 left, k < 0 right, 0 straight on) or None when no collision-free step gets MIN_GAIN closer.
        """
        turns = _turns(turn_angle)
        headings = h + turns * math.radians(turn_angle)
        xs, zs = np.full(len(turns), pos[0]), np.full(len(turns), pos[2])
        blocked = self.step_blocked(xs, zs, headings, forward_step)
        ends = np.stack([xs - forward_step * np.sin(headings), zs - forward_step * np.cos(headings)], axis=1)
        after = self.distances(ends, goal)
        ok = ~blocked & (after < d - MIN_GAIN)
        if not ok.any():
            return None
        best = int(np.argmin(np.where(ok, after + TURN_PENALTY * np.abs(turns), np.inf)))
        return int(turns[best]), float(after[best])

    def _escape(
        self, pos: Vec3, h: float, goal: Sequence[float], d0: float, forward_step: float, turn_angle: float
    ) -> list[int]:
        """Best-first search over real moves for a pose at least MIN_GAIN closer than ``d0``."""
        heap: list[tuple[float, int, Vec3, float, tuple[int, ...]]] = [(d0, 0, pos, h, ())]
        seen = {_state_key(pos, h)}
        counter = 0
        while heap and counter < 20_000:
            _, _, p, ph, path = heapq.heappop(heap)
            for action in (MOVE_FORWARD, TURN_LEFT, TURN_RIGHT):
                q, qh, collided = self.move(p, ph, action, forward_step, turn_angle)
                key = _state_key(q, qh)
                if collided or key in seen:
                    continue
                seen.add(key)
                d = self.distance(q, goal)
                if d < d0 - MIN_GAIN:
                    return [*path, action]
                counter += 1
                heapq.heappush(heap, (d, counter, q, qh, (*path, action)))
        raise UnreachableGoalError(
            f"expert is stuck at {pos} (geodesic {d0:.2f} m to goal {tuple(goal)}): no sequence of "
            f"{forward_step:g} m steps and {turn_angle:g}-degree turns from here gets closer"
        )


def _check_steps(forward_step: float, turn_angle: float) -> None:
    if forward_step <= 0 or turn_angle <= 0:
        raise ValueError(f"forward_step and turn_angle must be > 0, got {forward_step}, {turn_angle}")


@lru_cache(maxsize=16)
def _turns(turn_angle: float) -> np.ndarray:
    """Turn counts the expert considers: every heading reachable by turning, each way up to 180 degrees."""
    most = math.ceil(180.0 / turn_angle - 1e-9)
    turns = np.arange(-most, most + 1)
    turns.setflags(write=False)
    return turns


def _plan_params(
    goal: Sequence[float], success_distance: float, forward_step: float, turn_angle: float
) -> tuple[float, float, float, float, float]:
    return (round(float(goal[0]), 6), round(float(goal[-1]), 6), success_distance, forward_step, turn_angle)


def _state_key(position: Sequence[float], heading: float) -> tuple[float, float, float]:
    return (round(float(position[0]), 6), round(float(position[2]), 6), round(wrap_angle(float(heading)), 6))
