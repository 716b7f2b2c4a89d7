"""`vln-gym demo`: the project's front door, end to end on the built-in world, CPU only, no downloads.

Steps: build the tiny Qwen2-VL; evaluate the random and oracle agents on held-out built-in-world
episodes; train the tiny policy with PPO through ``env.step`` (``agents.ppo_train``); evaluate the trained
policy on the same held-out episodes; write ``OUT/report.md`` comparing them (table, learning curve,
trajectory plots). A step whose module has not been built yet is reported as "not built yet" and
skipped; the demo still exits 0. A step that fails for any other reason is reported and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agents import report
from agents.evaluate import HELDOUT_WORLD_SEED

_OWN_PACKAGES = ("agents", "vln_gym", "rewards")
LEARNING_CURVE_KEYS = ("reward/mean", "episode/success_rate", "episode/length", "invalid_action_rate")


class NotBuiltYet(Exception):
    """A module the step needs has not landed yet."""


# The demo task: the built-in world with short routes (1-3 m of walking, success within 1 m) and 30-degree
# turns, so a few CPU minutes of training can move the needle. Training and held-out episodes come from
# different world seeds (different floor plans).
DEMO_WORLD = {"min_path_length": 1.0, "max_path_length": 3.0, "success_distance": 1.0}
DEMO_TURN_ANGLE = 30.0
TRAIN_WORLD_SEED = 0


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run; ``quick`` is the smoke-test size (well under two minutes on 2 cores)."""

    eval_episodes: int
    train_episodes: int
    max_steps: int
    image_size: int
    eval_num_envs: int
    ppo_iterations: int
    ppo_num_envs: int
    ppo_rollout_steps: int
    sft_steps: int
    sb3_timesteps: int
    seed: int = 0

    @classmethod
    def for_mode(cls, quick: bool, seed: int = 0) -> DemoSettings:
        if quick:
            return cls(
                eval_episodes=4,
                train_episodes=20,
                max_steps=30,
                image_size=112,
                eval_num_envs=2,
                ppo_iterations=1,
                ppo_num_envs=2,
                ppo_rollout_steps=4,
                sft_steps=2,
                sb3_timesteps=0,
                seed=seed,
            )
        return cls(
            eval_episodes=40,
            train_episodes=200,
            max_steps=30,
            image_size=112,
            eval_num_envs=4,
            ppo_iterations=120,
            ppo_num_envs=4,
            ppo_rollout_steps=8,
            sft_steps=60,
            sb3_timesteps=20_000,
            seed=seed,
        )

    def env_kwargs(self, episodes: list[Any]) -> dict[str, Any]:
        """``VLN-v0`` kwargs shared by every agent, training and evaluation (only the episodes differ)."""
        return {
            "episodes": episodes,
            "views": "world",
            "max_steps": self.max_steps,
            "turn_angle": DEMO_TURN_ANGLE,
            "image_size": (self.image_size, self.image_size),
        }


@dataclass
class DemoState:
    """What the steps produce, for the next steps and the report."""

    out: Path
    settings: DemoSettings
    tiny_model: Path | None = None
    train_episodes: list[Any] = field(default_factory=list)
    eval_episodes: list[Any] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> metrics.json
    eval_dirs: dict[str, Path] = field(default_factory=dict)
    train_dir: Path | None = None
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)


def _missing_dependency(error: BaseException) -> str | None:
    """A description when ``error`` means "a module of this project has not landed yet"."""
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in _OWN_PACKAGES:
        return f"{error.name} is missing"
    if isinstance(error, ImportError) and (error.name or "").split(".")[0] in _OWN_PACKAGES:
        return f"{error.name}: {error}"
    if isinstance(error, NotImplementedError):
        return f"not implemented yet ({error})"
    if isinstance(error, RuntimeError) and "not available yet" in str(error):
        return str(error)
    if isinstance(error, NotBuiltYet):
        return str(error)
    cause = error.__cause__
    return _missing_dependency(cause) if cause is not None else None


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


def step_tiny_model(state: DemoState) -> None:
    from agents.tiny import ensure_tiny_model

    state.tiny_model = ensure_tiny_model()
    _say(f"    model: {state.tiny_model}")


def step_episodes(state: DemoState) -> None:
    from vln_gym.world import WorldConfig, generate_episodes

    settings, config = state.settings, WorldConfig(**DEMO_WORLD)
    state.train_episodes = generate_episodes(
        TRAIN_WORLD_SEED, settings.train_episodes, config, turn_angle=DEMO_TURN_ANGLE
    )
    state.eval_episodes = generate_episodes(
        HELDOUT_WORLD_SEED, settings.eval_episodes, config, turn_angle=DEMO_TURN_ANGLE
    )
    train, held_out = len(state.train_episodes), len(state.eval_episodes)
    _say(f"    training: {train} episodes (world seed {TRAIN_WORLD_SEED})")
    _say(f"    held-out: {held_out} episodes (world seed {HELDOUT_WORLD_SEED}: unseen floor plans)")
    _say(f'    e.g. "{state.eval_episodes[0].instruction}"')


