"""PPO and GRPO for `VLMPolicy`, with rewards from ``env.step`` (the loop reads top to bottom, CleanRL style).

    python -m agents.ppo_train [--config run.yaml] [--flag value ...]      # or: vln-gym train ...
    accelerate launch --num_processes 2 -m agents.ppo_train ...           # data parallel (DDP / DeepSpeed)

One iteration = rollout (the policy generates for all live envs in one batch, texts go to ``env.step``),
reference log-probs (same model, adapter disabled, one batched no-grad pass), advantages (PPO: token-level
GAE bootstrapped across the decisions of an episode; GRPO: group-normalised episode returns), then
``ppo_epochs`` passes of clipped updates over shuffled minibatches. Old log-probs and values come from
``generate`` itself. Every process owns its own env shard and seeds; gradients are averaged by DDP.

Determinism and resume: envs are reseeded at the start of every iteration from (seed, process, iteration),
minibatches are shuffled by a generator seeded the same way, and the global RNG states (python, numpy,
torch) are saved in every checkpoint, so on CPU ``N`` iterations equal ``k`` + resume + ``N - k``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from agents.train import ppo
from agents.train.checkpoint import (
    assert_finite_parameters,
    check_compatible,
    load_optimizer_and_scheduler,
    load_rng_state,
    load_trainer_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from agents.train.rollout import Decision, RolloutStats, collect_grpo, collect_ppo, make_vector_env
from agents.train.sft import (
    SFTReport,
    collect_expert_pairs,
    load_reference,
    refresh_reference,
    supervised_warm_start,
)

SFT_POLICY_DIR = "sft_policy"  # OUTPUT_DIR/sft_policy: the policy right after the supervised warm start


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class PPOConfig:
    """Everything a training run needs; one help line per field (``--help``)."""

    output_dir: str = field(default="runs/train", metadata=_help("run dir: checkpoints, metrics.jsonl, tb/"))
    num_iterations: int = field(default=8, metadata=_help("rollout + update iterations"))
    num_envs: int = field(default=4, metadata=_help("envs per process (GRPO: a multiple of group_size)"))
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
        default="tiny", metadata=_help("HF Qwen2-VL dir/name; 'tiny' builds the tiny model")
    )
    env_id: str = field(default="VLN-v0", metadata=_help("gymnasium id of the env"))
    env_kwargs: str = field(
        default='{"action_space": "text", "max_steps": 12, "image_size": [112, 112]}',
        metadata=_help("JSON dict of gym.make kwargs (a dict is accepted from Python / YAML)"),
    )
    vector_mode: Literal["sync", "async"] = field(default="sync", metadata=_help("gymnasium vector env mode"))
    use_lora: bool = field(default=True, metadata=_help("train a LoRA adapter (else full fine-tuning)"))
    freeze_vision: bool = field(
        default=True, metadata=_help("keep the vision tower frozen (full fine-tuning / LoRA targets)")
    )
    lora_r: int = field(default=8, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=16, metadata=_help("LoRA alpha"))
    constrained_actions: bool = field(
        default=True, metadata=_help("decode only answers of the action grammar")
    )
    max_new_tokens: int = field(default=8, metadata=_help("generation length limit per decision"))
    temperature: float = field(
        default=1.0, metadata=_help("sampling temperature (ratios score the same one)")
    )
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling threshold"))
    rollout_steps: int = field(default=8, metadata=_help("PPO: decisions per env per iteration"))
    group_size: int = field(default=4, metadata=_help("GRPO: rollouts per start state"))
    grpo_rounds: int = field(default=1, metadata=_help("GRPO: rounds of num_envs episodes per iteration"))
    ppo_epochs: int = field(default=2, metadata=_help("passes over the rollout per iteration"))
    minibatch_size: int = field(default=8, metadata=_help("decisions per optimizer step"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per minibatch (gradient accumulation)"))
    lr: float = field(default=5e-4, metadata=_help("AdamW learning rate of the policy (LoRA) parameters"))
    value_lr: float = field(default=1e-3, metadata=_help("AdamW learning rate of the value head"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    lr_schedule: Literal["linear", "cosine", "constant"] = field(
        default="linear", metadata=_help("decay of both learning rates over the iterations")
    )
    gamma: float = field(default=0.99, metadata=_help("discount between decisions (tokens of one answer: 1)"))
    lam: float = field(default=0.95, metadata=_help("GAE lambda (over tokens and decisions)"))
    clip_range: float = field(default=0.2, metadata=_help("PPO ratio clip"))
    value_clip: float | None = field(default=0.2, metadata=_help("value clip around old values (None: off)"))
    vf_coef: float = field(default=0.5, metadata=_help("value loss weight"))
    ent_coef: float = field(default=0.0, metadata=_help("entropy bonus weight"))
    kl_coef: float = field(
        default=0.02, metadata=_help("KL(policy || reference) weight; 0 skips the reference")
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
        default=0, metadata=_help("supervised warm start steps on expert answers (fresh runs)")
    )
    sft_samples: int = field(
        default=64, metadata=_help("expert (observation, answer) pairs per process for SFT")
    )
    sft_batch_size: int = field(default=32, metadata=_help("pairs per SFT step"))
    sft_explore: float = field(
        default=0.0, metadata=_help("chance of a random move while collecting SFT pairs (state coverage)")
    )
    sft_lr: float = field(default=1e-3, metadata=_help("learning rate of the SFT warm start (cosine decay)"))
    torch_threads: int | None = field(
        default=None, metadata=_help("torch intra-op threads (1 is fastest for tiny models on shared CPUs)")
    )
    max_nonfinite: int = field(
        default=3, metadata=_help("consecutive NaN/inf events tolerated before stopping")
    )
    keep_checkpoints: int = field(default=2, metadata=_help("newest checkpoints kept (0: all)"))
    tensorboard: bool = field(default=True, metadata=_help("write TensorBoard events to OUTPUT_DIR/tb"))
    progress: bool = field(default=True, metadata=_help("show a tqdm progress bar"))

    def __post_init__(self) -> None:
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
        self.env_kwargs = dict(self.env_kwargs)
        checks = [
            ("algo", self.algo in ("ppo", "grpo"), "must be ppo or grpo"),
            ("kl_estimator", self.kl_estimator in ppo.KL_ESTIMATORS, "must be k1 or k3"),
            (
                "lr_schedule",
                self.lr_schedule in ("linear", "cosine", "constant"),
                "must be linear|cosine|constant",
            ),
            ("vector_mode", self.vector_mode in ("sync", "async"), "must be sync or async"),
            ("num_iterations", self.num_iterations >= 1, "must be >= 1"),
            ("num_envs", self.num_envs >= 1, "must be >= 1"),
            ("rollout_steps", self.rollout_steps >= 1, "must be >= 1"),
            ("minibatch_size", self.minibatch_size >= 1, "must be >= 1"),
            ("grad_accum", 1 <= self.grad_accum <= self.minibatch_size, "must be in 1..minibatch_size"),
            ("ppo_epochs", self.ppo_epochs >= 1, "must be >= 1"),
            ("sft_steps", self.sft_steps >= 0, "must be >= 0"),
            ("sft_batch_size", self.sft_batch_size >= 1, "must be >= 1"),
            ("sft_explore", 0.0 <= self.sft_explore < 1.0, "must be in [0, 1)"),
            ("torch_threads", self.torch_threads is None or self.torch_threads >= 1, "must be >= 1"),
            ("group_size", self.group_size >= 2 or self.algo == "ppo", "must be >= 2 for grpo"),
            (
                "num_envs",
                self.algo == "ppo" or self.num_envs % self.group_size == 0,
                "must be a multiple of group_size",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ValueError(f"PPOConfig.{name}: {message} (got {getattr(self, name)!r})")

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


# ---------------------------------------------------------------- small helpers
class PolicyScorer(torch.nn.Module):
    """``forward = policy.evaluate`` as a tuple: DDP / DeepSpeed wrap the module whose forward is the loss."""

    def __init__(self, policy: torch.nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.policy = policy
        self.temperature = temperature

    def forward(self, prompts: Sequence, response_ids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        out = self.policy.evaluate(prompts, response_ids, temperature=self.temperature)
        return out.logprobs, out.entropy, out.values, out.mask


def lr_factor(iteration: int, *, schedule: str, total: int) -> float:
    """Multiplier of the base learning rates after ``iteration`` completed iterations."""
    progress = min(iteration / total, 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def env_seeds(seed: int, rank: int, iteration: int, count: int, stream: int = 0) -> list[int]:
    """Deterministic env seeds of one (process, iteration, stream)."""
    return [int(s) for s in np.random.SeedSequence([seed, rank, iteration, stream]).generate_state(count)]


def pad_right(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros(len(tensors), length, dtype=tensors[0].dtype)
    for row, tensor in enumerate(tensors):
        out[row, : len(tensor)] = tensor
    return out


def resolve_model_path(name: str) -> str:
    if name == "tiny":
        from agents.policy.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    return name


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunLogger:
    """metrics.jsonl (one object per iteration; NaN/inf written as null) + TensorBoard scalars."""

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool, keep_until: int | None) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if keep_until is not None and self.path.exists():  # resume: drop rows after the checkpoint
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [row for row in rows if json.loads(row).get("iteration", 0) <= keep_until]
            self.path.write_text("".join(row + "\n" for row in kept))
        elif keep_until is None:
            self.path.write_text("")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tb"))

    def log(self, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if isinstance(value, int | float) and key != "iteration":
                    self.writer.add_scalar(key, value, metrics["iteration"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class NonFiniteGuard:
    """Counts consecutive NaN/inf events; raises once ``limit`` is reached, naming the first bad quantity."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.first = limit, 0, None

    def bad(self, what: str, iteration: int) -> None:
        self.first = self.first or f"{what} (iteration {iteration})"
        self.streak += 1
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"training stopped after {self.streak} consecutive NaN/inf events; first bad: {self.first}"
            )

    def good(self) -> None:
        self.streak, self.first = 0, None


