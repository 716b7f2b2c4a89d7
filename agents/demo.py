"""`vln-gym demo`: the project's front door, end to end on the built-in world, CPU only, no downloads.

The setting is ``agents.presets`` (the easy built-in world: goals 1.5-3 m away, 45-degree turns, 0.5 m
steps, 12 decisions, answers of up to 8 actions). Steps: build the tiny Qwen2-VL; generate held-out
episodes (world seed 1000, floor plans never trained on); score the random and oracle agents and the
untrained policy on them; train the policy (a supervised warm start on the expert's actions, then GRPO,
or PPO with ``--algo ppo``, through ``env.step``: ``presets.learning_config``); score the warm-started and
the RL-trained policy on the same episodes; write ``OUT/report.md`` (comparison table, learning curve,
trajectory maps, a plain-language summary). GRPO is the default because it shows learning best here
(``scripts/bench_learning.py``, three training seeds: SFT 0.28, SFT+GRPO 0.39 held-out success after
1.5 CPU minutes of RL, SFT+PPO 0.24 after 3).

The stable-baselines3 pixel baseline is not part of the demo: on this machine 2k SB3 steps take ~47 s
(one core) and a useful run needs ~10^5, far beyond the demo's minutes
(``python -m agents.eval.sb3_baseline``).
A step that fails is reported, the steps that need its output are skipped, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import presets
from agents.eval import report
from vln_gym.safe_files import OutputExistsError, atomic_write_text, check_replaceable, writable_folder

TABLE_COLUMNS = ("success_rate", "spl", "navigation_error", "ndtw", "reward", "steps")
LEARNING_CURVE = {
    "episode/return": "training episodes: mean reward",
    "episode/success_rate": "training episodes: success rate",
}
AGENTS: dict[str, str] = {
    "random": "picks one of the four actions uniformly at random at every step (the floor).",
    "oracle": (
        "follows the shortest path computed from privileged information the policy never sees (the map "
        "and the goal's position): the ceiling."
    ),
    "untrained": (
        "the tiny vision-language model (227k parameters) as built, with random weights: it reads the "
        "instruction and the frames and answers with an action, but has learned nothing."
    ),
    "sft": (
        "the same model after the supervised warm start (SFT): trained to copy the expert's next actions "
        "(up to 8 per answer) on training episodes. This is imitation, not reinforcement learning."
    ),
    "sft+grpo": (
        "the SFT model after GRPO: reinforcement learning from the env's rewards, acting in training "
        "episodes through env.step; each group of episodes starts from the same state and every answer is "
        "scored against the group's mean return."
    ),
    "sft+ppo": (
        "the SFT model after PPO: reinforcement learning from the env's rewards, acting in training "
        "episodes through env.step, with a learned value baseline."
    ),
}
ALGOS = ("grpo", "ppo")
SPL_NOTE = "SPL weights each success by how direct the path was"


class StepSkipped(Exception):
    """A step cannot run because an earlier step it needs did not produce its output."""


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run; ``quick`` is the smoke-test size (about a minute on 2 cores)."""

    quick: bool
    eval_episodes: int
    eval_num_envs: int
    curve_every: int  # RL iterations between checkpoints scored on the held-out episodes (0: none)
    seed: int = 0
    algo: str = "grpo"  # the RL after the warm start: grpo or ppo

    @classmethod
    def for_mode(cls, quick: bool, seed: int = 0, algo: str = "grpo") -> DemoSettings:
        if algo not in ALGOS:
            raise ValueError(f"demo algo must be one of {', '.join(ALGOS)}, got {algo!r}")
        if quick:
            return cls(quick=True, eval_episodes=8, eval_num_envs=4, curve_every=0, seed=seed, algo=algo)
        every = 25 if algo == "grpo" else 10  # 3 points inside the run (GRPO 100 iterations, PPO 40)
        return cls(quick=False, eval_episodes=200, eval_num_envs=8, curve_every=every, seed=seed, algo=algo)

    @property
    def rl(self) -> str:
        """The RL algorithm's name as printed (GRPO, PPO)."""
        return self.algo.upper()

    @property
    def trained(self) -> str:
        """The label of the RL-trained policy (sft+grpo, sft+ppo)."""
        return f"sft+{self.algo}"


