"""Learning benchmark: does the tiny Qwen2-VL policy learn to navigate, and how much comes from SFT vs RL?

Setting: ``agents.presets`` on a built-in world level (``--level easy``: goals 1.5-3 m away, 45-degree turns,
0.5 m steps, 12 decisions; ``--level medium``: goals 3-8 m away, 30-degree turns, 0.25 m steps, 80
decisions). Training episodes come from world seed 0; every figure is measured on held-out episodes of
world seed 1000 (other floor plans, starts and goals), greedy decoding, the same episodes for every agent.
For each training seed (``--seeds 0 1 2``, ``--jobs`` of them at a time, one process and one thread each):

1. random agent and oracle (shortest path from privileged data); on easy, an instruction-only script
   (`OpeningTurnScript`: the opening turn the text names, four steps, STOP; what the text alone buys);
2. the untrained policy (the tiny model as built: random weights);
3. SFT: a supervised warm start on chunks of the expert's next actions (``learning_config("ppo")``'s first
   phase; answers of up to 8 actions, ``agents.presets``);
4. SFT + PPO through ``env.step`` (the same run, continued);
5. SFT + GRPO from the same SFT policy, groups starting where the level's preset starts them (easy: from
   reset, a group sees whole episodes of 1-3 chunked answers; medium: from mid-episode expert-prefix
   states); ``--grpo-starts expert_prefix reset`` runs each start side by side (``sft+grpo(START)``);
6. the SFT policy's unimodal ablations (Thomason et al. 2019; `agents.eval.ablation`): the same policy shown
   black frames (``sft, no frames``) or an empty instruction (``sft, no instruction``): what each input adds;
7. the SFT data check: greedy expert-action accuracy on held-out (observation, expert action) pairs.

Success is pooled over seeds x episodes with a 95% Wilson interval; SPL with a 95% normal interval over
the same episodes. Training CPU minutes per run: SFT + PPO and GRPO are the process's CPU time in
``ppo_train``; SFT alone is the CPU time up to the first PPO iteration's end less one mean PPO iteration
(the CPU time between iterations), PPO the rest.

    python scripts/bench_learning.py [--level easy|medium] [--seeds 0 1 2] [--jobs 2] [--iterations N]
        [--grpo-iterations N] [--eval-episodes 100] [--set lr=3e-4 ...] [--quick]

Prints one table row per agent and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

SCRIPTED = ("random", "oracle")


class OpeningTurnScript:
    """What the instruction's text alone buys on the built-in world: turn as its opening clause says
    (``left`` / ``right``: two turns, ``around``: three), walk ``forward`` steps, STOP; no frame is read.
    Turn counts and ``forward = 4`` are the best of a grid (1-2 / 3-4 turns, 2-6 steps) on 200 episodes of
    the training world (seed 0) at the easy level, where every turn count tied at 4 steps (0.345)."""

    name = "instruction-only script"
    action_space = "discrete"

    def __init__(self, turns: int = 2, around: int = 3, forward: int = 4) -> None:
        self.turns, self.around, self.forward = turns, around, forward
        self.plan: list[int] = []

    def reset(self, seed: int | None = None) -> None:
        self.plan = []

    def act(self, obs, info) -> int:
        if not self.plan:
            opening = str(obs["instruction"]).lower().split(",")[0].split(".")[0]
            turn = [TURN_LEFT] * self.around if "around" in opening else []
            if not turn and ("left" in opening or "right" in opening):
                turn = [TURN_LEFT if "left" in opening else TURN_RIGHT] * self.turns
            self.plan = [*turn, *[MOVE_FORWARD] * self.forward, STOP]
        return self.plan.pop(0)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` PPOConfig overrides; values are read as JSON where they parse (numbers, booleans)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes key=value, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=("easy", "medium"), default="easy", help="world level")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--jobs", type=int, default=1, help="training seeds run at a time (processes)")
    parser.add_argument("--iterations", type=int, default=None, help="RL iterations per algorithm")
    parser.add_argument(
        "--grpo-iterations",
        type=int,
        default=None,
        help="GRPO iterations (default: --iterations if given, else the preset's)",
    )
    parser.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes (world seed 1000)")
    parser.add_argument("--heldout-pairs", type=int, default=300, help="held-out SFT pairs")
    parser.add_argument(
        "--grpo-starts",
        nargs="+",
        default=None,
        choices=("expert_prefix", "reset"),
        help="where GRPO groups start, one run each (default: the preset's start for the level)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="PPOConfig overrides")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (presets quick=True)")
    parser.add_argument("--out", default="runs/bench_learning", help="run directory (replaced)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    args.overrides = parse_overrides(args.set)
    return args


def score(agent: Any, checkpoint: str | None, env_kwargs: dict, seed: int, ablate: str | None = None) -> dict:
    """Greedy evaluation on the held-out episodes (``ablate``: without that input): per-episode success, SPL
    and reward."""
    from agents.eval.evaluate import evaluate

    result = evaluate(
        agent,
        checkpoint=checkpoint,
        env_kwargs=env_kwargs,
        num_episodes=None,
        num_envs=4,
        seed=seed,
        plots=False,
        ablate=ablate,
    )
    return {
        "success": [float(r["metrics"]["success"]) for r in result.episodes],
        "spl": [float(r["metrics"]["spl"]) for r in result.episodes],
        "reward": [float(r["reward"]) for r in result.episodes],
    }


def sft_check(level: str, initial: str, sft: str, count: int, seed: int) -> dict:
    """Greedy accuracy on held-out (observation, expert answer) pairs before and after SFT: the answer parses
    to exactly the expert's chunk (its next actions, as many as one answer holds); majority: first actions."""
    from agents import presets
    from agents.policy.model import VLMPolicy
    from agents.train.envpool import make_env_pool
    from agents.train.sft import collect_expert_pairs, expert_accuracy

    paths = {"before": initial, "after": sft}
    policies = {
        name: VLMPolicy.from_pretrained(path, constrained_actions=True) for name, path in paths.items()
    }
    envs = make_env_pool("VLN-v0", presets.heldout_world_env_kwargs(level), 4)
    pairs = collect_expert_pairs(
        envs,
        count,
        seeds=[seed * 4 + k for k in range(4)],
        explore=0.1,
        rng=np.random.default_rng(seed),
        encode=policies["after"].grammar.encode,  # the answers it was taught: chunks of the expert's plan
    )
    envs.close()
    figures = {f"accuracy_{name}": expert_accuracy(policy, pairs) for name, policy in policies.items()}
    figures["majority_action_share"] = max(sum(p.action == a for p in pairs) for a in range(4)) / len(pairs)
    return figures