# ---------------------------------------------------------------- batch building
@dataclass
class Sample:
    """One decision ready for the update: old quantities and targets per response token."""

    prompt: Any
    response_ids: torch.Tensor
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    ref_logprobs: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor


def reference_logprobs(
    policy, decisions: Sequence[Decision], batch_size: int, temperature: float
) -> list[torch.Tensor]:
    """Per-decision reference log-probs, batched (adapter disabled), at the sampling temperature."""
    result: list[torch.Tensor] = []
    for start in range(0, len(decisions), batch_size):
        chunk = decisions[start : start + batch_size]
        prompts, responses = [d.prompt for d in chunk], [d.response_ids for d in chunk]
        ref = policy.reference_logprobs(prompts, responses, temperature=temperature).float().cpu()
        result.extend(ref[row, : len(d.response_ids)] for row, d in enumerate(chunk))
    return result


def ppo_targets(
    streams: Sequence[Sequence[Decision]], token_rewards: Sequence[torch.Tensor], config: PPOConfig
):
    """Token-level GAE over every env's stream at once; the env reward sits on each answer's last token.

    Inside an answer next value = the next token's value and the discount is 1; after the last token it is the
    next decision's ``values[0]`` (discount ``gamma``), ``bootstrap_value`` on truncation / rollout end, 0 on
    termination. Returns per-decision (advantages, returns) in the order of the flattened streams.
    """
    rewards, values, next_values, terminated, ends, gammas, lengths = [], [], [], [], [], [], []
    flat = [d for stream in streams for d in stream]
    position = 0
    for stream in streams:
        for k, decision in enumerate(stream):
            length = len(decision.response_ids)
            lengths.append(length)
            value = decision.values.float().cpu()
            if decision.terminated:
                after = 0.0
            elif decision.truncated or decision.segment_end:
                after = decision.bootstrap_value
            else:
                after = float(stream[k + 1].values[0])
            rewards.append(token_rewards[position])
            values.append(value)
            next_values.append(torch.cat([value[1:], torch.tensor([after])]))
            flags = torch.zeros(length)
            terminated.append(
                flags.clone().index_fill_(0, torch.tensor([length - 1]), float(decision.terminated))
            )
            end = decision.done or decision.segment_end
            ends.append(flags.clone().index_fill_(0, torch.tensor([length - 1]), float(end)))
            gammas.append(torch.ones(length).index_fill_(0, torch.tensor([length - 1]), config.gamma))
            position += 1
    advantages, returns = ppo.gae(
        torch.cat(rewards),
        torch.cat(values),
        torch.cat(next_values),
        torch.cat(terminated),
        torch.cat(ends),
        torch.cat(gammas),
        config.lam,
    )
    assert len(flat) == len(lengths)
    return list(advantages.split(lengths)), list(returns.split(lengths))


