"""The PPO / GRPO update: ``ppo_epochs`` passes of shuffled minibatches, each split into ``grad_accum``
micro-batches whose losses are weighted by their share of the minibatch's tokens (an exact token mean)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from agents.train import ppo
from agents.train.batch import Sample, pad_right
from agents.train.config import PPOConfig
from agents.train.runlog import global_mean_std, global_sum


class PolicyScorer(torch.nn.Module):
    """``forward = policy.evaluate`` as a tuple: DDP / DeepSpeed / FSDP wrap the module whose forward is the
    loss. ``forward(call=fn)`` runs ``fn()`` instead, inside the wrapper's forward (FSDP: with the root's
    shards gathered, see `agents.train.sharding`)."""

    def __init__(self, policy: torch.nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        # FSDP's transformer auto-wrap reads the HF model's layer classes (decoder layers, vision blocks)
        base = getattr(policy, "model", None)
        self._no_split_modules = list(getattr(base, "_no_split_modules", None) or [])

    def forward(
        self,
        prompts: Sequence | None = None,
        response_ids: Sequence[torch.Tensor] | None = None,
        *,
        call: Callable[[], Any] | None = None,
    ) -> Any:
        if call is not None:
            return call()
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


STAT_NAMES = (
    "value_grad_norm",
    "loss/policy",
    "loss/value",
    "loss/entropy",
    "loss/kl",
    "clip_fraction",
    "approx_kl",
    "grad_norm",
)


def minibatch_order(count: int, num_minibatches: int, config: PPOConfig, generator) -> list[list[int]]:
    """One epoch's shuffled minibatches of sample indices (wrapping around to fill ``num_minibatches``)."""
    order = torch.randperm(count, generator=generator)
    order = order.repeat(math.ceil(num_minibatches * config.minibatch_size / count))
    return [
        chunk.tolist()
        for chunk in order[: num_minibatches * config.minibatch_size].split(config.minibatch_size)
    ]


def norm_value(norm: Any) -> float:
    """A clipped gradient norm as a float: 0.0 for None (DeepSpeed clips itself); FSDP2 gives a DTensor."""
    if norm is None:
        return 0.0
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def minibatch_gradients(accelerator, scorer, trainable, batch: Sequence[Sample], config: PPOConfig):
    """Accumulate one minibatch's gradients over ``grad_accum`` micro-batches and clip them per group.

    Returns ``(statistics, first non-finite quantity or None)``."""
    tokens = sum(len(s.response_ids) for s in batch)
    local = dict.fromkeys(STAT_NAMES, 0.0)
    bad = None
    for part in np.array_split(np.arange(len(batch)), config.grad_accum):
        micro = [batch[i] for i in part]
        with accelerator.accumulate(scorer):  # DDP/DeepSpeed sync only on the last micro-batch
            terms = micro_batch_loss(scorer, micro, config, tokens)
            bad = bad or ppo.first_non_finite(list(terms.items()))
            accelerator.backward(terms["loss"] * config.grad_accum)  # accelerate divides by grad_accum
        for name in local:
            key = name.split("/")[-1]
            if key in terms:
                local[name] += float(terms[key].detach())
    norms = [norm_value(accelerator.clip_grad_norm_(params, config.max_grad_norm)) for params in trainable]
    local["grad_norm"] = norms[0]
    if len(norms) > 1:
        local["value_grad_norm"] = norms[1]
    if bad is None and not all(math.isfinite(norm) for norm in norms):
        bad = "grad_norm"
    return local, bad


def run_update(
    accelerator, scorer, optimizer, trainable, samples, config: PPOConfig, iteration: int, skip_reason
):
    """PPO/GRPO epochs over the samples. Returns averaged loss statistics and the NaN/inf events seen."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if global_sum(accelerator, [1.0 if skip_reason else 0.0])[0]:
        reason = skip_reason or "reward (another process)"
        return {"optimizer_steps": 0, "skipped_updates": 1, "skip_reason": reason, "bad_reasons": [reason]}
    totals: dict[str, list[float]] = {name: [] for name in STAT_NAMES}
    bad_reasons: list[str] = []
    steps = skipped = 0
    num_minibatches = math.ceil(len(samples) / config.minibatch_size)
    if world > 1:  # equal step counts on every process (GRPO episode lengths differ): the largest wins
        per_rank = torch.tensor([num_minibatches], device=accelerator.device)
        num_minibatches = int(accelerator.gather(per_rank).max())
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, rank, iteration]).generate_state(1)[0])
    )
    stop = False
    for _epoch in range(config.ppo_epochs):
        for minibatch in minibatch_order(len(samples), num_minibatches, config, generator):
            local, bad = minibatch_gradients(
                accelerator, scorer, trainable, [samples[i] for i in minibatch], config
            )
            if global_sum(accelerator, [1.0 if bad else 0.0])[0]:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                bad_reasons.append(
                    f"loss/{bad}" if bad and bad != "grad_norm" else (bad or "another process")
                )
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            for name, value in local.items():
                totals[name].append(value)
            if config.target_kl is not None:
                stop = global_sum(accelerator, [local["approx_kl"]])[0] / world > config.target_kl
                if stop:
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
