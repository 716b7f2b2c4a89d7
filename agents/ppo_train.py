"""PPO and GRPO for `VLMPolicy`, with rewards from ``env.step`` (the loop reads top to bottom, CleanRL style).

    python -m agents.ppo_train [--config run.yaml] [--flag value ...]      # or: vln-gym train ...
    accelerate launch --config_file configs/accelerate_fsdp.yaml -m agents.ppo_train ...  # see configs/

One iteration = rollout on the episode runner (the policy generates for all live envs in one batch, texts
go to ``env.step``), reference log-probs (same model, adapter disabled, one batched no-grad pass),
advantages (PPO: token-level GAE across the decisions of an episode, bootstrapped at the rollout cut; GRPO:
group-normalised returns), then ``ppo_epochs`` passes of clipped updates over shuffled minibatches. Old
log-probs and values come from ``generate`` itself. Every process owns its own envs and seeds; gradients
are averaged by DDP, FSDP2 or DeepSpeed ZeRO-2 (`agents.train.sharding`).

PPO envs persist across iterations: an episode of ``max_steps`` decisions spans several rollouts of
``rollout_steps``. GRPO groups start from a reset or from a state reached by replaying the expert
(``grpo_start``). Determinism and resume: reset seeds come from (seed, process, env, episode counter),
minibatch shuffles from (seed, process, iteration), and checkpoints hold the global RNG states and the
episodes in flight (env snapshots), so on CPU ``N`` iterations equal ``k`` + resume + ``N - k``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.policy.reference import load_reference, refresh_reference
from agents.train import ppo
from agents.train.batch import build_samples, reference_logprobs
from agents.train.checkpoint import (
    CheckpointError,
    check_compatible,
    list_checkpoints,
    load_optimizer_and_scheduler,
    load_rng_state,
    load_runner_state,
    resume_point,
    save_run,
    set_rng_state,
    verify_digest,
)
from agents.train.config import PPOConfig, parse_config
from agents.train.envpool import make_env_pool
from agents.train.rollout import RolloutStats, collect_grpo, collect_ppo
from agents.train.rundir import RUN_FILES, RunDirError, claim_output_dir, release
from agents.train.runlog import NonFiniteGuard, RunLogger, global_mean_std, global_sum, rollout_metrics
from agents.train.runner import EpisodeRunner
from agents.train.sft import SFTReport, collect_expert_pairs, supervised_warm_start
from agents.train.sharding import (
    FullOptimizerState,
    ShardedPolicy,
    broadcast_from_main,
    configure_deepspeed,
    is_deepspeed,
    is_fsdp,
    make_accelerator,
)
from agents.train.update import PolicyScorer, lr_factor, run_update

SFT_POLICY_DIR = "sft_policy"  # OUTPUT_DIR/sft_policy: the policy right after the supervised warm start


# ---------------------------------------------------------------- small helpers
def env_seeds(seed: int, rank: int, iteration: int, count: int, stream: int = 0) -> list[int]:
    """Deterministic env seeds of one (process, iteration, stream)."""
    return [int(s) for s in np.random.SeedSequence([seed, rank, iteration, stream]).generate_state(count)]


def resolve_model_path(name: str) -> str:
    """A model name or path; ``tiny`` / ``tiny-qwen2_5_vl`` / ``tiny-qwen3_vl`` build the tiny models."""
    from agents.policy.tiny import ensure_tiny_model, tiny_family

    family = tiny_family(name)
    return str(ensure_tiny_model(family=family)) if family else name


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_policy(config: PPOConfig, path: str, device: Any = None, seed: int | None = None):
    from agents.policy.model import VLMPolicy

    return VLMPolicy.from_pretrained(
        path,
        use_lora=config.use_lora,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_target_modules=config.lora_target_list(),
        freeze_vision=config.freeze_vision,
        constrained_actions=config.constrained_actions,
        system_prompt=config.system_prompt,
        max_images=config.max_images,
        max_pixels=config.max_pixels,
        min_pixels=config.min_pixels,
        action_grammar=config.action_grammar(),
        recent_frames=config.recent_frames,
        device=device,
        seed=seed,
    )


SMALL_MODEL_PARAMETERS = 50_000_000


def set_threads_for(policy, torch_threads: int | None) -> int:
    """Torch intra-op threads: ``torch_threads`` when set, else 1 for models under 50M parameters (the tiny
    models: 1 thread measured fastest, `scripts/bench_threads.py`; more threads only add contention on a
    shared CPU) and torch's default (every core) for real checkpoints. Returns the count in use."""
    if torch_threads is None and sum(p.numel() for p in policy.parameters()) < SMALL_MODEL_PARAMETERS:
        torch_threads = 1
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    return torch.get_num_threads()


