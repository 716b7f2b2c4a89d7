"""`PPOConfig`: every setting of a training run, one help line per field (CLI and YAML through
``HfArgumentParser``), and `parse_config` for ``vln-gym train`` / ``python -m agents.ppo_train``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from agents.presets import EASY_REWARDS
from agents.train import ppo
from vln_gym.arguments import is_finite_real, is_whole
from vln_gym.paths import absolute_path

GRPO_STARTS = ("reset", "expert_prefix")
# PPOConfig fields a resume may change (the rest must equal the checkpoint's config)
RESUME_MAY_CHANGE = (
    "output_dir",
    "overwrite_output_dir",
    "resume_from",
    "save_every",
    "keep_checkpoints",
    "tensorboard",
    "progress",
    "torch_threads",
    "max_nonfinite",
    "vector_mode",
)  # where GRPO groups start (agents.train.rollout)


# The default training env: the built-in world's easy level (vln_gym.world.levels) with the learnable
# setting's reward weights (agents.presets: with the rewards' defaults a weak policy learns never to STOP).
DEFAULT_ENV_KWARGS: dict[str, Any] = {
    "action_space": "text",
    "world_config": "easy",
    "world_episodes": 2000,
    "history_frames": 12,
    "image_size": [56, 56],
    "rewards": dict(EASY_REWARDS),
}


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class PPOConfig:
    """Everything a training run needs; one help line per field (``--help``)."""

    output_dir: str = field(default="runs/train", metadata=_help("run dir: checkpoints, metrics.jsonl, tb/"))
    overwrite_output_dir: bool = field(
        default=False, metadata=_help("delete a previous run in output_dir and start over (else refused)")
    )
    num_iterations: int = field(default=40, metadata=_help("rollout + update iterations"))
    num_envs: int = field(default=8, metadata=_help("envs per process (GRPO: a multiple of group_size)"))
    seed: int = field(default=0, metadata=_help("base seed (model init, env seeds, sampling, shuffling)"))
    algo: Literal["ppo", "grpo"] = field(
        default="ppo", metadata=_help("ppo (value head, GAE) or grpo (groups)")
    )
    save_every: int = field(
        default=5, metadata=_help("checkpoint every N iterations (and at the end); 0: end only")
    )
    resume_from: str | None = field(
        default=None, metadata=_help("checkpoint dir or run dir to continue from")
    )
    model_name_or_path: str = field(
        default="tiny",
        metadata=_help("HF Qwen2/2.5/3-VL dir/name; tiny, tiny-qwen2_5_vl, tiny-qwen3_vl: tiny models"),
    )
    env_id: str = field(default="VLN-v0", metadata=_help("gymnasium id of the env"))
    env_kwargs: str = field(
        default=json.dumps(DEFAULT_ENV_KWARGS),
        metadata=_help(
            "JSON dict of gym.make kwargs (a dict is accepted from Python / YAML); default: the easy level "
            "of the built-in world, text actions, every frame of the episode in the prompt"
        ),
    )
    vector_mode: Literal["sync", "async"] = field(default="sync", metadata=_help("gymnasium vector env mode"))
    use_lora: bool | None = field(
        default=None,
        metadata=_help(
            "train a LoRA adapter, else full fine-tuning (None: full for the tiny models, whose few random "
            "weights a LoRA adapter barely moves; LoRA for real checkpoints)"
        ),
    )
    freeze_vision: bool | None = field(
        default=None,
        metadata=_help(
            "keep the vision tower frozen (None: trainable for the tiny models, frozen otherwise)"
        ),
    )
    lora_r: int = field(default=8, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=16, metadata=_help("LoRA alpha"))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout"))
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj",
        metadata=_help("comma-separated module names LoRA adapts, or all-linear"),
    )
    system_prompt: str | None = field(
        default=None, metadata=_help("system prompt of every decision (None: the model's default)")
    )
    max_images: int = field(
        default=16, metadata=_help("most frames per prompt (more valid frames: an error)")
    )
    recent_frames: int | None = field(
        default=None,
        metadata=_help(
            "history sampling: with more valid frames than max_images, keep this many recent ones plus older "
            "ones evenly spaced (VLN-R1's long-short memory); None: more frames than max_images is an error"
        ),
    )
    max_pixels: int | None = field(
        default=None, metadata=_help("image token budget: most pixels per frame (None: the processor's)")
    )
    min_pixels: int | None = field(
        default=None, metadata=_help("fewest pixels per frame (None: the processor's)")
    )
    constrained_actions: bool = field(
        default=True, metadata=_help("decode only answers of the action grammar")
    )
    action_style: Literal["word", "amount", "option"] = field(
        default="word",
        metadata=_help(
            "answer grammar under constrained decoding: word (move forward), amount (move forward 75 cm, in "
            "the env's forward_step / turn_angle units) or option (VLN-R1's A. Move forward 25 cm)"
        ),
    )
    max_actions_per_turn: int = field(
        default=1,
        metadata=_help(
            "most actions in one answer (comma-separated: a macro step); > 1 in the built-in world needs "
            "env_kwargs expert_plan 'full' for the warm start"
        ),
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata=_help(
            "generation length limit per decision (None: the action grammar's longest answer in the "
            "policy's tokenizer when constrained, else 16)"
        ),
    )
    temperature: float = field(
        default=1.0, metadata=_help("sampling temperature (ratios score the same one)")
    )
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling threshold"))
    rollout_steps: int = field(default=12, metadata=_help("PPO: decisions per env per iteration"))
    group_size: int = field(default=4, metadata=_help("GRPO: rollouts per start state"))
    grpo_rounds: int = field(default=1, metadata=_help("GRPO: rounds of num_envs episodes per iteration"))
    grpo_start: Literal["auto", "reset", "expert_prefix"] = field(
        default="auto",
        metadata=_help(
            "GRPO: where groups start: reset, or expert_prefix (replay the expert for a random number of "
            "steps, "
            "snapshot, branch); auto = expert_prefix in world/trajectory modes, reset in record mode"
        ),
    )
    grpo_prefix_max: int = field(
        default=8, metadata=_help("GRPO expert_prefix: most expert steps replayed (uniform in 0..N)")
    )
    grpo_turn_budget: int | None = field(
        default=None, metadata=_help("GRPO: decisions per group member (None: until its episode ends)")
    )
    ppo_epochs: int = field(default=2, metadata=_help("passes over the rollout per iteration"))
    minibatch_size: int = field(default=32, metadata=_help("decisions per optimizer step"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per minibatch (gradient accumulation)"))
    lr: float = field(
        default=1e-4,
        metadata=_help("AdamW learning rate of the policy parameters (RL after the warm start: small steps)"),
    )
    value_lr: float = field(default=1e-3, metadata=_help("AdamW learning rate of the value head"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    lr_schedule: Literal["linear", "cosine", "constant"] = field(
        default="constant", metadata=_help("decay of both learning rates over the iterations")
    )
    gamma: float = field(default=0.99, metadata=_help("discount between decisions (tokens of one answer: 1)"))
    lam: float = field(default=0.95, metadata=_help("GAE lambda (over tokens and decisions)"))
    clip_range: float = field(default=0.2, metadata=_help("PPO ratio clip"))
    value_clip: float | None = field(default=0.2, metadata=_help("value clip around old values (None: off)"))
    vf_coef: float = field(default=0.5, metadata=_help("value loss weight"))
    ent_coef: float = field(default=0.0, metadata=_help("entropy bonus weight"))
    kl_coef: float = field(
        default=0.0,
        metadata=_help(
            "KL(policy || reference) weight; 0 skips the reference (clipping and a small lr keep RL "
            "near the warm start on the default setting; real LoRA runs often add 0.02-0.05)"
        ),
    )
    kl_estimator: Literal["k1", "k3"] = field(default="k1", metadata=_help("per-token KL estimator"))
    kl_clamp: float = field(default=10.0, metadata=_help("per-token KL estimates are clamped to +-this"))
    kl_in_reward: bool = field(
        default=True, metadata=_help("PPO: KL as a per-token reward penalty, else a loss")
    )
    whiten_advantages: bool = field(default=True, metadata=_help("PPO: normalise advantages per iteration"))
    target_kl: float | None = field(
        default=None, metadata=_help("stop the update when approx-KL exceeds this")
    )
    max_grad_norm: float = field(
        default=1.0, metadata=_help("gradient clipping norm (policy, value head apart)")
    )
    sft_steps: int = field(
        default=500, metadata=_help("supervised warm start steps on expert answers (fresh runs; 0: none)")
    )
    sft_samples: int = field(
        default=4000, metadata=_help("expert (observation, answer) pairs per process for SFT")
    )
    sft_batch_size: int = field(default=32, metadata=_help("pairs per SFT step"))
    sft_explore: float = field(
        default=0.1, metadata=_help("chance of a random move while collecting SFT pairs (state coverage)")
    )
    sft_lr: float = field(
        default=3e-3,
        metadata=_help("learning rate of the SFT warm start (cosine decay; LoRA on a real model: ~2e-4)"),
    )
    torch_threads: int | None = field(
        default=None,
        metadata=_help("torch intra-op threads (None: 1 for models under 50M parameters, else every core)"),
    )
    max_nonfinite: int = field(
        default=3, metadata=_help("consecutive NaN/inf events tolerated before stopping")
    )
    keep_checkpoints: int = field(default=2, metadata=_help("newest checkpoints kept (0: all)"))
    tensorboard: bool = field(default=True, metadata=_help("write TensorBoard events to OUTPUT_DIR/tb"))
    progress: bool = field(default=True, metadata=_help("show a tqdm progress bar"))

    def __post_init__(self) -> None:
        from agents.policy.tiny import tiny_family

        if isinstance(self.model_name_or_path, str) and self.model_name_or_path.startswith("~"):
            self.model_name_or_path = os.path.expanduser(self.model_name_or_path)  # as a shell would
        tiny = tiny_family(self.model_name_or_path) is not None
        if self.use_lora is None:
            self.use_lora = not tiny
        if self.freeze_vision is None:
            self.freeze_vision = not tiny
        if isinstance(self.env_kwargs, str):
            try:
                parsed = json.loads(self.env_kwargs) if self.env_kwargs.strip() else {}
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"PPOConfig.env_kwargs: not valid JSON ({error}): {self.env_kwargs!r}"
                ) from None
            self.env_kwargs = parsed
        if not isinstance(self.env_kwargs, Mapping):
            raise ValueError(f"PPOConfig.env_kwargs: must be a JSON object/dict, got {self.env_kwargs!r}")
        self.env_kwargs = absolute_env_paths(self.env_kwargs)
        self.env_kwargs.setdefault("action_space", "text")  # the policy answers in words
        if self.env_kwargs["action_space"] != "text":
            raise ValueError(
                "PPOConfig.env_kwargs: action_space must be 'text' (the policy answers in words, which the "
                f"env parses), got {self.env_kwargs['action_space']!r}"
            )
        self._check_types()
        checks = [
            ("algo", self.algo in ("ppo", "grpo"), "must be ppo or grpo"),
            ("kl_estimator", self.kl_estimator in ppo.KL_ESTIMATORS, "must be k1 or k3"),
            (
                "lr_schedule",
                self.lr_schedule in ("linear", "cosine", "constant"),
                "must be linear|cosine|constant",
            ),
            ("vector_mode", self.vector_mode in ("sync", "async"), "must be sync or async"),
            (
                "env_id",
                ":" not in self.env_id,
                "must be a registered gymnasium id (module:Class would import code; gym.register it instead)",
            ),
            ("num_iterations", self.num_iterations >= 1, "must be >= 1"),
            ("num_envs", self.num_envs >= 1, "must be >= 1"),
            ("rollout_steps", self.rollout_steps >= 1, "must be >= 1"),
            ("minibatch_size", self.minibatch_size >= 1, "must be >= 1"),
            ("grad_accum", 1 <= self.grad_accum <= self.minibatch_size, "must be in 1..minibatch_size"),
            ("ppo_epochs", self.ppo_epochs >= 1, "must be >= 1"),
            ("sft_steps", self.sft_steps >= 0, "must be >= 0"),
            ("sft_samples", self.sft_samples >= 1, "must be >= 1"),
            ("sft_batch_size", self.sft_batch_size >= 1, "must be >= 1"),
            ("sft_explore", 0.0 <= self.sft_explore < 1.0, "must be in [0, 1)"),
            ("torch_threads", self.torch_threads is None or self.torch_threads >= 1, "must be >= 1"),
            ("group_size", self.group_size >= 2 or self.algo == "ppo", "must be >= 2 for grpo"),
            ("lora_dropout", 0.0 <= self.lora_dropout < 1.0, "must be in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_list()), "must name at least one module"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 1, "must be >= 1"),
            ("max_images", self.max_images >= 1, "must be >= 1"),
            (
                "recent_frames",
                self.recent_frames is None or 1 <= self.recent_frames <= self.max_images,
                "must be in 1..max_images",
            ),
            ("action_style", self.action_style in ("word", "amount", "option"), "must be word|amount|option"),
            ("max_actions_per_turn", 1 <= self.max_actions_per_turn <= 8, "must be in 1..8"),
            ("max_pixels", self.max_pixels is None or self.max_pixels >= 1, "must be >= 1"),
            ("min_pixels", self.min_pixels is None or self.min_pixels >= 1, "must be >= 1"),
            ("grpo_start", self.grpo_start in ("auto", *GRPO_STARTS), "must be auto|reset|expert_prefix"),
            ("grpo_prefix_max", self.grpo_prefix_max >= 0, "must be >= 0"),
            ("grpo_turn_budget", self.grpo_turn_budget is None or self.grpo_turn_budget >= 1, "must be >= 1"),
            (
                "num_envs",
                self.algo == "ppo" or self.num_envs % self.group_size == 0,
                "must be a multiple of group_size",
            ),
        ]
        for name, ok, message in [*checks, *self._range_checks()]:
            if not ok:
                raise ValueError(f"PPOConfig.{name}: {message} (got {getattr(self, name)!r})")
        problem = unreachable_goals(self.env_kwargs, self.constrained_actions, self.max_actions_per_turn)
        unitless = [key for key in ("forward_step", "turn_angle") if key not in self.env_kwargs]
        if "server" in self.env_kwargs and unitless:
            problem = (
                f"a served env needs {' and '.join(unitless)} here: the policy's prompts and answers are in "
                "the env's units, and the client checks them against the server's"
            )
        if problem:
            raise ValueError(f"PPOConfig.env_kwargs: {problem}")

    def _check_types(self) -> None:
        """Each field holds what its annotation says (YAML can give ``num_envs: 2.7`` or ``lr: .nan``): an
        int field an int, a float field a finite number, a bool field a bool, a str field a str."""
        for item in fields(self):
            if item.name == "env_kwargs":
                continue
            problem = _type_problem(item.name, getattr(self, item.name))
            if problem:
                raise ValueError(f"PPOConfig.{item.name}: {problem} (got {getattr(self, item.name)!r})")

    def _range_checks(self) -> list[tuple[str, bool, str]]:
        """Optimisation settings that type checks cannot catch (``--lr -1``, ``--gamma 2``)."""
        pixels = self.min_pixels is None or self.max_pixels is None or self.min_pixels <= self.max_pixels
        return [
            ("lr", self.lr > 0, "must be > 0"),
            ("value_lr", self.value_lr > 0, "must be > 0"),
            ("sft_lr", self.sft_lr > 0, "must be > 0"),
            ("gamma", 0.0 <= self.gamma <= 1.0, "must be in [0, 1]"),
            ("lam", 0.0 <= self.lam <= 1.0, "must be in [0, 1]"),
            ("clip_range", self.clip_range > 0, "must be > 0"),
            ("value_clip", self.value_clip is None or self.value_clip > 0, "must be > 0 (None: off)"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("target_kl", self.target_kl is None or self.target_kl > 0, "must be > 0 (None: off)"),
            ("max_grad_norm", self.max_grad_norm > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("kl_coef", self.kl_coef >= 0, "must be >= 0"),
            ("kl_clamp", self.kl_clamp > 0, "must be > 0"),
            ("vf_coef", self.vf_coef >= 0, "must be >= 0"),
            ("seed", 0 <= self.seed < 2**63, "must be in 0..2**63-1"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("keep_checkpoints", self.keep_checkpoints >= 0, "must be >= 0 (0: all)"),
            ("max_nonfinite", self.max_nonfinite >= 1, "must be >= 1"),
            ("grpo_rounds", self.grpo_rounds >= 1, "must be >= 1"),
            ("lora_r", self.lora_r >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "must be >= 1"),
            ("min_pixels", pixels, "must be <= max_pixels"),
        ]

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (what checkpoints and TensorBoard record)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def action_grammar(self) -> dict[str, Any] | None:
        """The policy's `ActionGrammar` fields (in the env's units), or ``None`` for one bare word."""
        if self.action_style == "word" and self.max_actions_per_turn == 1:
            return None
        forward_step, turn_angle, _ = env_units(self.env_kwargs)
        return {
            "style": self.action_style,
            "max_actions": self.max_actions_per_turn,
            "forward_step": float(forward_step),
            "turn_angle": float(turn_angle),
        }

    def lora_target_list(self) -> list[str] | str:
        """``lora_target_modules`` as peft takes it: a list of names, or ``"all-linear"``."""
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]

    def resume_differences(self, saved: Mapping[str, Any]) -> list[str]:
        """Fields of a checkpoint's config (``saved``) that this config changes but a resume may not.

        May change: where and how often the run writes (`RESUME_MAY_CHANGE`), and ``num_iterations`` when
        ``lr_schedule`` is constant (the schedule of the other schedules is defined over the run's length)."""
        allowed = set(RESUME_MAY_CHANGE)
        if self.lr_schedule == "constant" and saved.get("lr_schedule") == "constant":
            allowed.add("num_iterations")
        problems = []
        for f in fields(self):
            if f.name in allowed or f.name not in saved:
                continue
            mine = json.loads(json.dumps(getattr(self, f.name), default=repr))
            theirs = saved[f.name]
            if f.name == "env_kwargs" and isinstance(theirs, Mapping):  # an older checkpoint's relative paths
                theirs = json.loads(json.dumps(absolute_env_paths(theirs), default=repr))
            if mine != theirs:
                problems.append(f"{f.name}: checkpoint has {saved[f.name]!r}, this run has {mine!r}")
        return problems

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with this config to be resumed."""
        keys = (
            "model_name_or_path",
            "use_lora",
            "lora_r",
            "lora_alpha",
            "freeze_vision",
            "algo",
            "constrained_actions",
        )
        return {key: getattr(self, key) for key in keys}


def _absolute(value: Any) -> Any:
    """A path (or a list of paths) made absolute; anything else as it is (the env names what is wrong)."""
    if isinstance(value, str) and value:
        return absolute_path(value)
    if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
        return [absolute_path(item) for item in value]
    return value


def absolute_env_paths(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` with its file and folder paths absolute (``data_files``, ``media_dir``, ``path_remap``
    targets, ``data_options`` ``dataset_info`` / ``pose_source`` / ``media_dir``): a checkpoint saves them,
    and its resume or evaluation from another folder must read the same files."""
    result = dict(env_kwargs)
    for key in ("data_files", "media_dir"):
        if key in result:
            result[key] = _absolute(result[key])
    if isinstance(result.get("path_remap"), Mapping):
        result["path_remap"] = {old: _absolute(new) for old, new in result["path_remap"].items()}
    if isinstance(result.get("data_options"), Mapping):
        options = result["data_options"] = dict(result["data_options"])
        for key in ("dataset_info", "pose_source", "media_dir"):
            if key in options:
                options[key] = _absolute(options[key])
    return result


def env_units(env_kwargs: Mapping[str, Any]) -> tuple[float, float, int | None]:
    """``(forward_step, turn_angle, max_steps)`` the env will use (a named level fills the unset ones)."""
    from vln_gym.world.levels import level_settings

    return level_settings(
        env_kwargs.get("world_config"),
        env_kwargs.get("forward_step"),
        env_kwargs.get("turn_angle"),
        env_kwargs.get("max_steps"),
    )


def _unit_problem(env_kwargs: Mapping[str, Any]) -> str | None:
    """What is wrong with the env's ``max_steps`` / ``forward_step`` / ``turn_angle`` (the env checks them
    too, but only after the model is loaded; the decision budget check needs them sound first)."""
    max_steps = env_kwargs.get("max_steps")
    if max_steps is not None and not (is_whole(max_steps) and max_steps >= 1):
        return f"max_steps must be an integer >= 1, got {max_steps!r}"
    for key, unit in (("forward_step", "metres"), ("turn_angle", "degrees")):
        value = env_kwargs.get(key)
        if value is not None and not (is_finite_real(value) and value > 0):
            return f"{key} must be a finite number of {unit} > 0, got {value!r}"
    return None


def unreachable_goals(
    env_kwargs: Mapping[str, Any], constrained_actions: bool, actions_per_turn: int = 1
) -> str | None:
    """Why the built-in world's nearest goals are out of reach of the decision budget, or ``None``.

    Checked when the steps per decision are bounded (discrete actions: one; text under constrained
    decoding: ``actions_per_turn``): ``max_steps * actions_per_turn * forward_step`` must reach the world's
    ``min_path_length``. Data-driven envs and free text (any amount) are not checked."""
    unit = _unit_problem(env_kwargs)
    if unit is not None:
        return unit
    if (
        any(key in env_kwargs for key in ("data_files", "episodes", "server"))  # served: the server's world
        or env_kwargs.get("views", "world") != "world"
    ):
        return None
    if env_kwargs.get("action_space", "discrete") == "text" and not constrained_actions:
        return None
    from vln_gym.world import WorldConfig

    world = WorldConfig.coerce(env_kwargs.get("world_config"))
    forward_step, _, max_steps = env_units(env_kwargs)
    per_turn = actions_per_turn if env_kwargs.get("action_space", "discrete") == "text" else 1
    max_steps = 500 if max_steps is None else int(max_steps)
    reach = max_steps * per_turn * float(forward_step)
    if reach >= world.min_path_length:
        return None
    return (
        f"max_steps {max_steps} x {per_turn} action(s) per decision x forward_step {forward_step:g} m = "
        f"{reach:g} m "
        f"cannot reach the nearest goals (world min_path_length {world.min_path_length:g} m); raise "
        'max_steps or forward_step, or pick a level: world_config "easy" | "medium" | "standard"'
    )


@cache
def _field_kinds() -> dict[str, tuple[set[type], bool]]:
    """Per field: the plain types its annotation allows (of int, float, bool, str) and whether it allows
    None, read from the class annotations (`HfArgumentParser` rewrites the `fields()` types in place)."""
    kinds: dict[str, tuple[set[type], bool]] = {}
    for name, hint in get_type_hints(PPOConfig).items():
        options = set(get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        plain = options & {int, float, bool, str}
        if plain:
            kinds[name] = (plain, type(None) in options)
    return kinds


def _type_problem(name: str, value: Any) -> str | None:
    """Why ``value`` does not fit field ``name`` (an int field needs an int, a float field a finite
    number, a bool field a bool, a str field a string); ``None`` when it fits."""
    if name not in _field_kinds():
        return None
    plain, optional = _field_kinds()[name]
    if value is None:
        return None if optional else "must be set (not null)"
    if bool in plain:
        return None if isinstance(value, bool) else "must be true or false"
    if str in plain:
        return None if isinstance(value, str) else "must be a string"
    if int in plain:
        return None if is_whole(value) else "must be an integer"
    return None if is_finite_real(value) else "must be a finite number"


@cache
def _unique_keys_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently: ``lr`` set twice would train with whichever came last), naming its line."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _describe_negative_flags(parser) -> None:
    """``HfArgumentParser`` gives each ``--no_FIELD`` of a bool defaulting to True the positive flag's
    help text; say what it does instead."""
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--no_")), None)
        if flag is not None and action.const is False:
            action.help = f"same as --{action.dest} false"
            action.default = argparse.SUPPRESS  # the field's default is the positive flag's; not shown twice


def parse_config(argv: Sequence[str] | None = None) -> PPOConfig:
    """Flags and/or ``--config FILE.yaml`` (flags win over the file) through ``HfArgumentParser``; with
    ``resume_from``, the fields neither gives are the checkpoint's (a resume continues the run it names)."""
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(
        PPOConfig, prog="vln-gym train", description="PPO/GRPO training of a VLMPolicy through env.step"
    )
    parser.add_argument("--config", default=None, help="YAML file with PPOConfig fields")
    _describe_negative_flags(parser)
    loaded = _yaml_fields(args)
    parser.set_defaults(**_checkpoint_fields(_flag_value(args, "resume_from") or loaded.get("resume_from")))
    parser.set_defaults(**loaded)
    config, _ = parser.parse_args_into_dataclasses(args=args)
    return config


def _flag_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name`` (or ``--name-with-dashes``) in ``args``, if given."""
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest="value", default=None)
    return finder.parse_known_args(args)[0].value


def _checkpoint_fields(resume_from: str | None) -> dict[str, Any]:
    """The config fields saved with the checkpoint ``resume_from`` names (a run dir or a checkpoint dir),
    as defaults; none when there is no such checkpoint (`ppo_train` then names the problem)."""
    if not resume_from:
        return {}
    from agents.train.checkpoint import resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(resume_from)
        state = json.loads((checkpoint / "trainer_state.json").read_text("utf-8"))
        saved = dict(state["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    known = {f.name for f in fields(PPOConfig)} - {"resume_from", "overwrite_output_dir", "output_dir"}
    values = {key: value for key, value in saved.items() if key in known}
    # The run continues where its checkpoint is, never in the dir it was first written to (a copied or
    # moved run would write into, and rotate the checkpoints of, the original).
    values["output_dir"] = str(Path(absolute_path(checkpoint)).parent)  # '--resume_from .' inside it too
    return _as_defaults(values)


def _as_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """PPOConfig field values (from a YAML file or a checkpoint) as parser defaults: ``env_kwargs`` given
    as a mapping becomes the JSON text the field holds."""
    if isinstance(values.get("env_kwargs"), Mapping):
        values["env_kwargs"] = json.dumps(values["env_kwargs"])
    return values


def _yaml_fields(args: Sequence[str]) -> dict[str, Any]:
    """The PPOConfig fields of ``--config FILE.yaml`` or ``--config=FILE.yaml`` (none without it);
    SystemExit naming the file (and line) for YAML that is invalid, not a mapping or names unknown fields,
    ValueError for a value of the wrong type (OSError: the file cannot be read)."""
    import yaml

    if args and args[-1] == "--config":
        raise SystemExit("--config needs a YAML file path")
    given = _flag_value(args, "config")
    if given is None:
        return {}
    path = Path(given)
    try:
        text = path.read_text(encoding="utf-8")
        loaded = yaml.load(text, Loader=_unique_keys_loader()) or {}
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid UTF-8 ({error.reason})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise SystemExit(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(loaded, Mapping):
        raise SystemExit(f"{path}: expected a mapping of PPOConfig fields, got {type(loaded).__name__}")
    known = {f.name for f in fields(PPOConfig)}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise SystemExit(f"{path}: unknown PPOConfig fields: {', '.join(unknown)}")
    lines = _key_lines(text)
    values = {name: _yaml_value(name, value) for name, value in loaded.items()}
    for name, value in values.items():
        problem = None if name == "env_kwargs" else _type_problem(name, value)
        if problem:
            raise ValueError(f"{path}:{lines.get(name, '?')}: {name}: {problem} (got {value!r})")
    return _as_defaults(values)


def _key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each top-level key of a YAML mapping."""
    import yaml

    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def _yaml_value(name: str, value: Any) -> Any:
    """A YAML value as its field takes it: PyYAML reads ``1e-4`` (no dot) as a string, so a string for a
    number field is a number when it reads as one (the flag ``--lr 1e-4`` would)."""
    plain = _field_kinds().get(name, (set(), False))[0]
    if not isinstance(value, str) or str in plain:
        return value
    for kind in (int, float):
        if kind in plain:
            try:
                return kind(value)
            except ValueError:
                continue
    return value