# ---------------------------------------------------------------- distributed reductions
def global_sum(accelerator, values: Sequence[float]) -> list[float]:
    """Sum of each entry across processes (identity on one process)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        tensor = accelerator.reduce(tensor, reduction="sum")
    return tensor.cpu().tolist()


def global_mean_std(accelerator, values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) std over all processes' values; NaN when there are none."""
    array = np.asarray(values, dtype=np.float64)
    total, total_sq, count = global_sum(accelerator, [array.sum(), (array**2).sum(), array.size])
    if count == 0:
        return float("nan"), float("nan")
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


def rollout_metrics(accelerator, decisions: Sequence[Decision], stats: RolloutStats) -> dict[str, float]:
    """Reward / episode / validity statistics of one rollout, averaged over processes."""
    metrics: dict[str, float] = {}
    metrics["reward/mean"], metrics["reward/std"] = global_mean_std(
        accelerator, [d.reward for d in decisions]
    )
    term_names = sorted({name for d in decisions for name in d.info.get("reward_terms", {})})
    for name in term_names:
        values = [
            d.info["reward_terms"][name]
            for d in decisions
            if d.info.get("reward_terms", {}).get(name) is not None
        ]
        metrics[f"reward_terms/{name}"] = global_mean_std(accelerator, values)[0]
    invalid = [float(bool(d.info.get("invalid_action", False))) for d in decisions]
    metrics["invalid_action_rate"] = global_mean_std(accelerator, invalid)[0]
    metrics["response_length"] = global_mean_std(accelerator, [len(d.response_ids) for d in decisions])[0]
    metrics["episode/return"] = global_mean_std(accelerator, stats.episode_returns)[0]
    metrics["episode/length"] = global_mean_std(accelerator, stats.episode_lengths)[0]
    metrics["episode/count"] = global_sum(accelerator, [len(stats.episode_lengths)])[0]
    success = [float(d.info.get("success", False)) for d in decisions if d.done]
    metrics["episode/success_rate"] = global_mean_std(accelerator, success)[0]
    metric_names = sorted({k for m in stats.episode_metrics for k in m} - {"success"})
    for name in metric_names:
        values = [m[name] for m in stats.episode_metrics if name in m]
        metrics[f"episode/{name}"] = global_mean_std(accelerator, values)[0]
    return metrics


