"""From decisions to update samples: reference log-probs, per-token rewards, GAE targets (PPO) and group
advantages (GRPO)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agents.train import ppo
from agents.train.config import PPOConfig
from agents.train.rollout import Decision


def pad_right(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros(len(tensors), length, dtype=tensors[0].dtype)
    for row, tensor in enumerate(tensors):
        out[row, : len(tensor)] = tensor
    return out


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


def token_rewards(decisions: Sequence[Decision], token_kl: Sequence[torch.Tensor], config: PPOConfig):
    """PPO per-token rewards: ``-kl_coef * KL`` per token (``kl_in_reward``) + the env reward on the last."""
    rewards = []
    for decision, kl in zip(decisions, token_kl, strict=True):
        reward = -config.kl_coef * kl if config.kl_in_reward else torch.zeros(len(decision.response_ids))
        reward[-1] += decision.reward
        rewards.append(reward)
    return rewards


def grpo_targets(episodes: Sequence[Sequence[Decision]], config: PPOConfig):
    """GRPO: every token of a member's decisions gets its group-normalised return (no returns needed)."""
    episode_returns = torch.tensor([sum(d.reward for d in episode) for episode in episodes])
    group_adv = ppo.grpo_advantages(episode_returns, config.group_size)
    advantages = [
        torch.full((len(d.response_ids),), float(group_adv[j])) for j, ep in enumerate(episodes) for d in ep
    ]
    returns = [torch.zeros(len(d.response_ids)) for ep in episodes for d in ep]
    return advantages, returns


def build_samples(
    streams: Sequence[Sequence[Decision]],
    refs: Sequence[torch.Tensor | None],
    token_kl: Sequence[torch.Tensor],
    config: PPOConfig,
) -> tuple[list[Sample], dict[str, float]]:
    """Update samples of one rollout (in the order of the flattened streams) and target statistics."""
    decisions = [d for stream in streams for d in stream]
    stats: dict[str, float] = {}
    if config.algo == "ppo":
        advantages, returns = ppo_targets(streams, token_rewards(decisions, token_kl, config), config)
        values = torch.cat([d.values.float().cpu() for d in decisions])
        stats["explained_variance"] = ppo.explained_variance(values, torch.cat(returns))
        if config.whiten_advantages:
            whitened = ppo.masked_whiten(torch.cat(advantages))
            advantages = list(whitened.split([len(a) for a in advantages]))
    else:
        advantages, returns = grpo_targets(streams, config)
    samples = [
        Sample(d.prompt, d.response_ids, d.logprobs.float().cpu(), d.values.float().cpu(), ref, adv, ret)
        for d, ref, adv, ret in zip(decisions, refs, advantages, returns, strict=True)
    ]
    return samples, stats
