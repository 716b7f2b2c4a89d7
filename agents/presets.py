"""The one learnable setting used by ``scripts/bench_learning.py`` and ``vln-gym demo``: world, env, training.

Easy built-in world (`EASY_WORLD_CONFIG`): goals 1.5-3 m of walking away (success within 1 m, STOP
required), 45-degree turns and 0.5 m steps, at most 12 decisions. An agent acting at random almost never
succeeds (about 1-3 % of held-out episodes) while the oracle always does. What is needed is in the
observation: the instruction names the opening turn ("Turn left and ...") and the goal landmark's colour,
and the frames show the landmarks; ``history_frames = max_steps`` keeps every frame of the episode in the
prompt (56 x 56 px: 4 image tokens each), so the policy also knows how far it has walked.

Answers are action chunks (`ACTION_STYLE`, `MAX_ACTIONS_PER_TURN`): up to 8 primitive actions in the env's
units, "turn left 90 degrees, move forward 150 cm, stop", executed as one macro step.

Training (`learning_config`): the tiny Qwen2-VL (227k parameters) is fully fine-tuned (no LoRA, vision
tower trainable), first by a supervised warm start on chunks of the expert's next actions along (slightly
noisy) expert paths in world seed `TRAIN_WORLD_SEED`, then by PPO or GRPO through ``env.step`` with the
rewards `EASY_REWARDS`. Evaluation uses `heldout_episodes` (world seed `HELDOUT_WORLD_SEED`: unseen floor
plans, starts and goals). Run it with one torch thread: on a shared 2-core machine two threads made every
step of this tiny model 10-20x slower (thread contention), one thread is the fast path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from vln_gym.world.levels import LEVELS

TRAIN_WORLD_SEED = 0
HELDOUT_WORLD_SEED = 1000
EASY = LEVELS["easy"]  # the world level (vln_gym.world.levels): goals, step, turn, decisions
TURN_ANGLE = EASY.turn_angle  # 45 degrees per turn
FORWARD_STEP = EASY.forward_step  # 0.5 metres per step
MAX_STEPS = EASY.max_steps  # 12 decisions per episode
IMAGE_SIZE = 56  # frame height and width in pixels (2 x 2 merged image tokens per frame)

EASY_WORLD_CONFIG: dict[str, float] = dict(EASY.world)  # goals 1.5-3 m away, success within 1 m

# Reward weights (rewards.terms): the defaults, but a cheaper wrong STOP (0.5) and a dearer step (0.25).
# With the default 2.0 / 0.04 a policy that rarely knows where the goal is learns never to STOP (running out
# of steps costs nothing), and RL after the warm start collapsed to 0 % success; with these, stopping always
# beats running out of steps, and stopping at the goal (+10) beats both.
EASY_REWARDS: dict[str, float] = {
    "progress": 1.0,
    "success": 10.0,
    "wrong_stop": 0.5,
    "collision": 0.1,
    "step_cost": 0.25,
    "invalid_action": 1.0,
}

EASY_WORLD_ENV_KWARGS: dict[str, Any] = {
    "views": "world",
    "action_space": "text",
    "world_seed": TRAIN_WORLD_SEED,
    "world_episodes": 2000,
    "world_config": EASY_WORLD_CONFIG,
    "turn_angle": TURN_ANGLE,
    "forward_step": FORWARD_STEP,
    "max_steps": MAX_STEPS,
    "history_frames": MAX_STEPS,
    "image_size": [IMAGE_SIZE, IMAGE_SIZE],
    "rewards": EASY_REWARDS,
    "expert_plan": "full",  # the warm start's answers are chunks of the expert's next actions
}
"""gym.make("VLN-v0", **EASY_WORLD_ENV_KWARGS): the training episodes (world seed 0), text actions."""

# Answers: NaVILA-style amounts in the env's units, up to 8 primitive actions per answer (a macro step:
# "turn left 90 degrees, move forward 150 cm, stop"). On easy, one answer can hold most of the expert's
# path, so an episode is 1-3 decisions: the warm start learns a plan per view (SFT 0.26-0.31 held-out
# success vs 0.06-0.15 with one word per decision) and GRPO groups from reset see whole episodes
# (docs/performance.md, "Action chunks").
ACTION_STYLE = "amount"
MAX_ACTIONS_PER_TURN = 8

# Medium (`LEVELS["medium"]`): goals 3-8 m away, 0.25 m steps, 30-degree turns, 80 decisions; the expert's
# path is 15-53 single actions. The prompt keeps the 8 most recent frames (a whole episode would not fit
# 16 images), and GRPO branches from expert-prefix states anywhere along the path, for 16 decisions.
MEDIUM = LEVELS["medium"]
MEDIUM_HISTORY_FRAMES = 8
MEDIUM_WORLD_ENV_KWARGS: dict[str, Any] = {
    **EASY_WORLD_ENV_KWARGS,
    "world_config": dict(MEDIUM.world),
    "turn_angle": MEDIUM.turn_angle,
    "forward_step": MEDIUM.forward_step,
    "max_steps": MEDIUM.max_steps,
    "history_frames": MEDIUM_HISTORY_FRAMES,
}
LEVEL_ENV_KWARGS: dict[str, dict[str, Any]] = {
    "easy": EASY_WORLD_ENV_KWARGS,
    "medium": MEDIUM_WORLD_ENV_KWARGS,
}
"""Training env kwargs of each benchmarked level (``scripts/bench_learning.py --level``)."""


def level_env_kwargs(level: str = "easy") -> dict[str, Any]:
    """A copy of the training env kwargs of ``level`` (easy or medium); ValueError naming the known ones."""
    if level not in LEVEL_ENV_KWARGS:
        raise ValueError(f"unknown benchmark level {level!r}; levels: {', '.join(LEVEL_ENV_KWARGS)}")
    return dict(LEVEL_ENV_KWARGS[level])


# SFT budget: (full, quick). Full: ~2-3 CPU minutes on one thread; quick: seconds (a smoke test).
SFT_BUDGET = {False: {"steps": 500, "samples": 4000}, True: {"steps": 30, "samples": 256}}
RL_ITERATIONS = {False: 40, True: 1}  # PPO
GRPO_ITERATIONS = {False: 100, True: 1}  # GRPO: ~0.5-1 CPU s each on easy (two groups of 8 short episodes)


def heldout_env_kwargs(num_episodes: int = 100, level: str = "easy") -> dict[str, Any]:
    """Env kwargs of the held-out episodes (same setting, world seed `HELDOUT_WORLD_SEED`), with the episodes
    generated up front as a list (what ``agents.eval.evaluate.evaluate(env_kwargs=...)`` needs)."""
    kwargs = {k: v for k, v in level_env_kwargs(level).items() if k not in ("world_seed", "world_episodes")}
    kwargs.pop("world_config")
    return {**kwargs, "episodes": heldout_episodes(num_episodes, level=level)}


def heldout_episodes(num_episodes: int = 100, seed: int = HELDOUT_WORLD_SEED, level: str = "easy") -> list:
    """The first ``num_episodes`` episodes of ``level``'s setting in world seed ``seed``."""
    from vln_gym.world import WorldConfig, generate_episodes

    kwargs = level_env_kwargs(level)
    return generate_episodes(
        seed,
        num_episodes,
        WorldConfig(**kwargs["world_config"]),
        forward_step=kwargs["forward_step"],
        turn_angle=kwargs["turn_angle"],
    )