# ---------------------------------------------------------------- SFT warm start
def sft_warm_start(policy, scorer, envs, config: PPOConfig, accelerator) -> SFTReport:
    """``sft_steps`` supervised steps on expert answers before RL (as VLN-R1 does); see `agents.train.sft`."""
    rank = accelerator.process_index
    pairs = collect_expert_pairs(
        envs,
        config.sft_samples,
        seeds=env_seeds(config.seed, rank, 0, envs.num_envs, stream=99),
        explore=config.sft_explore,
        rng=np.random.default_rng([config.seed, rank, 99]),
    )
    report = supervised_warm_start(
        policy,
        pairs,
        steps=config.sft_steps,
        batch_size=config.sft_batch_size,
        lr=config.sft_lr,
        seed=config.seed + rank,
        max_grad_norm=config.max_grad_norm,
        score=scorer,
        backward=lambda loss: accelerator.backward(loss * config.grad_accum),  # accelerate divides
    )
    refresh_reference(policy)
    return report


# ---------------------------------------------------------------- the training run
def ppo_train(
    config: PPOConfig, on_iteration: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Train; returns the last iteration's metrics plus ``checkpoint`` (path of the final checkpoint).

    ``on_iteration(metrics)`` is called on every process after each iteration's update and logging (before
    its checkpoint), with that iteration's metrics row (the dict written to metrics.jsonl).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from agents.policy.model import VLMPolicy

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum)
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(config.output_dir)
    seed_everything(config.seed + rank)

    # --- resume bookkeeping (refuse a checkpoint from another model / LoRA shape before loading anything)
    resume = resolve_checkpoint(config.resume_from) if config.resume_from else None
    start_iteration = 0
    if resume is not None:
        saved = load_trainer_state(resume)
        check_compatible(saved["fingerprint"], config.fingerprint(), resume)
        if saved["num_processes"] != world:
            raise ValueError(f"{resume}: written by {saved['num_processes']} processes, this run has {world}")
        start_iteration = int(saved["iteration"])

    # --- policy, optimizer (separate value-head learning rate), schedule over iterations
    with accelerator.main_process_first():
        model_path = resolve_model_path(config.model_name_or_path)
    policy = VLMPolicy.from_pretrained(
        str(resume / "policy") if resume is not None else model_path,
        use_lora=config.use_lora,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        freeze_vision=config.freeze_vision,
        constrained_actions=config.constrained_actions,
        device=accelerator.device,
        seed=None,  # sampling then draws from the global torch RNG, which checkpoints save and restore
    )
    value_params = policy.value_head_parameters()
    if (
        config.algo == "grpo"
    ):  # no value loss: keep the head out of the graph (DDP needs every trainable used)
        for param in value_params:
            param.requires_grad_(False)
    policy_params = [p for p in policy.trainable_parameters() if all(p is not v for v in value_params)]
    groups = [{"params": policy_params, "lr": config.lr}]
    if config.algo == "ppo":
        groups.append({"params": value_params, "lr": config.value_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, schedule=config.lr_schedule, total=config.num_iterations)
    )
    scorer, optimizer = accelerator.prepare(PolicyScorer(policy, config.temperature), optimizer)
    trainable = [
        group["params"] for group in groups
    ]  # clipped per group: value grads cannot swamp the policy
    trainable_shapes = {n: list(p.shape) for n, p in policy.named_parameters() if p.requires_grad}

    envs = make_vector_env(config.env_id, config.env_kwargs, config.num_envs, config.vector_mode)
    if resume is not None:
        saved_shapes = saved.get("trainable_shapes", trainable_shapes)
        check_compatible({"trainable_shapes": saved_shapes}, {"trainable_shapes": trainable_shapes}, resume)
        load_optimizer_and_scheduler(resume, optimizer, scheduler)
        set_rng_state(load_rng_state(resume, rank))
        # full fine-tuning: the KL anchor is the run's starting policy (after its warm start, if any)
        load_reference(policy, resume.parent / SFT_POLICY_DIR if config.sft_steps > 0 else model_path)
    elif config.sft_steps == 0:
        refresh_reference(policy)  # full fine-tuning from a saved policy: anchor KL to its weights
    else:
        sft = sft_warm_start(policy, scorer, envs, config, accelerator)
        accelerator.print(
            f"SFT warm start: {sft.steps} steps on {sft.samples} expert pairs, "
            f"loss {sft.losses[0]:.3f} -> {sft.losses[-1]:.3f} ({sft.seconds:.0f} s)"
        )
        if accelerator.is_main_process:  # the warm-started policy, before any RL (for evaluation / reuse)
            policy.save_pretrained(output_dir / SFT_POLICY_DIR)
            (output_dir / "sft.json").write_text(json.dumps({**sft.summary(), "losses": sft.losses}) + "\n")

    logger = RunLogger(
        output_dir,
        enabled=accelerator.is_main_process,
        tensorboard=config.tensorboard,
        keep_until=start_iteration if resume is not None else None,
    )
    guard = NonFiniteGuard(config.max_nonfinite)
    generate_kwargs = {
        "do_sample": True,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
    }
    metrics: dict[str, Any] = {}
    last_checkpoint: Path | None = None
    bar = tqdm(
        range(start_iteration + 1, config.num_iterations + 1),
        initial=start_iteration,
        total=config.num_iterations,
        disable=not (config.progress and accelerator.is_main_process),
        desc=config.algo,
    )
    for iteration in bar:
        iteration_start = time.perf_counter()
        policy.eval()

        # --- 1. rollout through env.step
        if config.algo == "ppo":
            observations, _ = envs.reset(seed=env_seeds(config.seed, rank, iteration, config.num_envs))
            streams, stats = collect_ppo(policy, envs, observations, config.rollout_steps, generate_kwargs)
        else:
            streams, stats = [], RolloutStats()
            groups_per_round = config.num_envs // config.group_size
            for round_index in range(config.grpo_rounds):
                seeds = env_seeds(config.seed, rank, iteration, groups_per_round, stream=round_index + 1)
                episodes, round_stats = collect_grpo(
                    policy, envs, seeds, config.group_size, generate_kwargs, round_index * groups_per_round
                )
                streams.extend(episodes)
                for name in ("generate_s", "env_s", "value_s", "generated_tokens"):
                    setattr(stats, name, getattr(stats, name) + getattr(round_stats, name))
                stats.episode_returns += round_stats.episode_returns
                stats.episode_lengths += round_stats.episode_lengths
                stats.episode_metrics += round_stats.episode_metrics
        decisions = [d for stream in streams for d in stream]
        metrics = {"iteration": iteration, "rollout/decisions": global_sum(accelerator, [len(decisions)])[0]}
        metrics.update(rollout_metrics(accelerator, decisions, stats))

        # --- 2. reference log-probs (one batched no-grad pass, adapter disabled) and per-token KL
        start = time.perf_counter()
        use_reference = config.kl_coef > 0
        refs = (
            reference_logprobs(policy, decisions, config.minibatch_size, config.temperature)
            if use_reference
            else [None] * len(decisions)
        )
        reference_s = time.perf_counter() - start
        token_kl = [
            ppo.kl_penalty(d.logprobs.float().cpu(), ref, config.kl_estimator, config.kl_clamp)
            if ref is not None
            else torch.zeros(len(d.response_ids))
            for d, ref in zip(decisions, refs, strict=True)
        ]
        metrics["kl/reference"] = global_mean_std(accelerator, [float(k.mean()) for k in token_kl])[0]

        # --- 3. advantages
        kl_in_reward = config.algo == "ppo" and config.kl_in_reward
        if config.algo == "ppo":
            token_rewards = []
            for d, kl in zip(decisions, token_kl, strict=True):
                reward = -config.kl_coef * kl if kl_in_reward else torch.zeros(len(d.response_ids))
                reward[-1] += d.reward
                token_rewards.append(reward)
            advantages, returns = ppo_targets(streams, token_rewards, config)
            all_values, all_returns = (
                torch.cat([d.values.float().cpu() for d in decisions]),
                torch.cat(returns),
            )
            metrics["explained_variance"] = ppo.explained_variance(all_values, all_returns)
            if config.whiten_advantages:
                whitened = ppo.masked_whiten(torch.cat(advantages))
                advantages = list(whitened.split([len(a) for a in advantages]))
        else:
            episode_returns = torch.tensor([sum(d.reward for d in episode) for episode in streams])
            group_adv = ppo.grpo_advantages(episode_returns, config.group_size)
            advantages = [
                torch.full((len(d.response_ids),), float(group_adv[j]))
                for j, ep in enumerate(streams)
                for d in ep
            ]
            returns = [torch.zeros(len(d.response_ids)) for d in decisions]
        samples = [
            Sample(d.prompt, d.response_ids, d.logprobs.float().cpu(), d.values.float().cpu(), ref, adv, ret)
            for d, ref, adv, ret in zip(decisions, refs, advantages, returns, strict=True)
        ]

        # --- 4. update: ppo_epochs x shuffled minibatches x grad_accum micro-batches
        start = time.perf_counter()
        policy.train()
        reward_bad = ppo.first_non_finite([("reward", torch.tensor([d.reward for d in decisions]))])
        reward_bad = reward_bad or ppo.first_non_finite([("advantages", torch.cat(advantages))])
        update = run_update(accelerator, scorer, optimizer, trainable, samples, config, iteration, reward_bad)
        for reason in update.pop("bad_reasons"):
            guard.bad(reason, iteration)
        if update["optimizer_steps"] > 0:
            guard.good()
        scheduler.step()
        update_s = time.perf_counter() - start
        metrics.update(update)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        if config.algo == "ppo":
            metrics["value_lr"] = optimizer.param_groups[1]["lr"]
        metrics["rollout/generated_tokens"] = int(global_sum(accelerator, [stats.generated_tokens])[0])
        metrics["tokens_per_s"] = stats.generated_tokens / max(stats.generate_s, 1e-9)
        metrics["time/generate"] = stats.generate_s
        metrics["time/env"] = stats.env_s
        metrics["time/bootstrap_values"] = stats.value_s
        metrics["time/reference"] = reference_s
        metrics["time/update"] = update_s
        metrics["time/iteration"] = time.perf_counter() - iteration_start
        logger.log(metrics)
        if on_iteration is not None:
            on_iteration(dict(metrics))
        bar.set_postfix(
            reward=f"{metrics['reward/mean']:.3f}", success=f"{metrics['episode/success_rate']:.2f}"
        )

        # --- 5. checkpoint (atomic; never with NaN weights)
        if iteration == config.num_iterations or (
            config.save_every > 0 and iteration % config.save_every == 0
        ):
            last_checkpoint = save_run(
                accelerator, policy, optimizer, scheduler, config, iteration, trainable_shapes
            )

    envs.close()
    logger.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()  # tears the process group down before exit (else gloo may abort at exit)
    return {**metrics, "checkpoint": str(last_checkpoint) if last_checkpoint else None}