def timed(function, *args) -> tuple[Any, float]:
    """``function(*args)`` and the CPU seconds this process spent in it."""
    start = time.process_time()
    result = function(*args)
    return result, time.process_time() - start


def sft_then_ppo(config) -> tuple[dict, dict[str, float]]:
    """``ppo_train(config)`` and its CPU seconds split into the warm start and PPO (from the CPU clock at
    each iteration's end: SFT = up to the first end less one mean iteration)."""
    from agents.ppo_train import ppo_train

    marks: list[float] = []
    start = time.process_time()
    result = ppo_train(config, lambda _: marks.append(time.process_time()))
    total = time.process_time() - start
    per_iteration = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else 0.0
    sft = max(0.0, marks[0] - start - per_iteration)
    return result, {"sft": sft, "ppo": total - sft}


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """Every agent of one training seed (in its own process, one torch thread)."""
    import torch

    from agents import presets
    from agents.ppo_train import SFT_POLICY_DIR, ppo_train, save_initial_policy

    torch.set_num_threads(1)
    out = Path(args.out) / f"seed{seed}"
    overrides = {"seed": seed, "progress": False, **args.overrides}
    if args.iterations is not None:
        overrides["num_iterations"] = args.iterations
    config = presets.learning_config(out / "ppo", "ppo", quick=args.quick, level=args.level, **overrides)
    heldout = presets.heldout_env_kwargs(args.eval_episodes, level=args.level)
    rows = {agent: score(agent, None, heldout, seed) for agent in SCRIPTED}
    if args.level == "easy":  # the script's counts were chosen for the easy level's steps and turns
        rows["instruction-only script"] = score(lambda: OpeningTurnScript(), None, heldout, seed)
    initial = str(save_initial_policy(config, out / "initial"))
    rows["untrained"] = score("policy", initial, heldout, seed)
    ppo_result, cpu = sft_then_ppo(config)
    sft_dir = str(out / "ppo" / SFT_POLICY_DIR)
    rows["sft"] = score("policy", sft_dir, heldout, seed)
    for removed in ("frames", "instruction"):
        rows[f"sft, no {removed}"] = score("policy", sft_dir, heldout, seed, ablate=removed)
    rows["sft+ppo"] = score("policy", ppo_result["checkpoint"], heldout, seed)
    grpo_runs = grpo_configs(args, out, overrides, sft_dir)
    for name, grpo_config in grpo_runs:
        grpo_result, cpu[name.removeprefix("sft+")] = timed(ppo_train, grpo_config)
        rows[name] = score("policy", grpo_result["checkpoint"], heldout, seed)
    grpo = {
        "iterations": grpo_runs[0][1].num_iterations,
        "start": " / ".join(c.grpo_start for _, c in grpo_runs),
    }
    check = sft_check(args.level, initial, sft_dir, args.heldout_pairs, seed)
    result = {"seed": seed, "rows": rows, "cpu_seconds": cpu, "sft_check": check}
    (out / "result.json").write_text(json.dumps(result))  # per seed, as soon as it is done
    return {**result, "config": config, "grpo": grpo}


