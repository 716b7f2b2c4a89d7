"""Benchmark VLN-v0 on one core: dataset mode vs the raw Pillow decode floor, warm-cache steps/s, world mode.

    python scripts/bench_env.py [--data DIR_OR_FILE] [--format vln-ego] [--image-size 224] [--seconds 2]

Figures (the last output line is one JSON object with all of them):
- raw_frames_per_s: Pillow open + decode + RGB + resize of the same frames in a plain loop (the floor);
- cold_steps_per_s: dataset-mode episodes (reset + one step) with history_frames=1 and the frame cache
  cleared each round, so every step delivers one freshly decoded frame; cold_ratio = cold / raw
  (target >= 0.8);
- warm_steps_per_s: the same with history_frames=2 and the decoded-frame cache warm (target >= 20,000);
  warm_first_epoch_steps_per_s: the same with the env's episode-metrics memo cleared every round (each
  record's outcome seen for the first time: episode_metrics runs on every step);
  warm_gym_make_steps_per_s: the same through gym.make's wrappers;
- world_steps_per_s: built-in world mode, random actions (only when vln_gym.world is available).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402  (after the thread limits)
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import vln_gym  # noqa: E402, F401  (registers VLN-v0)
from vln_gym.env import VLNEnv  # noqa: E402
from vln_gym.geometry import MOVE_FORWARD  # noqa: E402
from vln_gym.images import clear_frame_cache  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests/fixtures/vln-ego-sample/rgb_images_r2r_debug"


def _timed(fn, seconds: float) -> float:
    """Calls of ``fn`` per second (fn returns how many units it did), run for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def raw_floor(paths: list[str], size: tuple[int, int]) -> float:
    def one_round() -> int:
        for path in paths:
            with Image.open(path) as image:
                image.load()
                rgb = image.convert("RGB")
            np.asarray(rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.uint8)
        return len(paths)

    return one_round


def episode_rounds(env: gym.Env, num_episodes: int, clear_cache: bool, clear_metrics: bool = False):
    def one_round() -> int:
        if clear_cache:
            clear_frame_cache()
        if clear_metrics:
            env.unwrapped._metrics_memo.clear()
        for index in range(num_episodes):
            env.reset(options={"episode_index": index})
            env.step(MOVE_FORWARD)
        return num_episodes

    return one_round


def world_steps(seconds: float, size: tuple[int, int]) -> float | None:
    try:
        env = VLNEnv(world_episodes=20, image_size=size, max_steps=200)
    except RuntimeError as error:
        print(f"world mode skipped: {error}")
        return None
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def chunk() -> int:
        for _ in range(100):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(1, 4)))
            if terminated or truncated:
                env.reset()
        return 100

    return _timed(chunk, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset file or folder (default: VLN-Ego sample)"
    )
    parser.add_argument("--format", default="vln-ego", help="vln_gym.data format of --data")
    parser.add_argument("--image-size", type=int, default=224, help="square frame size")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved floor/env runs (best kept)")
    parser.add_argument("--skip-world", action="store_true", help="do not measure world mode")
    args = parser.parse_args(argv)

    from vln_gym.data import load_episodes

    size = (args.image_size, args.image_size)
    episodes = load_episodes(args.data, format=args.format)
    paths = [episode.images[-1] for episode in episodes]  # each record's current frame, each file once
    print(f"{len(episodes)} episodes, {len(set(paths))} distinct frames, image_size {size}")

    cold_env = VLNEnv(episodes=episodes, history_frames=1, image_size=size)
    # Interleave floor and env runs and keep the best of each: the machine is shared, so load drifts.
    raws, colds = [], []
    slice_seconds = args.seconds / args.repeats
    for _ in range(args.repeats):
        raws.append(_timed(raw_floor(paths, size), slice_seconds))
        colds.append(_timed(episode_rounds(cold_env, len(episodes), clear_cache=True), slice_seconds))
    raw, cold = max(raws), max(colds)
    print(f"raw Pillow floor:         {raw:10.1f} frames/s")
    print(f"env cold (1 new frame):   {cold:10.1f} steps/s  ratio {cold / raw:.3f}")
    warm_env = VLNEnv(episodes=episodes, history_frames=2, image_size=size)
    episode_rounds(warm_env, len(episodes), clear_cache=False)()
    warm = _timed(episode_rounds(warm_env, len(episodes), clear_cache=False), args.seconds)
    print(f"env warm (reset+step):    {warm:10.1f} steps/s")
    first_epoch = episode_rounds(warm_env, len(episodes), clear_cache=False, clear_metrics=True)
    first = _timed(first_epoch, args.seconds)
    print(f"env warm, metrics memo cleared: {first:10.1f} steps/s")
    wrapped = gym.make("VLN-v0", episodes=episodes, history_frames=2, image_size=size)
    episode_rounds(wrapped, len(episodes), clear_cache=False)()
    warm_wrapped = _timed(episode_rounds(wrapped, len(episodes), clear_cache=False), args.seconds)
    print(f"gym.make warm:            {warm_wrapped:10.1f} steps/s")
    world = None if args.skip_world else world_steps(args.seconds, size)
    if world is not None:
        print(f"world mode:               {world:10.1f} steps/s")
    figures = {
        "image_size": args.image_size,
        "episodes": len(episodes),
        "raw_frames_per_s": round(raw, 1),
        "cold_steps_per_s": round(cold, 1),
        "cold_ratio": round(cold / raw, 3),
        "warm_steps_per_s": round(warm, 1),
        "warm_first_epoch_steps_per_s": round(first, 1),
        "warm_gym_make_steps_per_s": round(warm_wrapped, 1),
        "world_steps_per_s": None if world is None else round(world, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