@dataclass
class DemoState:
    """What the steps produce, for the next steps and the report."""

    out: Path
    settings: DemoSettings
    tiny_model: Path | None = None
    heldout: dict[str, Any] | None = None  # env kwargs of the held-out episodes
    config: Any = None  # the PPOConfig of the training step (algo ppo or grpo)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> metrics.json
    truncated_failures: dict[str, int] = field(default_factory=dict)  # label -> failures out of steps
    eval_dirs: dict[str, Path] = field(default_factory=dict)
    train_dir: Path | None = None
    sft_policy: Path | None = None
    checkpoint: Path | None = None
    train_seconds: float | None = None
    heldout_curve: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (RL iteration, metrics)
    example_instruction: str = "Turn left, then head forward and wait near the white pillar."
    notes: list[str] = field(default_factory=list)


def _configure_runtime() -> None:
    """One torch thread (the tiny model's matrices are small: on a shared 2-core machine more threads
    only contend; measured 13 ms vs 65-2000 ms per decision under load), offline hub, and a readable
    console: no per-load progress bars or deprecation chatter from transformers."""
    import warnings

    import torch

    torch.set_num_threads(1)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _say(text: str = "") -> None:
    print(text, flush=True)


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def success_interval(metrics: Mapping[str, Any]) -> tuple[float, float]:
    """95% confidence interval of the success rate, clipped to [0, 1]."""
    low, high = metrics["ci95"]["success_rate"]
    return max(0.0, low), min(1.0, high)


# ---------------------------------------------------------------- steps


def step_tiny_model(state: DemoState) -> None:
    from agents.policy.tiny import ensure_tiny_model

    state.tiny_model = ensure_tiny_model()
    _say(f"    model: {state.tiny_model}")


def step_episodes(state: DemoState) -> None:
    n = state.settings.eval_episodes
    state.heldout = presets.heldout_env_kwargs(n)
    first = state.heldout["episodes"][0]
    state.example_instruction = first.instruction
    _say(
        f"    {n} held-out episodes from world seed {presets.HELDOUT_WORLD_SEED} "
        f"(training uses world seed {presets.TRAIN_WORLD_SEED}: other floor plans)"
    )
    _say(
        f"    each: goal {_world_range()} of walking away, success = STOP within "
        f"{presets.EASY_WORLD_CONFIG['success_distance']:g} m, at most {presets.MAX_STEPS} decisions"
    )
    _say(f'    e.g. "{first.instruction}"')


def _world_range() -> str:
    config = presets.EASY_WORLD_CONFIG
    return f"{config['min_path_length']:g}-{config['max_path_length']:g} m"


def _evaluate(
    state: DemoState, label: str, agent: str, checkpoint: Path | None = None, *, in_table: bool = True
) -> dict[str, Any]:
    """Score ``agent`` on the held-out episodes; ``in_table``: a row of the comparison (files + pictures
    in OUT/eval/LABEL), else metrics only (a point of the held-out learning curve)."""
    from agents.eval.evaluate import evaluate

    if state.heldout is None:
        raise StepSkipped("no held-out episodes (the episode step did not run)")
    settings = state.settings
    out = state.out / "eval" / label.replace("+", "_") if in_table else None
    started = time.perf_counter()
    result = evaluate(
        agent,
        checkpoint=checkpoint,
        env_kwargs=state.heldout,
        num_episodes=None,
        num_envs=settings.eval_num_envs,
        seed=settings.seed,
        out_dir=out,
        label=label,
        plots=in_table,
        overwrite=True,  # the demo owns runs/demo
    )
    m = result.metrics
    if out is not None:
        state.results[label] = m
        state.eval_dirs[label] = out
        state.truncated_failures[label] = sum(
            1 for r in result.episodes if r["truncated"] and not r["metrics"]["success"]
        )
    low, high = success_interval(m)
    _say(
        f"    {label:<9} success {_pct(m['success_rate']):>4} (95% CI {_pct(low)}-{_pct(high)}), "
        f"SPL {_pct(m['spl']):>4}, final distance {m['navigation_error']:.2f} m, "
        f"reward {m['reward']:+.2f}  [{time.perf_counter() - started:.0f}s]"
    )
    return m