def grpo_configs(args: argparse.Namespace, out: Path, overrides: dict, sft_dir: str) -> list[tuple[str, Any]]:
    """(row name, config) of each GRPO run from the SFT policy: one per ``--grpo-starts`` entry, default the
    level preset's start (row ``sft+grpo``; with several starts ``sft+grpo(START)``); iterations from
    ``--grpo-iterations``, else ``--iterations``, else the preset's."""
    from agents import presets

    grpo_overrides = {**overrides, "model_name_or_path": sft_dir, "sft_steps": 0}
    if args.grpo_iterations is not None:
        grpo_overrides["num_iterations"] = args.grpo_iterations
    preset = presets.learning_config(
        out / "grpo", "grpo", quick=args.quick, level=args.level, **grpo_overrides
    )
    starts = args.grpo_starts or [preset.grpo_start]
    runs = []
    for start in starts:
        name = "sft+grpo" if len(starts) == 1 else f"sft+grpo({start})"
        folder = out / ("grpo" if len(starts) == 1 else f"grpo_{start}")
        runs.append((name, replace(preset, output_dir=str(folder), grpo_start=start)))
    return runs


def pooled(rows_per_seed: list[dict], agent: str) -> dict:
    """Success (Wilson) and SPL (normal) 95% intervals over every seed's episodes, and per-seed success."""
    from agents.eval.intervals import mean_interval, wilson_interval

    success = [s for rows in rows_per_seed for s in rows[agent]["success"]]
    spl = [s for rows in rows_per_seed for s in rows[agent]["spl"]]
    return {
        "success": float(np.mean(success)),
        "success_ci": wilson_interval(sum(success), len(success)),
        "spl": float(np.mean(spl)),
        "spl_ci": mean_interval(spl, bounds=(0.0, 1.0)),  # SPL lies in [0, 1]
        "reward": float(np.mean([r for rows in rows_per_seed for r in rows[agent]["reward"]])),
        "per_seed_success": [float(np.mean(rows[agent]["success"])) for rows in rows_per_seed],
        "episodes": len(success),
    }


