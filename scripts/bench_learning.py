"""Learning benchmark: does the tiny Qwen2-VL policy learn to navigate, and how much comes from SFT vs RL?

Setting: ``agents.presets`` (easy built-in world: goals 1.5-3 m away, success within 1 m, 45-degree turns,
0.5 m steps, 12 decisions, every frame of the episode in the prompt). Training episodes come from world
seed 0; every figure below is measured on held-out episodes of world seed 1000 (other floor plans,
starts and goals), greedy decoding, the same episodes for every agent.

1. random agent and oracle (shortest path from privileged data);
2. the initial policy (the tiny model as built: random weights);
3. PPO run of ``learning_config("ppo")``: a supervised warm start on the expert's next actions (SFT; the
   policy right after it is saved as ``sft_policy`` and scored on its own), then PPO through ``env.step``;
4. GRPO runs of ``learning_config("grpo")`` starting from the same SFT policy (no second warm start): groups
   starting at reset (the preset) and, side by side, groups branching from expert-prefix states
   (``grpo_start=expert_prefix``, the world-mode default);
5. the SFT data check: expert-action NLL and greedy accuracy on held-out (observation, expert action)
   pairs, before and after the warm start.

    python scripts/bench_learning.py [--iterations 40] [--seed 0] [--eval-episodes 100] [--quick]

Prints one table row per agent (mean episode reward, success rate, SPL) and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from agents import presets
from agents.eval.evaluate import evaluate
from agents.ppo_train import SFT_POLICY_DIR, ppo_train, save_initial_policy


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None, help="RL iterations per algorithm")
    parser.add_argument("--seed", type=int, default=0, help="training and evaluation seed")
    parser.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes (world seed 1000)")
    parser.add_argument("--heldout-pairs", type=int, default=300, help="held-out SFT pairs")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (presets quick=True)")
    parser.add_argument("--out", default="runs/bench_learning", help="run directory (replaced)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest here)")
    return parser.parse_args(argv)


def score(agent: str, checkpoint: str | None, env_kwargs: dict, seed: int) -> dict:
    result = evaluate(
        agent,
        checkpoint=checkpoint,
        env_kwargs=env_kwargs,
        num_episodes=None,
        num_envs=4,
        seed=seed,
        plots=False,
    )
    rewards = [record["reward"] for record in result.episodes]
    return {
        "reward": float(np.mean(rewards)),
        "success_rate": float(result.metrics["success_rate"]),
        "spl": float(result.metrics["spl"]),
        "episodes": len(rewards),
    }


def initial_policy(out: Path, config) -> str:
    """The policy as training starts it (full fine-tuning: exactly the tiny model's weights)."""
    return str(save_initial_policy(config, out / "initial"))


def sft_check(initial: str, sft: str, count: int, seed: int) -> dict:
    """Expert-action NLL / greedy accuracy on held-out (observation, expert action) pairs."""
    from agents.policy.model import VLMPolicy
    from agents.train.envpool import make_env_pool
    from agents.train.sft import collect_expert_pairs, expert_accuracy, heldout_loss

    envs = make_env_pool("VLN-v0", presets.heldout_world_env_kwargs(), 4)
    pairs = collect_expert_pairs(
        envs, count, seeds=[seed * 4 + k for k in range(4)], explore=0.1, rng=np.random.default_rng(seed)
    )
    envs.close()
    figures = {}
    for name, path in (("before", initial), ("after", sft)):
        policy = VLMPolicy.from_pretrained(path, constrained_actions=True)
        figures[f"heldout_nll_{name}"] = heldout_loss(policy, pairs)
        figures[f"heldout_accuracy_{name}"] = expert_accuracy(policy, pairs)
    majority = max(sum(p.action == a for p in pairs) for a in range(4)) / len(pairs)
    return {**figures, "heldout_pairs": len(pairs), "majority_action_share": majority}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    overrides = {"seed": args.seed, "progress": False}
    if args.iterations is not None:
        overrides["num_iterations"] = args.iterations
    ppo_config = presets.learning_config(out / "ppo", "ppo", quick=args.quick, **overrides)
    heldout = presets.heldout_env_kwargs(args.eval_episodes)
    started = time.perf_counter()
    rows: dict[str, dict] = {}
    rows["random"] = score("random", None, heldout, args.seed)
    rows["oracle"] = score("oracle", None, heldout, args.seed)
    initial = initial_policy(out, ppo_config)
    rows["initial_policy"] = score("policy", initial, heldout, args.seed)

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ppo_result = ppo_train(ppo_config)
    seconds["sft+ppo"] = time.perf_counter() - start
    sft_dir = str(out / "ppo" / SFT_POLICY_DIR)
    sft_report = json.loads((out / "ppo" / "sft.json").read_text())
    seconds["sft"] = sft_report["sft/seconds"]
    rows["sft_policy"] = score("policy", sft_dir, heldout, args.seed)
    rows["ppo_trained"] = score("policy", ppo_result["checkpoint"], heldout, args.seed)

    # GRPO from the same SFT policy, twice, side by side (same seed and budget): groups starting at reset (the
    # preset: 12-decision episodes, so a reset group already sees every state) and groups branching from
    # expert-prefix states (the world-mode default, ActiveVLN's recipe for long episodes)
    for start_mode, name in (("reset", "grpo"), ("expert_prefix", "grpo_prefix")):
        grpo_config = presets.learning_config(
            out / name,
            "grpo",
            quick=args.quick,
            model_name_or_path=sft_dir,
            sft_steps=0,
            grpo_start=start_mode,
            **overrides,
        )
        start = time.perf_counter()
        grpo_result = ppo_train(grpo_config)
        seconds[name] = time.perf_counter() - start
        rows[f"{name}_trained"] = score("policy", grpo_result["checkpoint"], heldout, args.seed)
    check = sft_check(initial, sft_dir, args.heldout_pairs, args.seed)

    print(
        f"held-out: {args.eval_episodes} episodes of world seed {presets.HELDOUT_WORLD_SEED} "
        f"(training: world seed {presets.TRAIN_WORLD_SEED}); seed {args.seed}"
    )
    print(f"{'agent':<16}{'reward':>10}{'success':>10}{'SPL':>8}")
    for name, row in rows.items():
        print(f"{name:<16}{row['reward']:>10.3f}{row['success_rate']:>10.3f}{row['spl']:>8.3f}")
    print(
        f"SFT: {ppo_config.sft_steps} steps on {ppo_config.sft_samples} expert pairs "
        f"in {seconds['sft']:.0f} s; "
        f"held-out expert-action accuracy {check['heldout_accuracy_before']:.3f} -> "
        f"{check['heldout_accuracy_after']:.3f} (majority action {check['majority_action_share']:.3f}), "
        f"NLL {check['heldout_nll_before']:.3f} -> {check['heldout_nll_after']:.3f}"
    )
    print(
        f"RL: {ppo_config.num_iterations} iterations each; "
        f"PPO (after SFT) {seconds['sft+ppo'] - seconds['sft']:.0f} s, GRPO {seconds['grpo']:.0f} s "
        f"(from expert prefixes {seconds['grpo_prefix']:.0f} s); "
        f"total {time.perf_counter() - started:.0f} s"
    )
    summary = {
        "seed": args.seed,
        "quick": args.quick,
        "rl_iterations": ppo_config.num_iterations,
        "sft_steps": ppo_config.sft_steps,
        "sft_samples": ppo_config.sft_samples,
        "train_world_seed": presets.TRAIN_WORLD_SEED,
        "heldout_world_seed": presets.HELDOUT_WORLD_SEED,
        "heldout_episodes": args.eval_episodes,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
        **{f"sft_check/{k}": v for k, v in check.items()},
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
