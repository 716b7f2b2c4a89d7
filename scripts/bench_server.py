"""Benchmark the env server: world-mode steps/s in-process vs through a loopback `vln-gym serve`.

    python scripts/bench_server.py [--image-size 224] [--seconds 5] [--envs 1 4] [--frames raw jpeg]

One run, side by side, a random agent on the built-in world (default level, ``history_frames=2``):
- ``in_process_{n}``: ``n`` envs, ``n=1`` a plain loop, ``n>1`` gymnasium's AsyncVectorEnv (process per env);
- ``remote_{n}``: the same, each env a `RemoteVLNEnv` to one server that forks a process per connection;
- ``ratio_{n}`` = remote / in-process steps/s (goal: >= 0.8 with 4 envs in an async vector env);
- ``bytes_per_step``: protocol bytes (both directions) per step for one env, raw frames (and JPEG).
The last output line is one JSON object with every figure.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import vln_gym  # noqa: E402, F401  (registers VLN-v0)
from vln_gym.remote.client import RemoteVLNEnv  # noqa: E402


def start_server(env_kwargs: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "vln_gym.remote.cli",
        "--port",
        "0",
        "--env-kwargs",
        json.dumps(env_kwargs),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, line.split()[-1]


def single_steps_per_s(env: gym.Env, seconds: float) -> float:
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(1, 4)))
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_steps_per_s(make_env, envs: int, seconds: float) -> float:
    vector = gym.vector.AsyncVectorEnv([make_env] * envs)
    try:
        rng = np.random.default_rng(0)
        vector.reset(seed=list(range(envs)))
        vector.step(rng.integers(1, 4, envs))  # warm: every worker has built its env and rendered
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            vector.step(rng.integers(1, 4, envs))
            steps += envs
        return steps / (time.perf_counter() - start)
    finally:
        vector.close()


def bytes_per_step(address: str, frames: str, steps: int = 50) -> float:
    env = RemoteVLNEnv(address, frames=frames)
    env.reset(seed=0)
    before = env.bytes_sent + env.bytes_received
    rng = np.random.default_rng(1)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(1, 4)))
        if terminated or truncated:
            env.reset()
    total = env.bytes_sent + env.bytes_received - before
    env.close()
    return total / steps


def make_local(env_kwargs: dict[str, Any]) -> gym.Env:
    return gym.make("VLN-v0", **env_kwargs)


def make_remote(address: str) -> gym.Env:
    return gym.make("VLN-v0", server=address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--world-episodes", type=int, default=50)
    args = parser.parse_args(argv)
    env_kwargs = {"image_size": [args.image_size] * 2, "world_episodes": args.world_episodes}
    process, address = start_server(env_kwargs)
    figures: dict[str, Any] = {"benchmark": "bench_server", "image_size": args.image_size}
    try:
        figures["load_before"] = os.getloadavg()[0]
        for envs in args.envs:
            if envs == 1:
                local = single_steps_per_s(make_local(env_kwargs), args.seconds)
                remote = single_steps_per_s(make_remote(address), args.seconds)
            else:
                local = vector_steps_per_s(partial(make_local, env_kwargs), envs, args.seconds)
                remote = vector_steps_per_s(partial(make_remote, address), envs, args.seconds)
            figures[f"in_process_{envs}_steps_per_s"] = round(local, 1)
            figures[f"remote_{envs}_steps_per_s"] = round(remote, 1)
            figures[f"ratio_{envs}"] = round(remote / local, 3)
            print(
                f"{envs} env(s): in-process {local:8.1f} steps/s, remote {remote:8.1f} ({remote / local:.3f})"
            )
        figures["bytes_per_step_raw"] = round(bytes_per_step(address, "raw"))
        figures["bytes_per_step_jpeg"] = round(bytes_per_step(address, "jpeg"))
        print(f"bytes per step: raw {figures['bytes_per_step_raw']}, jpeg {figures['bytes_per_step_jpeg']}")
        figures["load_after"] = os.getloadavg()[0]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
