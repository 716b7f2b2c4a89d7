"""Benchmark the env server: world-mode steps/s in-process vs through a loopback `vln-gym serve`.

    python scripts/bench_server.py [--image-size 224] [--seconds 5] [--envs 1 4] [--frames raw jpeg]

One run, side by side, a random agent on the built-in world (default level, ``history_frames=2``):
- ``in_process_{n}``: ``n`` envs, ``n=1`` a plain loop, ``n>1`` gymnasium's AsyncVectorEnv (process per env);
- ``remote_{n}``: the same, each env a `RemoteVLNEnv` to one server that forks a process per connection;
- ``ratio_{n}`` = remote / in-process steps/s (goal: >= 0.8 with 4 envs in an async vector env);
- ``remote_vector_{n}``: ``n`` clients in one `RemoteVectorEnv` (no worker processes: every request goes
  out before any answer is read, so the servers step in parallel), against the in-process AsyncVectorEnv;
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
from vln_gym.remote.vector import RemoteVectorEnv  # noqa: E402

AsyncVectorEnv = gym.vector.AsyncVectorEnv


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


def cpu_seconds(sessions: tuple[int, ...]) -> float:
    """CPU seconds (user + system) so far of this process, its descendants and the given sessions."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            table[int(entry)] = (int(fields[1]), int(fields[3]), (int(fields[11]) + int(fields[12])) / tick)
    mine = {os.getpid()}
    for _ in range(4):  # descendants, a few levels deep
        mine |= {pid for pid, (ppid, _, _) in table.items() if ppid in mine}
    return sum(cpu for pid, (_, sid, cpu) in table.items() if pid in mine or sid in sessions)


def single_steps(env: gym.Env, seconds: float, sessions: tuple[int, ...]) -> tuple[float, float]:
    """``(steps/s, CPU us per step)`` of a random agent in one env."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(20):
        env.step(1)
    steps, start, cpu = 0, time.perf_counter(), cpu_seconds(sessions)
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(1, 4)))
        steps += 1
        if terminated or truncated:
            env.reset()
    wall, cpu = time.perf_counter() - start, cpu_seconds(sessions) - cpu
    env.close()
    return steps / wall, cpu / steps * 1e6


def vector_steps(make_vector, envs: int, seconds: float, sessions: tuple[int, ...]) -> tuple[float, float]:
    """``(steps/s, CPU us per step)`` of ``envs`` envs in the vector env ``make_vector()`` builds."""
    vector = make_vector()
    try:
        rng = np.random.default_rng(0)
        vector.reset(seed=list(range(envs)))
        for _ in range(5):  # warm: every worker has built its env and rendered
            vector.step(rng.integers(1, 4, envs))
        steps, start, cpu = 0, time.perf_counter(), cpu_seconds(sessions)
        while time.perf_counter() - start < seconds:
            vector.step(rng.integers(1, 4, envs))
            steps += envs
        wall, cpu = time.perf_counter() - start, cpu_seconds(sessions) - cpu
        return steps / wall, cpu / steps * 1e6
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


def measure(figures: dict[str, Any], envs: int, env_kwargs: dict[str, Any], address: str, args) -> None:
    """In-process and remote side by side for ``envs`` envs; adds the figures."""
    session = (os.getsid(figures["server_pid"]),)
    if envs == 1:
        local, local_cpu = single_steps(make_local(env_kwargs), args.seconds, ())
        remote, remote_cpu = single_steps(make_remote(address), args.seconds, session)
    else:
        local_fns, remote_fns = (
            [partial(make_local, env_kwargs)] * envs,
            [partial(make_remote, address)] * envs,
        )
        local, local_cpu = vector_steps(partial(AsyncVectorEnv, local_fns), envs, args.seconds, ())
        remote, remote_cpu = vector_steps(partial(AsyncVectorEnv, remote_fns), envs, args.seconds, session)
        pipelined, pipelined_cpu = vector_steps(
            partial(RemoteVectorEnv, address, envs), envs, args.seconds, session
        )
        figures[f"remote_vector_{envs}_steps_per_s"] = round(pipelined, 1)
        figures[f"remote_vector_{envs}_cpu_us_per_step"] = round(pipelined_cpu, 1)
        figures[f"ratio_vector_{envs}"] = round(pipelined / local, 3)
        print(
            f"   RemoteVectorEnv {pipelined:8.1f} steps/s ({pipelined_cpu:6.1f}): "
            f"ratio {pipelined / local:.3f}"
        )
    figures[f"in_process_{envs}_steps_per_s"] = round(local, 1)
    figures[f"remote_{envs}_steps_per_s"] = round(remote, 1)
    figures[f"ratio_{envs}"] = round(remote / local, 3)
    figures[f"in_process_{envs}_cpu_us_per_step"] = round(local_cpu, 1)
    figures[f"remote_{envs}_cpu_us_per_step"] = round(remote_cpu, 1)
    print(
        f"{envs} env(s): in-process {local:8.1f} steps/s ({local_cpu:6.1f} CPU us/step), "
        f"remote {remote:8.1f} ({remote_cpu:6.1f}): ratio {remote / local:.3f}",
        flush=True,
    )


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
    figures["server_pid"] = process.pid
    try:
        figures["load_before"] = os.getloadavg()[0]
        for envs in args.envs:
            measure(figures, envs, env_kwargs, address, args)
        figures["bytes_per_step_raw"] = round(bytes_per_step(address, "raw"))
        figures["bytes_per_step_jpeg"] = round(bytes_per_step(address, "jpeg"))
        print(f"bytes per step: raw {figures['bytes_per_step_raw']}, jpeg {figures['bytes_per_step_jpeg']}")
        figures["load_after"] = os.getloadavg()[0]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    del figures["server_pid"]
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