def run_update(
    accelerator, scorer, optimizer, trainable, samples, config: PPOConfig, iteration: int, skip_reason
):
    """PPO/GRPO epochs over the samples. Returns averaged loss statistics and the NaN/inf events seen."""
    world, rank = accelerator.num_processes, accelerator.process_index
    totals: dict[str, list[float]] = {
        k: []
        for k in (
            "value_grad_norm",
            "loss/policy",
            "loss/value",
            "loss/entropy",
            "loss/kl",
            "clip_fraction",
            "approx_kl",
            "grad_norm",
        )
    }
    bad_reasons: list[str] = []
    steps = skipped = 0
    flagged = global_sum(accelerator, [1.0 if skip_reason else 0.0])[0]
    if flagged:
        bad_reasons.append(skip_reason or "reward (another process)")
        return {
            "optimizer_steps": 0,
            "skipped_updates": 1,
            "skip_reason": bad_reasons[0],
            "bad_reasons": bad_reasons,
        }
    count = len(samples)
    num_minibatches = math.ceil(count / config.minibatch_size)
    if world > 1:  # equal step counts on every process (GRPO episode lengths differ): the largest wins
        per_rank = torch.tensor([num_minibatches], device=accelerator.device)
        num_minibatches = int(accelerator.gather(per_rank).max())
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, rank, iteration]).generate_state(1)[0])
    )
    stop = False
    for _epoch in range(config.ppo_epochs):
        order = torch.randperm(count, generator=generator)
        order = order.repeat(math.ceil(num_minibatches * config.minibatch_size / count))[
            : num_minibatches * config.minibatch_size
        ]
        for minibatch in order.split(config.minibatch_size):
            batch = [samples[i] for i in minibatch.tolist()]
            tokens = sum(len(s.response_ids) for s in batch)
            parts = np.array_split(np.arange(len(batch)), config.grad_accum)
            local = {k: 0.0 for k in totals}
            bad = None
            for part in parts:
                micro = [batch[i] for i in part]
                with accelerator.accumulate(scorer):  # DDP/DeepSpeed sync only on the last micro-batch
                    terms = micro_batch_loss(scorer, micro, config, tokens)
                    bad = bad or ppo.first_non_finite([(name, value) for name, value in terms.items()])
                    accelerator.backward(
                        terms["loss"] * config.grad_accum
                    )  # accelerate divides by grad_accum
                for name in local:
                    key = name.split("/")[-1]
                    if key in terms:
                        local[name] += float(terms[key].detach())
            norms = [accelerator.clip_grad_norm_(params, config.max_grad_norm) for params in trainable]
            norms = [float(norm) if norm is not None else 0.0 for norm in norms]  # DeepSpeed clips itself
            grad_norm = norms[0]
            bad = bad or (None if all(math.isfinite(norm) for norm in norms) else "grad_norm")
            any_bad = global_sum(accelerator, [1.0 if bad else 0.0])[0]
            if any_bad:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                bad_reasons.append(
                    f"loss/{bad}" if bad and bad != "grad_norm" else (bad or "another process")
                )
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            local["grad_norm"] = grad_norm
            if len(norms) > 1:
                local["value_grad_norm"] = norms[1]
            for name, value in local.items():
                totals[name].append(value)
            if config.target_kl is not None:
                mean_kl = global_sum(accelerator, [local["approx_kl"]])[0] / world
                if mean_kl > config.target_kl:
                    stop = True
                    break
        if stop:
            break
    result: dict[str, Any] = {
        "optimizer_steps": steps,
        "skipped_updates": skipped,
        "early_stopped": float(stop),
    }
    for name, values in totals.items():
        result[name] = global_mean_std(accelerator, values)[0] if values else float("nan")
    if config.algo == "grpo":
        result.pop("loss/value")
        result.pop("value_grad_norm")
    if not (config.kl_coef > 0 and not (config.algo == "ppo" and config.kl_in_reward)):
        result.pop("loss/kl")
    if bad_reasons:
        result["skip_reason"] = bad_reasons[0]
    result["bad_reasons"] = bad_reasons
    return result


