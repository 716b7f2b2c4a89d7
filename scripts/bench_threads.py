"""Which torch thread count is fastest for a model on this machine: one PPO-sized decision batch
(generate + score with grad + backward) timed at 1..N threads, side by side (prints figures; last line JSON).

.venv/bin/python scripts/bench_threads.py [--model tiny] [--batch 8] [--reps 5]

Each thread count runs in its own process (torch fixes its pool at first use), one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _one(model: str, batch: int, reps: int, threads: int) -> float:
    import gymnasium as gym
    import torch

    import vln_gym  # noqa: F401
    from agents.policy.model import VLMPolicy
    from agents.ppo_train import resolve_model_path

    torch.set_num_threads(threads)
    policy = VLMPolicy.from_pretrained(
        resolve_model_path(model), use_lora=False, freeze_vision=False, constrained_actions=True
    )
    env = gym.make("VLN-v0", world_config="easy", action_space="text", image_size=(56, 56), history_frames=12)
    observations = []
    for seed in range(batch):
        obs, _ = env.reset(seed=seed)
        observations.append(obs)
    best = float("inf")
    for _ in range(reps + 1):  # the first repetition warms up
        start = time.perf_counter()
        generation = policy.generate(observations, max_new_tokens=4)
        out = policy.evaluate(generation.prompts, generation.response_ids)
        out.logprobs.sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="(internal) run one thread count")
    args = parser.parse_args(argv)
    if args.threads is not None:
        print(json.dumps({"seconds": _one(args.model, args.batch, args.reps, args.threads)}))
        return 0
    figures: dict[str, float] = {}
    for threads in range(1, (os.cpu_count() or 1) + 1):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--batch",
                str(args.batch),
                "--reps",
                str(args.reps),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        figures[f"threads_{threads}_s"] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        print(f"{threads} thread(s): {figures[f'threads_{threads}_s']:.3f} s per decision batch")
    fastest = min(figures, key=figures.get)
    print(
        json.dumps(
            {
                "model": args.model,
                "batch": args.batch,
                **figures,
                "fastest_threads": int(fastest.split("_")[1]),
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
