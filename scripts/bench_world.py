"""Benchmark the built-in world on one core: renderer frames/s, world and episode generation, expert cost.

Expert cost: a full plan (``expert_actions``) vs one decision (``next_expert_action``) from fresh poses,
memos cleared, so neither is a lookup.

Usage: ``python scripts/bench_world.py [--frames N]``. Times are CPU seconds of this process
(``time.process_time``), so other jobs on a shared machine do not inflate them; frames/s by wall clock is
printed too. The last output line is one JSON object.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from vln_gym.world import World, generate_episodes, world_for_episode  # noqa: E402


def _poses(world: World, count: int, seed: int = 0) -> list[tuple[tuple[float, float, float], float]]:
    rng = np.random.default_rng(seed)
    width, depth = world.extent
    poses = []
    while len(poses) < count:
        p = (float(rng.uniform(0, width)), 0.0, float(rng.uniform(0, depth)))
        if world.is_navigable(p):
            poses.append((p, float(rng.uniform(-math.pi, math.pi))))
    return poses


def render_fps(world: World, size: tuple[int, int], frames: int) -> tuple[float, float]:
    """``(frames per CPU second, frames per wall-clock second)`` over random navigable poses."""
    poses = _poses(world, 256)
    for position, heading in poses[:8]:  # warm the per-size caches
        world.render(position, heading, size)
    start, wall = time.process_time(), time.perf_counter()
    for k in range(frames):
        position, heading = poses[k % len(poses)]
        world.render(position, heading, size)
    return frames / (time.process_time() - start), frames / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per size (default 2000)")
    args = parser.parse_args()

    start = time.process_time()
    worlds = [World.generate(seed) for seed in range(20)]
    world_ms = (time.process_time() - start) / len(worlds) * 1000
    print(f"world generation: {world_ms:.2f} ms per world")

    figures = {"world_generation_ms": round(world_ms, 2)}
    for size in ((128, 128), (224, 224)):
        fps, wall_fps = render_fps(worlds[0], size, args.frames)
        figures[f"render_fps_{size[0]}"] = round(fps, 1)
        figures[f"render_wall_fps_{size[0]}"] = round(wall_fps, 1)
        print(f"render {size[0]}x{size[1]}: {fps:.0f} frames/s of CPU time ({wall_fps:.0f} by wall clock)")

    start = time.process_time()
    episodes = generate_episodes(seed=123, num_episodes=100)
    episode_ms = (time.process_time() - start) / len(episodes) * 1000
    figures["episode_generation_ms"] = round(episode_ms, 2)
    print(f"episode generation: {episode_ms:.2f} ms per episode (expert path + instruction included)")

    world = world_for_episode(episodes[0])
    goal = episodes[0].goal_position
    poses = _poses(world, 200, seed=1)
    world.navigator.clear_memo()
    start = time.process_time()
    for position, heading in poses:
        world.next_expert_action(position, heading, goal)
    next_us = (time.process_time() - start) / len(poses) * 1e6
    world.navigator.clear_memo()
    start = time.process_time()
    for position, heading in poses:
        world.expert_actions(position, heading, goal)
    plan_ms = (time.process_time() - start) / len(poses) * 1000
    start = time.process_time()
    for position, _ in poses:
        world.geodesic_distance(position, goal)
    geodesic_us = (time.process_time() - start) / len(poses) * 1e6
    figures["expert_plan_ms"] = round(plan_ms, 2)
    figures["next_expert_action_us"] = round(next_us, 1)
    figures["geodesic_query_us"] = round(geodesic_us, 1)
    print(f"expert plan from a fresh pose: {plan_ms:.2f} ms; geodesic query: {geodesic_us:.0f} us")
    print(f"next expert action from a fresh pose (no memo): {next_us:.0f} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