def micro_batch_loss(
    scorer, micro: Sequence[Sample], config: PPOConfig, minibatch_tokens: int
) -> dict[str, torch.Tensor]:
    """Loss of one micro-batch, weighted by its share of the minibatch's tokens (exact token mean overall)."""
    logprobs, entropy, values, mask = scorer([s.prompt for s in micro], [s.response_ids for s in micro])
    logprobs, entropy, values = logprobs.float(), entropy.float(), values.float()
    length, device = logprobs.shape[1], logprobs.device
    mask = mask.to(device)

    def padded(name: str) -> torch.Tensor:
        return pad_right([getattr(s, name) for s in micro], length).to(device)

    old_logprobs, advantages = padded("old_logprobs"), padded("advantages")
    weight = mask.sum() / minibatch_tokens
    terms = {
        "policy": ppo.clipped_policy_loss(logprobs, old_logprobs, advantages, mask, config.clip_range)
        * weight,
        "entropy": ppo.masked_mean(entropy, mask) * weight,
        "clip_fraction": ppo.clip_fraction(logprobs, old_logprobs, mask, config.clip_range) * weight,
        "approx_kl": ppo.approx_kl(logprobs, old_logprobs, mask) * weight,
    }
    loss = terms["policy"] - config.ent_coef * terms["entropy"]
    if config.algo == "ppo":
        value_loss = ppo.clipped_value_loss(
            values, padded("old_values"), padded("returns"), mask, config.value_clip
        )
        terms["value"] = value_loss * weight
        loss = loss + config.vf_coef * terms["value"]
    if config.kl_coef > 0 and not (config.algo == "ppo" and config.kl_in_reward):
        ref = padded("ref_logprobs")
        terms["kl"] = (
            ppo.masked_mean(ppo.kl_penalty(logprobs, ref, config.kl_estimator, config.kl_clamp), mask)
            * weight
        )
        loss = loss + config.kl_coef * terms["kl"]
    terms["loss"] = loss
    return terms


