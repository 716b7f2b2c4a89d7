"""Learning benchmark: does PPO / GRPO through ``env.step`` improve the tiny Qwen2-VL policy?

Fixed easy built-in-world setting: short episodes (goal 0-2.5 m of walking away, success radius 1.0 m,
at most ``--max-steps`` decisions, so one or two decisions decide most episodes). The tiny model is trained
with PPO and with GRPO for a bounded number of iterations on world seed 0 episodes, then evaluated
greedily on held-out episodes (another world seed) next to the random agent, the oracle and the initial
(untrained) policy. Optionally a short supervised warm start on the expert's answers comes first
(``--sft-steps``, as VLN-R1 does before RL); the JSON says whether it was used.

    python scripts/bench_learning.py [--iterations 12] [--seed 0] [--sft-steps 0]

Prints one table row per agent (mean episode reward, success rate) and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from agents.evaluate import evaluate
from agents.ppo_train import PPOConfig, ppo_train, resolve_model_path, seed_everything
from vln_gym.world import WorldConfig, generate_episodes

EASY_WORLD = WorldConfig(min_path_length=0.0, max_path_length=1.5, success_distance=1.0)
TURN_ANGLE = 30.0  # degrees per turn (VLN-R1 data uses 30): a quarter turn takes 3 decisions
TRAIN_WORLD_SEED, HELDOUT_WORLD_SEED = 0, 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12, help="training iterations per algorithm")
    parser.add_argument("--seed", type=int, default=0, help="training and evaluation seed")
    parser.add_argument("--train-episodes", type=int, default=200, help="training episodes (world seed 0)")
    parser.add_argument("--eval-episodes", type=int, default=40, help="held-out episodes (world seed 1000)")
    parser.add_argument("--max-steps", type=int, default=12, help="decisions per episode")
    parser.add_argument("--image-size", type=int, default=112, help="frame height and width")
    parser.add_argument("--sft-steps", type=int, default=0, help="supervised warm start steps (0: none)")
    parser.add_argument("--lr", type=float, default=1e-2, help="policy (LoRA) learning rate")
    parser.add_argument("--out", default="runs/bench_learning", help="run directory")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def env_kwargs(episodes, args: argparse.Namespace) -> dict:
    return {
        "episodes": episodes,
        "views": "world",
        "action_space": "text",
        "max_steps": args.max_steps,
        "turn_angle": TURN_ANGLE,
        "image_size": (args.image_size, args.image_size),
    }


def train(algo: str, train_episodes, args: argparse.Namespace) -> tuple[str, float]:
    """Train one algorithm; returns (final checkpoint, seconds)."""
    started = time.perf_counter()
    ppo_specific = {"num_envs": 4, "rollout_steps": 6, "minibatch_size": 8, "ppo_epochs": 2}
    grpo_specific = {"num_envs": 8, "group_size": 4, "minibatch_size": 8, "ppo_epochs": 2}
    config = PPOConfig(
        output_dir=str(Path(args.out) / algo),
        algo=algo,
        seed=args.seed,
        num_iterations=args.iterations,
        save_every=0,
        env_kwargs=env_kwargs(train_episodes, args),
        lr=args.lr,
        value_lr=3e-3,
        kl_coef=0.01,
        sft_steps=args.sft_steps,
        sft_lr=1e-2,
        progress=False,
        tensorboard=False,
        **(ppo_specific if algo == "ppo" else grpo_specific),
    )
    result = ppo_train(config)
    return str(Path(result["checkpoint"]) / "policy"), time.perf_counter() - started


def initial_policy(args: argparse.Namespace) -> str:
    """The untrained policy as training starts it (fresh LoRA: B = 0, so exactly the base model)."""
    from agents.policy import VLMPolicy

    seed_everything(args.seed)
    path = Path(args.out) / "initial"
    policy = VLMPolicy.from_pretrained(resolve_model_path("tiny"), constrained_actions=True)
    policy.save_pretrained(path)
    return str(path)


def score(agent: str, checkpoint: str | None, heldout, args: argparse.Namespace) -> dict:
    result = evaluate(
        agent,
        checkpoint=checkpoint,
        env_kwargs=env_kwargs(heldout, args),
        num_episodes=None,
        seed=args.seed,
        plots=False,
    )
    rewards = [record["reward"] for record in result.episodes]
    return {
        "reward": sum(rewards) / len(rewards),
        "success_rate": result.metrics["success_rate"],
        "spl": result.metrics["spl"],
        "episodes": len(rewards),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_episodes = generate_episodes(
        TRAIN_WORLD_SEED, args.train_episodes, EASY_WORLD, turn_angle=TURN_ANGLE
    )
    heldout = generate_episodes(HELDOUT_WORLD_SEED, args.eval_episodes, EASY_WORLD, turn_angle=TURN_ANGLE)
    rows: dict[str, dict] = {}
    rows["random"] = score("random", None, heldout, args)
    rows["oracle"] = score("oracle", None, heldout, args)
    rows["initial_policy"] = score("policy", initial_policy(args), heldout, args)
    seconds = {}
    for algo in ("ppo", "grpo"):
        checkpoint, seconds[algo] = train(algo, train_episodes, args)
        rows[f"{algo}_trained"] = score("policy", checkpoint, heldout, args)
    print(f"held-out episodes: {len(heldout)} (world seed {HELDOUT_WORLD_SEED}), seed {args.seed}")
    print(f"{'agent':<16}{'reward':>10}{'success':>10}{'SPL':>8}")
    for name, row in rows.items():
        print(f"{name:<16}{row['reward']:>10.3f}{row['success_rate']:>10.3f}{row['spl']:>8.3f}")
    for algo, value in seconds.items():
        print(f"{algo}: {args.iterations} iterations in {value:.0f} s")
    summary = {
        "seed": args.seed,
        "iterations": args.iterations,
        "sft_steps": args.sft_steps,
        "lr": args.lr,
        "train_world_seed": TRAIN_WORLD_SEED,
        "heldout_world_seed": HELDOUT_WORLD_SEED,
        "heldout_episodes": len(heldout),
        "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
        **{
            f"{name}/{key}": value
            for name, row in rows.items()
            for key, value in row.items()
            if key != "episodes"
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