def _require_episodes(state: DemoState) -> None:
    if not state.eval_episodes:
        raise NotBuiltYet("no episodes (the episode step did not run)")


def _evaluate(state: DemoState, label: str, agent: str, checkpoint: Path | None = None) -> None:
    from agents.evaluate import evaluate

    _require_episodes(state)
    settings = state.settings
    out = state.out / "eval" / label
    started = time.perf_counter()
    result = evaluate(
        agent,
        checkpoint=checkpoint,
        env_kwargs=settings.env_kwargs(state.eval_episodes),
        num_episodes=None,
        num_envs=settings.eval_num_envs,
        seed=settings.seed,
        out_dir=out,
        label=label,
        on_episode=lambda record: print(".", end="", flush=True),
    )
    state.results[label] = result.metrics
    state.eval_dirs[label] = out
    m = result.metrics
    seconds = time.perf_counter() - started
    _say(
        f"\n    {label:<10} success {100 * m['success_rate']:5.1f}%   SPL {100 * m['spl']:5.1f}%   "
        f"final distance {m['navigation_error']:.2f} m   ({m['episodes']} episodes, {seconds:.0f}s)"
    )


def step_baselines(state: DemoState) -> None:
    _evaluate(state, "random", "random")
    _evaluate(state, "oracle", "oracle")


def step_sb3(state: DemoState) -> None:
    settings = state.settings
    if settings.sb3_timesteps <= 0:
        _say("    skipped in --quick mode")
        return
    from agents.sb3_baseline import train_sb3

    _require_episodes(state)
    path = train_sb3(
        state.out / "sb3" / "ppo.zip",
        total_timesteps=settings.sb3_timesteps,
        env_kwargs=settings.env_kwargs(state.train_episodes),
        seed=settings.seed,
    )
    _say(f"    saved {path}")
    _evaluate(state, "sb3", "sb3", path)


def _ppo_config(state: DemoState) -> Any:
    from agents.ppo_train import PPOConfig

    settings = state.settings
    wanted: dict[str, Any] = {
        "output_dir": str(state.out / "train"),
        "num_iterations": settings.ppo_iterations,
        "num_envs": settings.ppo_num_envs,
        "seed": settings.seed,
        "algo": "ppo",
        "save_every": max(1, settings.ppo_iterations),
        "rollout_steps": settings.ppo_rollout_steps,
        "env_kwargs": {**settings.env_kwargs(state.train_episodes), "action_space": "text"},
        "sft_steps": settings.sft_steps,
        # the tiny random model needs large steps to move in a few minutes (as scripts/bench_learning.py)
        "lr": 1e-2,
        "value_lr": 3e-3,
        "kl_coef": 0.01,
        "sft_lr": 1e-2,
    }
    if state.tiny_model is not None:
        wanted["model_name_or_path"] = str(state.tiny_model)
    known = {f.name for f in fields(PPOConfig)}
    return PPOConfig(**{key: value for key, value in wanted.items() if key in known})


def step_train(state: DemoState) -> None:
    from agents.ppo_train import ppo_train

    _require_episodes(state)
    config = _ppo_config(state)
    train_dir = Path(config.output_dir)
    if train_dir.exists():
        shutil.rmtree(train_dir)  # a fresh run each time (resume is `vln-gym train --resume_from`)
    warm = (
        f"{config.sft_steps} supervised warm-start steps on expert answers, then " if config.sft_steps else ""
    )
    _say(
        f"    {warm}{config.num_iterations} PPO iterations"
        f" x {config.num_envs} envs x {config.rollout_steps} decisions each"
    )
    _say(f"    log: {train_dir / 'metrics.jsonl'}")
    result = ppo_train(config)
    state.train_dir = train_dir
    state.checkpoint = Path(result["checkpoint"])
    _say(f"    checkpoint: {state.checkpoint}")


def step_evaluate_policy(state: DemoState) -> None:
    if state.checkpoint is None:
        raise NotBuiltYet("no trained policy (the training step did not run)")
    from agents.policy import VLMPolicy

    # The policy as training starts it (fresh LoRA, B = 0: exactly the base model), for before/after.
    untrained = state.out / "untrained"
    if state.tiny_model is None:
        raise NotBuiltYet("no tiny model (the first step did not run)")
    VLMPolicy.from_pretrained(
        str(state.tiny_model), constrained_actions=True, seed=state.settings.seed
    ).save_pretrained(untrained)
    _evaluate(state, "untrained", "policy", untrained)
    _evaluate(state, "ppo", "policy", state.checkpoint)


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
        "Episodes",
        "short routes in the built-in world; training and held-out sets use different floor plans",
        step_episodes,
    ),
    (
        "Baselines",
        "random and oracle (shortest path) agents on held-out built-in-world episodes",
        step_baselines,
    ),
    (
        "SB3 baseline",
        "stable-baselines3 PPO on pixels only (no instruction): a non-language reference",
        step_sb3,
    ),
    ("Train with PPO", "the tiny model acts in the env; rewards come from env.step", step_train),
    (
        "Evaluate the policy",
        "before (untrained) and after PPO, on the same held-out episodes as the baselines",
        step_evaluate_policy,
    ),
    ("Report", "table, learning curve and trajectory plots", step_report),
)


