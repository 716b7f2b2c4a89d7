"""The one learnable setting used by ``scripts/bench_learning.py`` and ``vln-gym demo``: world, env, training.

Easy built-in world (`EASY_WORLD_CONFIG`): goals 1.5-3 m of walking away (success within 1 m, STOP
required), 45-degree turns and 0.5 m steps, at most 12 decisions. An agent acting at random almost never
succeeds (about 1-3 % of held-out episodes) while the oracle always does. What is needed is in the
observation: the instruction names the opening turn ("Turn left and ...") and the goal landmark's colour,
and the frames show the landmarks; ``history_frames = max_steps`` keeps every frame of the episode in the
prompt (56 x 56 px: 4 image tokens each), so the policy also knows how far it has walked.

Training (`learning_config`): the tiny Qwen2-VL (227k parameters) is fully fine-tuned (no LoRA, vision
tower trainable), first by a supervised warm start on the expert's next actions along (slightly noisy)
expert paths in world seed `TRAIN_WORLD_SEED`, then by PPO or GRPO through ``env.step`` with the rewards
`EASY_REWARDS`. Evaluation uses `heldout_episodes` (world seed `HELDOUT_WORLD_SEED`: unseen floor plans,
starts and goals). Run it with one torch thread: on a shared 2-core machine two threads made every step of
this tiny model 10-20x slower (thread contention), one thread is the fast path.
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
}
"""gym.make("VLN-v0", **EASY_WORLD_ENV_KWARGS): the training episodes (world seed 0), text actions."""

# SFT budget: (full, quick). Full: ~2-3 CPU minutes on one thread; quick: seconds (a smoke test).
SFT_BUDGET = {False: {"steps": 500, "samples": 4000}, True: {"steps": 30, "samples": 256}}
RL_ITERATIONS = {False: 40, True: 1}


def heldout_env_kwargs(num_episodes: int = 100) -> dict[str, Any]:
    """Env kwargs of the held-out episodes (same setting, world seed `HELDOUT_WORLD_SEED`), with the episodes
    generated up front as a list (what ``agents.eval.evaluate.evaluate(env_kwargs=...)`` needs)."""
    kwargs = {k: v for k, v in EASY_WORLD_ENV_KWARGS.items() if k not in ("world_seed", "world_episodes")}
    kwargs.pop("world_config")
    return {**kwargs, "episodes": heldout_episodes(num_episodes)}


def heldout_episodes(num_episodes: int = 100, seed: int = HELDOUT_WORLD_SEED) -> list:
    """The first ``num_episodes`` episodes of the easy setting in world seed ``seed``."""
    from vln_gym.world import WorldConfig, generate_episodes

    return generate_episodes(
        seed,
        num_episodes,
        WorldConfig(**EASY_WORLD_CONFIG),
        forward_step=FORWARD_STEP,
        turn_angle=TURN_ANGLE,
    )


def heldout_world_env_kwargs() -> dict[str, Any]:
    """`EASY_WORLD_ENV_KWARGS` on the held-out world seed (lazy episodes: for vector envs / SFT checks)."""
    return {**EASY_WORLD_ENV_KWARGS, "world_seed": HELDOUT_WORLD_SEED}


def learning_config(output_dir: str, algo: Literal["ppo", "grpo"] = "ppo", quick: bool = False, **overrides):
    """The `PPOConfig` of the learnable setting (SFT warm start + ``algo``); ``quick``: a smoke-test size
    (about a minute on 2 cores). ``overrides`` replace any field (e.g. ``seed``, ``num_iterations``)."""
    from agents.ppo_train import PPOConfig

    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "algo": algo,
        "num_iterations": RL_ITERATIONS[quick],
        "save_every": 0,
        "env_kwargs": dict(EASY_WORLD_ENV_KWARGS),
        "use_lora": False,
        "freeze_vision": False,
        "constrained_actions": True,
        "max_new_tokens": 4,
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
    if quick:
        common.update(num_envs=4, rollout_steps=4, group_size=4, minibatch_size=8)
    config = PPOConfig(**common)
    return replace(config, **overrides) if overrides else config