def heldout_world_env_kwargs(level: str = "easy") -> dict[str, Any]:
    """``level``'s env kwargs on the held-out world seed (lazy episodes: vector envs, SFT checks)."""
    return {**level_env_kwargs(level), "world_seed": HELDOUT_WORLD_SEED}


def learning_config(
    output_dir: str,
    algo: Literal["ppo", "grpo"] = "ppo",
    quick: bool = False,
    level: str = "easy",
    **overrides,
):
    """The `PPOConfig` of the learnable setting (SFT warm start + ``algo``) on ``level`` (easy: the preset;
    medium: its env, PPO rollouts of 16 decisions, GRPO from expert-prefix states); ``quick``: a smoke-test
    size (about a minute on 2 cores). ``overrides`` replace any field (e.g. ``seed``, ``num_iterations``)."""
    from agents.ppo_train import PPOConfig

    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "algo": algo,
        "num_iterations": (RL_ITERATIONS if algo == "ppo" else GRPO_ITERATIONS)[quick],
        "save_every": 0,
        "env_kwargs": level_env_kwargs(level),
        "use_lora": False,
        "freeze_vision": False,
        "constrained_actions": True,
        "action_style": ACTION_STYLE,
        "max_actions_per_turn": MAX_ACTIONS_PER_TURN,
        "max_new_tokens": None,  # the grammar's longest answer (57 tokens with the tiny tokenizer's end)
        "temperature": 1.0,
        "ppo_epochs": 2,
        "minibatch_size": 32,
        "lr": 1e-4,  # RL after the warm start: small steps (3e-4 made GRPO collapse to stopping at once)
        "value_lr": 1e-3,
        "kl_coef": 0.0,  # clipping + the small lr keep RL near the warm start (0.05 did not help here)
        "ent_coef": 0.0,
        "gamma": 0.99,
        "lam": 0.95,
        "lr_schedule": "constant",
        "sft_steps": SFT_BUDGET[quick]["steps"],
        "sft_samples": SFT_BUDGET[quick]["samples"],
        "sft_batch_size": 32,
        "sft_lr": 3e-3,
        "sft_explore": 0.1,
        "torch_threads": 1,
        "tensorboard": False,
    }
    if algo == "ppo":
        common.update(num_envs=8, rollout_steps=MAX_STEPS)
    else:
        # reset-start groups: a 12-decision episode is short enough for a group to see all of it
        # (both starts are measured side by side by scripts/bench_learning.py, docs/performance.md)
        common.update(num_envs=16, group_size=8, grpo_rounds=1, grpo_start="reset")
    if level == "medium":
        grpo = {"grpo_start": "expert_prefix", "grpo_turn_budget": 16}
        common.update({"rollout_steps": 16} if algo == "ppo" else grpo, grpo_prefix_max=40)
    if quick:
        common.update(num_envs=4, rollout_steps=4, group_size=4, minibatch_size=8)
    config = PPOConfig(**common)
    return replace(config, **overrides) if overrides else config
