"""Benchmark the built-in world on one core: renderer frames/s, world and episode generation, expert cost.

Renderer: every kernel that imports here (numpy, numba) at 128x128 and 224x224, side by side in one run
(rounds alternate between kernels, so load from other jobs hits both alike), in frames per CPU second and
per wall-clock second, with minor page faults per frame; the numba kernel's first frame in this process
(compile, or load from numba's on-disk cache) is reported too.

Expert cost: a full plan (``expert_actions``) vs one decision (``next_expert_action``) from fresh poses,
memos cleared, so neither is a lookup.

Usage: ``python scripts/bench_world.py [--frames N] [--kernels numpy,numba]``. Times are CPU seconds of
this process (``time.process_time``), so other jobs on a shared machine do not inflate them; frames/s by
wall clock is printed too. The last output line is one JSON object.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from vln_gym.world import World, generate_episodes, world_for_episode  # noqa: E402
from vln_gym.world.render import KERNELS, Renderer, numba_available, resolve_kernel  # noqa: E402

SIZES = ((128, 128), (224, 224))
ROUNDS = 5


def _poses(world: World, count: int, seed: int = 0) -> list[tuple[tuple[float, float, float], float]]:
    rng = np.random.default_rng(seed)
    width, depth = world.extent
    poses = []
    while len(poses) < count:
        p = (float(rng.uniform(0, width)), 0.0, float(rng.uniform(0, depth)))
        if world.is_navigable(p):
            poses.append((p, float(rng.uniform(-math.pi, math.pi))))
    return poses


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def render_rates(
    world: World, kernels: list[str], size: tuple[int, int], frames: int
) -> dict[str, tuple[float, float, float]]:
    """Per kernel ``(frames per CPU second, frames per wall second, minor page faults per frame)`` over
    random navigable poses, ``frames`` each, in ``ROUNDS`` alternating rounds."""
    poses = _poses(world, 256)
    renderers = {kernel: Renderer(world.layout, kernel=kernel) for kernel in kernels}
    for renderer in renderers.values():  # warm the per-size tables and buffers
        for position, heading in poses[:8]:
            renderer.render(position[0], position[2], heading, size)
    totals = {kernel: [0.0, 0.0, 0] for kernel in kernels}
    per_round = max(1, frames // ROUNDS)
    for round_index in range(ROUNDS):
        for kernel, renderer in renderers.items():
            faults, cpu, wall = _minor_faults(), time.process_time(), time.perf_counter()
            for k in range(round_index * per_round, (round_index + 1) * per_round):
                position, heading = poses[k % len(poses)]
                renderer.render(position[0], position[2], heading, size)
            total = totals[kernel]
            total[0] += time.process_time() - cpu
            total[1] += time.perf_counter() - wall
            total[2] += _minor_faults() - faults
    count = per_round * ROUNDS
    return {
        kernel: (count / cpu, count / wall, faults / count) for kernel, (cpu, wall, faults) in totals.items()
    }


def first_frame_ms(world: World, kernel: str) -> float:
    """Wall ms of a new renderer's first 224x224 frame (numba: its compile, or its load from the cache)."""
    start = time.perf_counter()
    Renderer(world.layout, kernel=kernel).render(5.0, 5.0, 0.3, (224, 224))
    return (time.perf_counter() - start) * 1000


def _kernels(text: str | None) -> list[str]:
    if text is None:
        return [kernel for kernel in KERNELS if kernel != "numba" or numba_available()]
    chosen = [resolve_kernel(name.strip()) for name in text.split(",") if name.strip()]
    if not chosen:
        raise SystemExit("--kernels: name at least one of " + ", ".join(KERNELS))
    return chosen


def bench_renderer(world: World, kernels: list[str], frames: int) -> dict[str, float | str]:
    """The renderer's figures: per kernel and size, and the default kernel's under the old key names."""
    figures: dict[str, float | str] = {"render_kernel_default": resolve_kernel("auto")}
    if "numba" in kernels:
        import numba

        figures["numba_version"] = numba.__version__
        figures["numba_first_frame_ms"] = round(first_frame_ms(world, "numba"), 1)
        print(f"numba {numba.__version__}: first {figures['numba_first_frame_ms']:.0f} ms (compile/cache)")
    for size in SIZES:
        rates = render_rates(world, kernels, size, frames)
        for kernel, (cpu_fps, wall_fps, faults) in rates.items():
            tag = f"{size[0]}_{kernel}"
            figures[f"render_fps_{tag}"] = round(cpu_fps, 1)
            figures[f"render_wall_fps_{tag}"] = round(wall_fps, 1)
            figures[f"render_page_faults_per_frame_{tag}"] = round(faults, 1)
            print(
                f"render {size[0]}x{size[1]} {kernel:>5}: {cpu_fps:6.0f} frames/s of CPU time, "
                f"{wall_fps:6.0f} by wall clock, {faults:.1f} page faults per frame"
            )
        if "numba" in rates and "numpy" in rates:
            figures[f"render_numba_speedup_{size[0]}"] = round(rates["numba"][0] / rates["numpy"][0], 2)
        default = figures["render_kernel_default"]
        if default in rates:
            figures[f"render_fps_{size[0]}"] = figures[f"render_fps_{size[0]}_{default}"]
            figures[f"render_wall_fps_{size[0]}"] = figures[f"render_wall_fps_{size[0]}_{default}"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per size and kernel (default 2000)")
    parser.add_argument("--kernels", help="comma-separated renderer kernels (default: all that import)")
    args = parser.parse_args()
    kernels = _kernels(args.kernels)

    start = time.process_time()
    worlds = [World.generate(seed) for seed in range(20)]
    world_ms = (time.process_time() - start) / len(worlds) * 1000
    print(f"world generation: {world_ms:.2f} ms per world")

    figures: dict[str, float | str] = {"world_generation_ms": round(world_ms, 2)}
    figures.update(bench_renderer(worlds[0], kernels, args.frames))

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