def parameter_digest(policy: torch.nn.Module) -> str:
    """sha256 of the trainable parameters (names and bytes): equal on all processes when DDP keeps sync."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in policy.named_parameters():
        if param.requires_grad or name.startswith("value_head"):
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_run(
    accelerator, policy, optimizer, scheduler, config: PPOConfig, iteration: int, shapes
) -> Path | None:
    """Checkpoint from the main process (RNG states of every process gathered first)."""
    local = json.dumps({"rng": rng_state(), "digest": parameter_digest(policy)})
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = [json.loads(item) for item in gather_object([local])]
    else:
        gathered = [json.loads(local)]
    states = [item["rng"] for item in gathered]
    path = None
    if accelerator.is_main_process:
        assert_finite_parameters({n: p for n, p in policy.named_parameters() if p.requires_grad})
        trainer_state = {
            "fingerprint": config.fingerprint(),
            "trainable_shapes": shapes,
            "num_processes": accelerator.num_processes,
            "parameter_digests": [item["digest"] for item in gathered],  # equal on every process under DDP
            "config": {f.name: getattr(config, f.name) for f in fields(config)},
        }
        path = save_checkpoint(
            config.output_dir,
            iteration,
            save_policy=policy.save_pretrained,
            optimizer=optimizer,
            scheduler=scheduler,
            trainer_state=trainer_state,
            rng_states=states,
            keep_last=config.keep_checkpoints,
        )
    accelerator.wait_for_everyone()
    return path


def save_initial_policy(config: PPOConfig, path: str | Path) -> Path:
    """Save the policy exactly as a run of ``config`` starts it (seeded, before any warm start) to ``path``:
    the "untrained" baseline that demos and benchmarks evaluate next to the trained one."""
    from agents.policy.model import VLMPolicy

    seed_everything(config.seed)
    policy = VLMPolicy.from_pretrained(
        resolve_model_path(config.model_name_or_path),
        use_lora=config.use_lora,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        freeze_vision=config.freeze_vision,
        constrained_actions=config.constrained_actions,
    )
    policy.save_pretrained(path)
    return Path(path)


# ---------------------------------------------------------------- command line
def parse_config(argv: Sequence[str] | None = None) -> PPOConfig:
    """Flags and/or ``--config FILE.yaml`` (flags win over the file) through ``HfArgumentParser``."""
    import yaml
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(PPOConfig, description="PPO/GRPO training of a VLMPolicy through env.step")
    parser.add_argument("--config", default=None, help="YAML file with PPOConfig fields")
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise SystemExit("--config needs a YAML file path")
        path = Path(args[index + 1])
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
        if isinstance(loaded.get("env_kwargs"), Mapping):
            loaded["env_kwargs"] = json.dumps(loaded["env_kwargs"])
        parser.set_defaults(**loaded)
    config, _ = parser.parse_args_into_dataclasses(args=args)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """``vln-gym train`` / ``python -m agents.ppo_train``; bad flags or config files exit 2 with one line."""
    import yaml

    try:
        config = parse_config(argv)
        model = config.model_name_or_path
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
            raise ValueError(f"PPOConfig.model_name_or_path: {model}: no such directory")
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"vln-gym train: error: {error}", file=sys.stderr)
        return 2
    result = ppo_train(config)
    printable = {k: v for k, v in result.items() if not k.startswith("time/")}
    print(json.dumps(printable, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["PPOConfig", "main", "ppo_train"]