def save_initial_policy(config: PPOConfig, path: str | Path) -> Path:
    """Save the policy exactly as a run of ``config`` starts it (seeded, before any warm start) to ``path``:
    the "untrained" baseline that demos and benchmarks evaluate next to the trained one."""
    seed_everything(config.seed)
    load_policy(config, resolve_model_path(config.model_name_or_path)).save_pretrained(path)
    return Path(path)


def build_optimizer(policy, config: PPOConfig):
    """AdamW with the policy and (PPO) the value head as separate groups, and the LR schedule."""
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
    return optimizer, scheduler, [group["params"] for group in groups]  # clipped per group


def prepare_training(accelerator, policy, config: PPOConfig):
    """The optimizer and schedule, and the scorer prepared by accelerate (DDP, DeepSpeed or FSDP).

    Returns ``(scorer, optimizer, scheduler, trainable, policy_view, checkpointed)``: ``trainable`` = the
    parameter groups clipped separately (FSDP swaps in sharded parameters), ``policy_view`` = the policy
    as checkpoints read it and ``checkpointed`` = the optimizer as checkpoints save it (under FSDP: through
    the sharded scorer, as full states; else the policy and optimizer themselves)."""
    optimizer, scheduler, _ = build_optimizer(policy, config)
    configure_deepspeed(accelerator, config.minibatch_size // config.grad_accum, config.max_grad_norm)
    if is_fsdp(accelerator):
        broadcast_from_main(policy)  # as DDP does: LoRA adapters, value head drawn per process
    scorer, optimizer = accelerator.prepare(PolicyScorer(policy, config.temperature), optimizer)
    trainable = [group["params"] for group in optimizer.param_groups]
    if not is_fsdp(accelerator):
        return scorer, optimizer, scheduler, trainable, policy, optimizer
    view = ShardedPolicy(policy, scorer, accelerator.state.fsdp_plugin.reshard_after_forward)
    return scorer, optimizer, scheduler, trainable, view, FullOptimizerState(scorer, optimizer)


def sft_warm_start(policy, scorer, pool, config: PPOConfig, accelerator) -> SFTReport:
    """``sft_steps`` supervised steps on expert answers before RL (as VLN-R1 does); see `agents.train.sft`."""
    rank = accelerator.process_index
    if (
        policy.grammar.max_actions > 1
        and pool.get_attr("views") == "world"
        and pool.get_attr("expert_plan") == "next"
    ):
        raise ValueError(
            "the warm start teaches chunks of the expert's next actions (max_actions_per_turn > 1), but the "
            "env reports only the next one: set env_kwargs expert_plan 'full'"
        )
    pairs = collect_expert_pairs(
        pool,
        config.sft_samples,
        seeds=env_seeds(config.seed, rank, 0, pool.num_envs, stream=99),
        explore=config.sft_explore,
        rng=np.random.default_rng([config.seed, rank, 99]),
        encode=policy.grammar.encode,
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


def grpo_start_mode(config: PPOConfig, pool) -> str:
    """``grpo_start``, with ``auto`` = expert_prefix where episodes have a middle (world, trajectory)."""
    if config.grpo_start != "auto":
        return config.grpo_start
    return "reset" if pool.get_attr("views") == "record" else "expert_prefix"


def collect(config: PPOConfig, policy, runner: EpisodeRunner, iteration: int, rank: int, gen: dict):
    """One iteration's rollout: PPO streams continuing the episodes in flight, or GRPO rounds of groups."""
    if config.algo == "ppo":
        return collect_ppo(policy, runner, config.rollout_steps, gen, seed=config.seed, rank=rank)
    streams, stats = [], RolloutStats()
    groups = config.num_envs // config.group_size
    start = grpo_start_mode(config, runner.pool)
    for round_index in range(config.grpo_rounds):
        seeds = env_seeds(config.seed, rank, iteration, groups, stream=round_index + 1)
        prefix_rng = np.random.default_rng([config.seed, rank, iteration, round_index, 7])
        episodes, round_stats = collect_grpo(
            policy,
            runner,
            seeds,
            config.group_size,
            gen,
            first_group=round_index * groups,
            start=start,
            prefix_steps=prefix_rng.integers(0, config.grpo_prefix_max + 1, size=groups).tolist(),
            turn_budget=config.grpo_turn_budget,
        )
        streams.extend(episodes)
        stats.merge(round_stats)
    return streams, stats


def _refuse_finished(resume: Path, iteration: int, num_iterations: int) -> None:
    """ValueError for a resume of a run that has no iteration left (it printed a null checkpoint)."""
    if iteration >= num_iterations:
        raise ValueError(
            f"{resume}: the run is already at iteration {iteration} of num_iterations {num_iterations}: "
            "nothing to train; raise --num_iterations to continue it"
        )


# ---------------------------------------------------------------- the training run
def ppo_train(
    config: PPOConfig, on_iteration: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Train; returns the last iteration's metrics plus ``checkpoint`` (path of the final checkpoint).

    ``on_iteration(metrics)`` is called on every process after each iteration's update and logging (before
    its checkpoint), with that iteration's metrics row (the dict written to metrics.jsonl).
    """
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    accelerator = make_accelerator(config.grad_accum)
    lock = None
    try:
        lock = claim_output_dir(config, accelerator)
        return train(config, accelerator, on_iteration)
    finally:
        release(lock)
        accelerator.end_training()  # tears the process group down before exit (else gloo may abort at exit)


def train(config: PPOConfig, accelerator, on_iteration=None) -> dict[str, Any]:
    """The run itself, in an owned output dir (see `ppo_train`)."""
    from tqdm.auto import tqdm

    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(config.output_dir)
    seed_everything(config.seed + rank)
    resume, saved = resume_point(config, world)
    if resume is not None and is_deepspeed(accelerator):
        raise ValueError(
            f"{resume}: resuming a DeepSpeed run is not supported (its optimizer state is partitioned per "
            "process and checkpoints hold process 0's part); resume with DDP or FSDP, or start a new run"
        )
    start_iteration = int(saved["iteration"])

    # --- policy (sampling draws from the global torch RNG, which checkpoints save), optimizer, schedule
    with accelerator.main_process_first():
        model_path = resolve_model_path(config.model_name_or_path)
    policy = load_policy(config, str(resume / "policy") if resume else model_path, accelerator.device, None)
    set_threads_for(policy, config.torch_threads)
    if resume is not None:
        verify_digest(policy, saved, rank, resume)
        # full fine-tuning: the KL anchor is the run's starting policy (after its warm start, if any)
        load_reference(policy, resume.parent / SFT_POLICY_DIR if config.sft_steps > 0 else model_path)
    elif config.sft_steps == 0:
        refresh_reference(policy)  # full fine-tuning from a saved policy: anchor KL to its weights
    run_id = saved.get("run_id") or uuid.uuid4().hex
    scorer, optimizer, scheduler, trainable, policy_view, checkpointed = prepare_training(
        accelerator, policy, config
    )
    # FSDP: phases that read weights outside the loss run with the shards gathered (see agents.train.sharding)
    gathered = policy_view.gathered if isinstance(policy_view, ShardedPolicy) else lambda phase: phase()
    trainable_shapes = {n: list(p.shape) for n, p in policy.named_parameters() if p.requires_grad}
    pool = make_env_pool(config.env_id, config.env_kwargs, config.num_envs, config.vector_mode)
    runner = EpisodeRunner(pool)

    # --- resume (optimizer, RNG, KL anchor, episodes in flight), or a fresh start (optional warm start)
    if resume is not None:
        saved_shapes = saved.get("trainable_shapes", trainable_shapes)
        check_compatible({"trainable_shapes": saved_shapes}, {"trainable_shapes": trainable_shapes}, resume)
        load_optimizer_and_scheduler(resume, checkpointed, scheduler)
        set_rng_state(load_rng_state(resume, rank))
        in_flight = load_runner_state(resume, rank)
        if in_flight is not None and config.algo == "ppo":
            runner.load_state(in_flight)
        _refuse_finished(resume, start_iteration, config.num_iterations)
    elif config.sft_steps > 0:
        sft = sft_warm_start(policy, scorer, pool, config, accelerator)
        accelerator.print(
            f"SFT warm start: {sft.steps} steps on {sft.samples} expert pairs, "
            f"loss {sft.losses[0]:.3f} -> {sft.losses[-1]:.3f} ({sft.seconds:.0f} s)"
        )
        full = policy_view.full_state(accelerator) if isinstance(policy_view, ShardedPolicy) else None
        if accelerator.is_main_process:  # the warm-started policy, before any RL (for evaluation / reuse)
            policy.save_pretrained(output_dir / SFT_POLICY_DIR, state_dict=full)
            (output_dir / "sft.json").write_text(json.dumps({**sft.summary(), "losses": sft.losses}) + "\n")

    logger = RunLogger(
        output_dir,
        enabled=accelerator.is_main_process,
        tensorboard=config.tensorboard,
        keep_until=start_iteration if resume is not None else None,
        config=config.as_dict(),
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

        # --- 1. rollout through env.step (PPO: the episodes in flight continue)
        streams, stats = gathered(partial(collect, config, policy, runner, iteration, rank, generate_kwargs))
        decisions = [d for stream in streams for d in stream]
        metrics = {"iteration": iteration, "rollout/decisions": global_sum(accelerator, [len(decisions)])[0]}
        metrics.update(rollout_metrics(accelerator, decisions, stats))

        # --- 2. reference log-probs (one batched no-grad pass, adapter disabled) and per-token KL
        start = time.perf_counter()
        if config.kl_coef > 0:
            score = partial(reference_logprobs, policy, decisions, config.minibatch_size, config.temperature)
            refs = gathered(score)
        else:
            refs = [None] * len(decisions)
        reference_s = time.perf_counter() - start
        token_kl = [
            torch.zeros(len(d.response_ids))
            if ref is None
            else ppo.kl_penalty(d.logprobs.float().cpu(), ref, config.kl_estimator, config.kl_clamp)
            for d, ref in zip(decisions, refs, strict=True)
        ]
        metrics["kl/reference"] = global_mean_std(accelerator, [float(k.mean()) for k in token_kl])[0]

        # --- 3. advantages and targets (PPO: GAE bootstrapped at the cut; GRPO: group-normalised returns)
        samples, target_stats = build_samples(streams, refs, token_kl, config)
        metrics.update(target_stats)

        # --- 4. update: ppo_epochs x shuffled minibatches x grad_accum micro-batches
        start = time.perf_counter()
        policy.train()
        reward_bad = ppo.first_non_finite([("reward", torch.tensor([d.reward for d in decisions]))])
        reward_bad = reward_bad or ppo.first_non_finite(
            [("advantages", torch.cat([s.advantages for s in samples]))]
        )
        update = run_update(accelerator, scorer, optimizer, trainable, samples, config, iteration, reward_bad)
        for reason in update.pop("bad_reasons"):
            guard.bad(reason, iteration)
        if update["optimizer_steps"] > 0:
            guard.good()
        scheduler.step()
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
        metrics["time/update"] = time.perf_counter() - start
        metrics["time/iteration"] = time.perf_counter() - iteration_start
        logger.log(metrics)
        if on_iteration is not None:
            on_iteration(dict(metrics))
        bar.set_postfix(
            reward=f"{metrics['reward/mean']:.3f}", success=f"{metrics['episode/success_rate']:.2f}"
        )

        # --- 5. checkpoint (atomic; never with NaN weights; PPO saves the episodes in flight)
        if iteration == config.num_iterations or (
            config.save_every > 0 and iteration % config.save_every == 0
        ):
            in_flight = runner.state() if config.algo == "ppo" else None
            last_checkpoint = save_run(
                accelerator,
                policy_view,
                checkpointed,
                scheduler,
                config,
                iteration,
                trainable_shapes,
                in_flight,
                run_id,
            )

    pool.close()
    logger.close()
    accelerator.wait_for_everyone()
    return {**metrics, "checkpoint": str(last_checkpoint) if last_checkpoint else None}


# ---------------------------------------------------------------- command line
def _interrupted(output_dir: str) -> str:
    """What a Ctrl-C leaves: whole checkpoints to resume, or (during the warm start, before the first
    checkpoint) nothing to resume."""
    if list_checkpoints(output_dir):
        return (
            f"interrupted; the checkpoints in {output_dir} are whole (continue with --resume_from "
            f"{output_dir})"
        )
    if not any((Path(output_dir) / name).exists() for name in RUN_FILES):  # removed, or nothing written
        return "interrupted before the first checkpoint; nothing was kept (run the same command again)"
    return (
        f"interrupted before the first checkpoint; nothing to resume in {output_dir} (start over with "
        "--overwrite_output_dir)"
    )


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
    try:
        result = ppo_train(config)
    # OSError: a model that is not found, a full disk
    except (RunDirError, CheckpointError, ValueError, OSError) as error:
        print(f"vln-gym train: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vln-gym train: {_interrupted(config.output_dir)}", file=sys.stderr)
        return 130
    printable = {k: v for k, v in result.items() if not k.startswith("time/")}
    print(json.dumps(printable, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["PPOConfig", "main", "parse_config", "ppo_train"]