def write_demo_report(state: DemoState) -> Path:
    """OUT/report.md: comparison table, learning curve, links to each evaluation's pictures."""
    settings = state.settings
    intro = (
        f"Task: the built-in world with short routes ({DEMO_WORLD['min_path_length']:g}-"
        f"{DEMO_WORLD['max_path_length']:g} m, success within {DEMO_WORLD['success_distance']:g} m), "
        f"{DEMO_TURN_ANGLE:g}-degree turns, 0.25 m steps, at most {settings.max_steps} decisions, "
        f"{settings.image_size}x{settings.image_size} frames. Training: {settings.train_episodes} episodes "
        f"(world seed {TRAIN_WORLD_SEED}); evaluation: {settings.eval_episodes} held-out episodes "
        f"(world seed {HELDOUT_WORLD_SEED}, unseen floor plans), seed {settings.seed}.\n\n"
        "SR = success rate (STOP within the success distance), SPL = success weighted by path length, "
        "OS = oracle success, NE = final distance to goal, TL = path length, nDTW/SDTW = path fidelity."
    )
    sections = [("Setup", intro)]
    if state.results:
        sections.append(("Comparison", report.metrics_table(state.results)))
    log = state.train_dir / "metrics.jsonl" if state.train_dir is not None else None
    if log is not None and log.is_file():
        rows = report.read_jsonl(log)
        try:
            report.plot_learning_curve(rows, state.out / "learning_curve.png", keys=LEARNING_CURVE_KEYS)
            sections.append(
                (
                    "Learning curve",
                    f"From `{log.relative_to(state.out)}`.\n\n![learning curve](learning_curve.png)",
                )
            )
        except ValueError as error:
            sections.append(("Learning curve", f"not plotted: {error}"))
    pictures = []
    for label, directory in state.eval_dirs.items():
        relative = directory.relative_to(state.out)
        picture = "maps.png" if (directory / "maps.png").is_file() else "trajectories.png"
        pictures.append(
            f"### {label}\n\n![{label} trajectories]({relative}/{picture})\n\n"
            f"Details: [{relative}/report.md]({relative}/report.md)"
        )
    if pictures:
        sections.append(("Trajectories (agent blue, reference green, goal red)", "\n\n".join(pictures)))
    if state.notes:
        sections.append(("Skipped or failed steps", "\n".join(f"- {note}" for note in state.notes)))
    return report.write_markdown(state.out / "report.md", sections, title="vln-gym demo")


def main(argv: Sequence[str] | None = None) -> int:
    """``vln-gym demo [--quick] [--out DIR] [--seed S]``."""
    parser = argparse.ArgumentParser(prog="vln-gym demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test size (about 2 minutes)")
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _configure_runtime()
    settings = DemoSettings.for_mode(args.quick, args.seed)
    state = DemoState(out=Path(args.out), settings=settings)
    state.out.mkdir(parents=True, exist_ok=True)
    mode = " (quick)" if args.quick else ""
    _say(f"vln-gym demo{mode}: vision-language navigation in the built-in world, on CPU")
    _say(f"outputs go to {state.out}/")
    failed = False
    started = time.perf_counter()
    for number, (title, what, run) in enumerate(STEPS, start=1):
        _say(f"\n[{number}/{len(STEPS)}] {title}: {what}")
        step_start = time.perf_counter()
        try:
            run(state)
        except Exception as error:
            missing = _missing_dependency(error)
            if missing is not None:
                _say(f"    not built yet: {title} ({missing})")
                state.notes.append(f"{title}: not built yet ({missing})")
                continue
            failed = True
            _say(f"    FAILED: {type(error).__name__}: {error}")
            state.notes.append(f"{title}: failed ({type(error).__name__}: {error})")
            if title == "Report":
                raise
            continue
        _say(f"    done in {time.perf_counter() - step_start:.1f}s")
    _say(f"\nResults on held-out episodes ({time.perf_counter() - started:.0f}s in all):\n")
    if state.results:
        _say(report.metrics_table(state.results, markdown=False))
        _say(
            "\nSR success rate, SPL success weighted by path length, OS oracle success, NE final distance "
            "to goal, TL path length, nDTW/SDTW path fidelity, invalid = unparseable answers."
        )
    else:
        _say("(no agent could be evaluated yet)")
    _say(f"\nreport: {state.out / 'report.md'}")
    if state.notes:
        _say("skipped/failed: " + "; ".join(state.notes))
    (state.out / "summary.json").write_text(
        json.dumps({k: v for k, v in state.results.items()}, indent=2) + "\n", encoding="utf-8"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