def run_all(args: argparse.Namespace) -> list[dict]:
    """`run_seed` for every seed, ``--jobs`` processes at a time (spawned: no torch state is forked)."""
    if args.jobs == 1 or len(args.seeds) == 1:
        return [run_seed(args, seed) for seed in args.seeds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(args.seeds)), mp_context=context) as pool:
        return list(pool.map(run_seed, [args] * len(args.seeds), args.seeds))


def print_table(args: argparse.Namespace, table: dict[str, dict], cpu: dict[str, list[float]]) -> None:
    cpu_of = {agent: ["sft", agent.removeprefix("sft+")] for agent in table if agent.startswith("sft+")}
    cpu_of["sft"] = ["sft"]
    seeds = " ".join(f"{f's{seed}':>6}" for seed in args.seeds)
    print(f"{'agent':<17}{seeds} {'success [95% CI]':>22} {'SPL [95% CI]':>22} {'train CPU min':>14}")
    for agent, row in table.items():
        per_seed = " ".join(f"{s:>6.2f}" for s in row["per_seed_success"])
        lo, hi = row["success_ci"]
        spl_lo, spl_hi = row["spl_ci"]
        minutes = (
            f"{np.mean([sum(cpu[p][i] for p in cpu_of[agent]) for i in range(len(args.seeds))]) / 60:.1f}"
            if agent in cpu_of
            else "-"
        )
        print(
            f"{agent:<17}{per_seed} {row['success']:>6.3f} [{lo:.3f}, {hi:.3f}] "
            f"{row['spl']:>6.3f} [{spl_lo:.3f}, {spl_hi:.3f}] {minutes:>14}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    results = run_all(args)
    agents = list(results[0]["rows"])
    table = {agent: pooled([r["rows"] for r in results], agent) for agent in agents}
    cpu = {phase: [r["cpu_seconds"][phase] for r in results] for phase in results[0]["cpu_seconds"]}
    config, grpo = results[0]["config"], results[0]["grpo"]
    print(
        f"level {args.level}: {args.eval_episodes} held-out episodes of world seed 1000 per seed "
        f"(training: world seed 0); seeds {' '.join(map(str, args.seeds))}; SFT {config.sft_steps} steps on "
        f"{config.sft_samples} pairs, PPO {config.num_iterations} iterations, "
        f"GRPO {grpo['iterations']} (groups from {grpo['start']})"
    )
    print_table(args, table, cpu)
    checks = {key: [r["sft_check"][key] for r in results] for key in results[0]["sft_check"]}
    pairs = zip(checks["accuracy_before"], checks["accuracy_after"], strict=True)
    print(
        "held-out expert-action accuracy before -> after SFT, per seed: "
        + ", ".join(f"{before:.2f} -> {after:.2f}" for before, after in pairs)
        + f" (majority action {np.mean(checks['majority_action_share']):.2f})"
    )
    print(f"CPU seconds per run: {json.dumps({k: [round(v) for v in vs] for k, vs in cpu.items()})}")
    summary = {
        "level": args.level,
        "seeds": args.seeds,
        "quick": args.quick,
        "overrides": args.overrides,
        "rl_iterations": config.num_iterations,
        "grpo_iterations": grpo["iterations"],
        "grpo_start": grpo["start"],
        "action_style": config.action_style,
        "max_actions_per_turn": config.max_actions_per_turn,
        "sft_steps": config.sft_steps,
        "sft_samples": config.sft_samples,
        "heldout_episodes_per_seed": args.eval_episodes,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": {k: [round(v, 1) for v in vs] for k, vs in cpu.items()},
        "sft_check": checks,
        **{f"{agent}/{key}": value for agent, row in table.items() for key, value in row.items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