def step_baselines(state: DemoState) -> None:
    _evaluate(state, "random", "random")
    _evaluate(state, "oracle", "oracle")


def step_untrained(state: DemoState) -> None:
    from agents.ppo_train import save_initial_policy

    untrained = save_initial_policy(_learning_config(state), state.out / "untrained")
    _evaluate(state, "untrained", "policy", untrained)


def _learning_config(state: DemoState) -> Any:
    if state.config is None:
        overrides: dict[str, Any] = {"seed": state.settings.seed, "progress": False}
        if state.settings.curve_every > 0:  # keep every checkpoint: the held-out learning curve scores them
            overrides.update(save_every=state.settings.curve_every, keep_checkpoints=0)
        algo = state.settings.algo
        if state.settings.quick and algo == "ppo":  # whole episodes in the smoke test: the curve has points
            overrides["rollout_steps"] = presets.MAX_STEPS
        state.config = presets.learning_config(
            state.out / algo, algo, quick=state.settings.quick, **overrides
        )
    return state.config


def step_train(state: DemoState) -> None:
    from agents.ppo_train import SFT_POLICY_DIR, ppo_train

    config = _learning_config(state)
    train_dir = Path(config.output_dir)
    if train_dir.exists():
        shutil.rmtree(train_dir)  # a fresh run each time (resume is `vln-gym train --resume_from`)
    expected = "a few seconds" if state.settings.quick else "about 2-3 minutes"
    _say(
        f"    a) imitation: {config.sft_steps} supervised steps on {config.sft_samples} examples of "
        f"(frames + instruction -> expert's next actions)"
    )
    _say(f"       from training world seed {presets.TRAIN_WORLD_SEED} ({expected}, quiet meanwhile)")
    rl = state.settings.rl
    if config.algo == "grpo":
        start = "reset" if config.grpo_start == "reset" else "mid-episode expert states"
        groups = config.num_envs // config.group_size
        rollout = f"{groups} groups of {config.group_size} episodes from {start}"
    else:
        rollout = f"{config.num_envs} envs x {config.rollout_steps} decisions"
    _say(f"    b) {rl}: {config.num_iterations} iteration(s) x {rollout}, rewards from env.step")
    _say("       (scores below: the training episodes played, with sampled actions)")
    _say(f"    log: {train_dir / 'metrics.jsonl'}")
    every = max(1, config.num_iterations // 8)
    started = time.perf_counter()

    def show(metrics: dict[str, Any]) -> None:
        iteration = int(metrics["iteration"])
        if iteration == 1 or iteration % every == 0 or iteration == config.num_iterations:
            reward, success = metrics.get("episode/return"), metrics.get("episode/success_rate")
            scores = (
                f"episode reward {reward:+6.2f}, success {_pct(success):>4}"
                if _finite(reward) and _finite(success)
                else "no episode finished in this iteration's rollout"
            )
            _say(
                f"       {rl} iteration {iteration:>3}/{config.num_iterations}: {scores}   "
                f"[{time.perf_counter() - started:.0f}s]"
            )

    result = ppo_train(config, on_iteration=show)
    state.train_seconds = time.perf_counter() - started
    state.train_dir = train_dir
    state.sft_policy = train_dir / SFT_POLICY_DIR
    state.checkpoint = Path(result["checkpoint"])
    _say(f"    policies: {state.sft_policy} (after imitation), {state.checkpoint} (after {rl})")


def step_evaluate_trained(state: DemoState) -> None:
    if state.checkpoint is None or state.sft_policy is None:
        raise StepSkipped("no trained policy (the training step did not run)")
    from agents.train.checkpoint import checkpoint_dir

    state.heldout_curve = [(0, _evaluate(state, "sft", "policy", state.sft_policy))]
    every, total = state.settings.curve_every, state.config.num_iterations
    for iteration in range(every, total, every) if every > 0 else ():
        path = checkpoint_dir(state.config.output_dir, iteration)
        metrics = _evaluate(state, f"{state.settings.rl} {iteration}", "policy", path, in_table=False)
        state.heldout_curve.append((iteration, metrics))
    final = _evaluate(state, state.settings.trained, "policy", state.checkpoint)
    state.heldout_curve.append((total, final))


def step_report(state: DemoState) -> None:
    path = write_demo_report(state)
    _say(f"    wrote {path}")


STEPS: tuple[tuple[str, str, Callable[[DemoState], None]], ...] = (
    (
        "Build the tiny Qwen2-VL",
        "a small random vision-language model, built offline and cached",
        step_tiny_model,
    ),
    (
        "Held-out episodes",
        "every agent is scored on the same episodes, in floor plans training never sees",
        step_episodes,
    ),
    (
        "Baselines",
        "random (the floor) and oracle (shortest path from privileged data: the ceiling)",
        step_baselines,
    ),
    ("Untrained policy", "the tiny model before any training", step_untrained),
    ("Train", "imitation warm start on expert actions, then RL on the env's rewards", step_train),
    (
        "Evaluate the trained policy",
        "after imitation (sft), at RL checkpoints, and at the end",
        step_evaluate_trained,
    ),
    ("Report", "table, learning curve, trajectory maps and what the numbers mean", step_report),
)


# ---------------------------------------------------------------- report


def _noise(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Half width of a 95% interval of the difference of two success rates (independent normal approx.)."""
    pa, pb = a["success_rate"], b["success_rate"]
    return 1.96 * math.sqrt(pa * (1 - pa) / a["episodes"] + pb * (1 - pb) / b["episodes"])


def _difference(before: Mapping[str, Any], after: Mapping[str, Any], what: str) -> str:
    """A sentence on how ``what`` changed success from ``before`` to ``after``, honest about noise."""
    change = after["success_rate"] - before["success_rate"]
    noise = _noise(before, after)
    points = f"{100 * abs(change):.0f} points"
    if change == 0 and noise == 0:
        return f"{what} did not change success ({_pct(before['success_rate'])})"
    if abs(change) <= noise:
        return (
            f"{what} changed success by {100 * change:+.0f} points, within the noise of "
            f"{after['episodes']} episodes (about +-{100 * noise:.0f} points)"
        )
    direction = "raised" if change > 0 else "lowered"
    return (
        f"{what} {direction} success by {points} ({_pct(before['success_rate'])} -> "
        f"{_pct(after['success_rate'])}; noise about +-{100 * noise:.0f} points)"
    )


def _reward_terms() -> str:
    w = presets.EASY_REWARDS
    return (
        f"+{w['success']:g} for stopping at the goal, +{w['progress']:g} for each {presets.FORWARD_STEP:g} m "
        f"of progress towards it (minus for moving away), -{w['step_cost']:g} per decision, "
        f"-{w['wrong_stop']:g} for a STOP away from the goal, -{w['collision']:g} per bump into a wall"
    )


def explain(state: DemoState) -> str:
    """The plain-language section: task, agents, what the numbers mean, what training did."""
    r, settings = state.results, state.settings
    config = presets.EASY_WORLD_CONFIG
    task = (
        "**The task.** An agent stands somewhere in a small generated floor plan (rooms, doorways, coloured "
        f'landmarks) and is given an instruction (for example *"{state.example_instruction}"*). At each '
        f"step it sees a {presets.IMAGE_SIZE}x{presets.IMAGE_SIZE} first-person picture (plus the earlier "
        f"ones) and answers with up to {presets.MAX_ACTIONS_PER_TURN} actions in a row (for example *turn "
        f"left 90 degrees, move forward 150 cm, stop*), each one a move forward of {presets.FORWARD_STEP:g} "
        f"m, a turn left or right of {presets.TURN_ANGLE:g} degrees, or STOP. It succeeds if it says STOP "
        f"within {config['success_distance']:g} m of the goal, using at most {presets.MAX_STEPS} answers. "
        f"Goals are {_world_range()} of walking away. All agents are scored on the same "
        f"{settings.eval_episodes} episodes from floor plans never used in training (world seed "
        f"{presets.HELDOUT_WORLD_SEED}; training uses seed {presets.TRAIN_WORLD_SEED})."
    )
    agents = "**The agents.**\n\n" + "\n".join(
        f"- **{label}**: {AGENTS[label]}" for label in AGENTS if label in r
    )
    numbers = (
        "**The numbers.** SR (success rate) is the share of episodes that end with STOP close enough to "
        f"the goal; {SPL_NOTE} (100% = as short as the shortest path, 0 for a failure); NE is the final "
        "distance to the goal in metres (lower is better); nDTW (0-100%) is how closely the path follows "
        f"the reference route; reward is the env's summed reward per episode ({_reward_terms()}); "
        "steps counts moves and turns. The rates are noisy: with "
        f"{settings.eval_episodes} episodes a success rate near 25% is only known to about +-"
        f"{100 * 1.96 * math.sqrt(0.25 * 0.75 / settings.eval_episodes):.0f} points (the 95% intervals are "
        "under the table)."
    )
    parts = [task, agents, numbers]
    parts.append(
        "A non-language baseline (stable-baselines3 PPO on the pixels) is not run here: a useful run needs "
        "about 10^5 env steps, far beyond the demo's minutes; train and evaluate it with "
        "`python -m agents.eval.sb3_baseline` and "
        "`vln-gym evaluate --agent sb3 --checkpoint FILE.zip --trust-checkpoint`."
    )
    if "oracle" in r and r["oracle"]["success_rate"] < 1.0:
        missed = round((1 - r["oracle"]["success_rate"]) * r["oracle"]["episodes"])
        truncated = state.truncated_failures.get("oracle", 0)
        because = ""
        if truncated and truncated == missed:
            because = f": their shortest route needs more than the {presets.MAX_STEPS} decisions allowed"
        elif truncated:
            because = f" ({truncated} of them run out of the {presets.MAX_STEPS} decisions allowed)"
        parts.append(f"The oracle misses {missed} of {r['oracle']['episodes']} episodes{because}.")
    trained, rl = settings.trained, settings.rl
    if {"untrained", "sft", trained} <= set(r):
        findings = [
            _difference(r["untrained"], r["sft"], "imitation (SFT)"),
            _difference(r["sft"], r[trained], f"{rl} on top of it"),
        ]
        why = ""
        if "random" in r:
            why = (
                " Training starts with imitation because a policy with random weights almost never reaches "
                f"the goal by chance (the random agent: {_pct(r['random']['success_rate'])}), so {rl} alone "
                f"would rarely see the +{presets.EASY_REWARDS['success']:g} success reward it learns from."
            )
        gap = ""
        if "oracle" in r and r[trained]["success_rate"] < r["oracle"]["success_rate"] - 0.2:
            gap = (
                f" The trained policy stays far below the oracle ({_pct(r['oracle']['success_rate'])}): a "
                "227k-parameter model trained for a few CPU minutes shows that the loop works end to end "
                "(observations in, actions out, rewards back, weights updated), not that it navigates well."
            )
        parts.append(
            f"**What training did.** {findings[0][0].upper()}{findings[0][1:]}; {findings[1]}.{why}{gap}"
        )
    if settings.quick:
        parts.append(
            "**This is a `--quick` run** (a smoke test: a few training steps, "
            f"{settings.eval_episodes} episodes): the numbers mean nothing; run `vln-gym demo` for real ones."
        )
    return "\n\n".join(parts)


def _learning_curve_section(state: DemoState) -> str:
    """Held-out success at each scored checkpoint (``heldout_curve.png``) and the training rollouts' reward
    and success per RL iteration from metrics.jsonl (``learning_curve.png``); empty without either."""
    rl, trained = state.settings.rl, state.settings.trained
    parts = []
    if len(state.heldout_curve) > 1:
        points = [(it, m["success_rate"], *success_interval(m)) for it, m in state.heldout_curve]
        references = {
            label: state.results[label]["success_rate"]
            for label in ("random", "untrained")
            if label in state.results
        }
        report.plot_success_curve(
            points,
            state.out / "heldout_curve.png",
            references=references,
            title=f"success on the {state.settings.eval_episodes} held-out episodes (greedy actions)",
            xlabel=f"{rl} iteration (0 = after the imitation warm start)",
        )
        parts.append(
            f"Success on the held-out episodes of the policy after {rl} iteration "
            + ", ".join(str(iteration) for iteration, _ in state.heldout_curve)
            + f" (0 is the imitation-only policy, `sft`; the last one is `{trained}`), with 95% intervals; "
            "dashed lines: the random agent and the "
            "untrained policy.\n\n![held-out learning curve](heldout_curve.png)"
        )
    log = state.train_dir / "metrics.jsonl" if state.train_dir is not None else None
    if log is not None and log.is_file():
        try:
            report.plot_learning_curve(
                report.read_jsonl(log),
                state.out / "learning_curve.png",
                keys=tuple(LEARNING_CURVE),
                titles=LEARNING_CURVE,
            )
        except ValueError as error:
            parts.append(f"Training curve not plotted: {error}")
        else:
            seconds = f" ({state.train_seconds:.0f} s of training in all)" if state.train_seconds else ""
            parts.append(
                f"From the training log `{log.relative_to(state.out)}`{seconds}: each point is one {rl} "
                "iteration, the mean reward and success rate of the training episodes the policy played "
                "in it (training floor plans, actions sampled at "
                "temperature 1). Few episodes per point and random sampling make it noisy (the red line is "
                "a running mean): judge progress by the held-out scores, not by this curve."
                "\n\n![learning curve](learning_curve.png)"
            )
    return "\n\n".join(parts)


def _instructions(state: DemoState) -> str:
    """The instructions of the pictured episodes, as a markdown list (empty without episodes)."""
    if state.heldout is None:
        return ""
    from agents.eval.evaluate import plotted_indices

    episodes = state.heldout["episodes"]
    lines = [
        f"- `{episodes[i].episode_id}`: {episodes[i].instruction}"
        for i in plotted_indices(len(episodes), state.settings.seed)
    ]
    return " Their instructions:\n\n" + "\n".join(lines)


def write_demo_report(state: DemoState) -> Path:
    """OUT/report.md: summary, comparison table, learning curve, trajectory maps."""
    sections = [("What you are looking at", explain(state))]
    if state.results:
        intervals = ", ".join(
            f"{label} {_pct(success_interval(m)[0])}-{_pct(success_interval(m)[1])}"
            for label, m in state.results.items()
        )
        sections.append(
            (
                "Comparison on the held-out episodes",
                report.metrics_table(state.results, columns=TABLE_COLUMNS)
                + f"\n\n95% confidence intervals of SR: {intervals}.",
            )
        )
    curve = _learning_curve_section(state)
    if curve:
        sections.append(("Learning curve", curve))
    pictures = []
    for label, directory in state.eval_dirs.items():
        relative = directory.relative_to(state.out)
        picture = "maps.png" if (directory / "maps.png").is_file() else "trajectories.png"
        m = state.results[label]
        pictures.append(
            f"### {label} (SR {_pct(m['success_rate'])})\n\n![{label} trajectories]({relative}/{picture})\n\n"
            f"More (first-person frames, error histogram): [{relative}/report.md]({relative}/report.md)"
        )
    if pictures:
        sections.append(
            (
                "Trajectories",
                "Six held-out episodes (drawn at random with the demo's seed, the same for every agent) "
                "seen from above, for each agent: walls (dark grey), rooms, "
                "landmarks (coloured blocks), the agent's path (blue, from the grey dot to the dark blue "
                "one), the reference shortest path (green) and the goal (red dot) with its success circle."
                + _instructions(state)
                + "\n\n"
                + "\n\n".join(pictures),
            )
        )
    if state.notes:
        sections.append(("Skipped or failed steps", "\n".join(f"- {note}" for note in state.notes)))
    return report.write_markdown(state.out / "report.md", sections, title="vln-gym demo")


# ---------------------------------------------------------------- main


DEMO_MARK = ".vln-gym-demo"  # in OUT: the folder holds a demo's output, which a new run may replace
DEMO_OUTPUTS = frozenset(
    {
        DEMO_MARK,
        "eval",
        "untrained",
        *ALGOS,
        "report.md",
        "summary.json",
        "heldout_curve.png",
        "learning_curve.png",
    }
)


def claim_output(out: Path) -> None:
    """Make ``out`` this run's: a new or empty folder, or an earlier demo's (``DEMO_MARK`` in it and
    nothing but `DEMO_OUTPUTS`), whose results are removed for a fresh run. Anything else, and a folder
    that cannot be written, is a ValueError naming it: the demo never deletes what it did not write."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / DEMO_MARK).is_file():
            raise OutputExistsError(
                f"{out}: not empty and not an earlier demo's output (no {DEMO_MARK} in it); choose a new "
                "or empty --out (or delete it)"
            )
        check_replaceable(out, DEMO_OUTPUTS, "vln-gym demo")
        for name in sorted(DEMO_OUTPUTS - {DEMO_MARK}):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    writable_folder(out, "--out")
    (out / DEMO_MARK).write_text("written by vln-gym demo; a new demo run replaces this folder\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``vln-gym demo [--quick] [--out DIR] [--seed S] [--algo grpo|ppo]``."""
    parser = argparse.ArgumentParser(prog="vln-gym demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test size (about a minute)")
    parser.add_argument(
        "--out",
        default="runs/demo",
        help="output directory (default runs/demo): new, empty, or an earlier demo's, which is replaced",
    )
    parser.add_argument("--seed", type=int, default=0, help="training and evaluation seed")
    parser.add_argument(
        "--algo", choices=ALGOS, default="grpo", help="RL after the warm start (default grpo)"
    )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        claim_output(Path(args.out))
    except ValueError as error:
        print(f"vln-gym demo: {error}", file=sys.stderr)
        return 2
    _configure_runtime()
    settings = DemoSettings.for_mode(args.quick, args.seed, args.algo)
    state = DemoState(out=Path(args.out), settings=settings)
    mode = " (quick smoke test)" if args.quick else ""
    _say(f"vln-gym demo{mode}: can a tiny vision-language model learn to follow directions? (CPU only)")
    _say(f"outputs go to {state.out}/")
    failed = False
    started = time.perf_counter()
    for number, (title, what, run) in enumerate(STEPS, start=1):
        _say(f"\n[{number}/{len(STEPS)}] {title}: {what}")
        step_start = time.perf_counter()
        try:
            run(state)
        except StepSkipped as error:
            failed = True
            _say(f"    skipped: {error}")
            state.notes.append(f"{title}: skipped ({error})")
            continue
        except Exception as error:
            failed = True
            _say(f"    FAILED: {type(error).__name__}: {error}")
            state.notes.append(f"{title}: failed ({type(error).__name__}: {error})")
            if title == "Report":
                raise
            continue
        _say(f"    done in {time.perf_counter() - step_start:.1f}s")
    episodes = state.settings.eval_episodes
    _say(f"\nResults on {episodes} held-out episodes ({time.perf_counter() - started:.0f}s in all):\n")
    if state.results:
        _say(report.metrics_table(state.results, markdown=False, columns=TABLE_COLUMNS))
        _say(
            "\nSR success rate, SPL success weighted by path directness, NE final distance to the goal (m),\n"
            "nDTW path fidelity, reward summed per episode, steps = moves + turns per episode."
        )
    else:
        _say("(no agent could be evaluated yet)")
    _say(f"\nreport (table, learning curve, maps, what it means): {state.out / 'report.md'}")
    if state.notes:
        _say("skipped/failed: " + "; ".join(state.notes))
    atomic_write_text(state.out / "summary.json", json.dumps(state.results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
