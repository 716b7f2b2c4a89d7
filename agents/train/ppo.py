"""PPO / GRPO math: small pure torch functions (CleanRL / SB3 definitions), tested against hand computation.

Conventions: ``mask`` is 1 for real tokens and 0 for padding; every reduction is a masked mean over the
real tokens of the whole batch (token-level average, as in CleanRL's LLM ports and TRL).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (all positions when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    count = mask.sum()
    if count.item() == 0:
        raise ValueError("masked_mean: the mask selects no element")
    return (values * mask).sum() / count


def masked_var(values: torch.Tensor, mask: torch.Tensor | None = None, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected when ``unbiased`` and more than one element)."""
    mean = masked_mean(values, mask)
    centred_sq = (values - mean) ** 2
    if mask is None:
        count = torch.tensor(float(values.numel()))
        total = centred_sq.sum()
    else:
        weights = mask.to(values.dtype)
        count = weights.sum()
        total = (centred_sq * weights).sum()
    if unbiased and count.item() > 1:
        return total / (count - 1)
    return total / count


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(values - mean) / sqrt(var + eps)`` over the masked positions; padding positions come back as 0."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    if mask is not None:
        whitened = whitened * mask.to(values.dtype)
    return whitened


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    ends: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over one flat time-ordered sequence (SB3 semantics).

    All inputs are 1-D of length T. Step ``t`` earns ``rewards[t]`` from the state valued ``values[t]`` and
    lands in a state valued ``next_values[t]``. ``terminated[t]``: the episode ended for real after ``t``
    (no bootstrap: the next value counts as 0). ``ends[t]``: the recursion stops after ``t`` (episode end,
    terminated or truncated, or the end of a rollout segment); a truncated step keeps its bootstrap value.
    ``gamma`` may be a per-step tensor (e.g. 1 between the tokens of one response, ``gamma`` between
    decisions). Returns ``(advantages, returns)`` with ``returns = advantages + values``.

        delta_t = r_t + gamma_t * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma_t * lam * (1 - ends_t) * A_{t+1}
    """
    length = rewards.shape[0]
    for name, tensor in (("values", values), ("next_values", next_values), ("terminated", terminated)):
        if tensor.shape != rewards.shape:
            raise ValueError(f"gae: {name} has shape {tuple(tensor.shape)}, rewards {tuple(rewards.shape)}")
    if ends.shape != rewards.shape:
        raise ValueError(f"gae: ends has shape {tuple(ends.shape)}, rewards {tuple(rewards.shape)}")
    rewards, values, next_values = rewards.double(), values.double(), next_values.double()
    gammas = torch.as_tensor(gamma, dtype=torch.float64)
    if gammas.ndim == 0:
        gammas = gammas.expand(length)
    elif gammas.shape != rewards.shape:
        raise ValueError(f"gae: gamma has shape {tuple(gammas.shape)}, rewards {tuple(rewards.shape)}")
    not_terminated = 1.0 - terminated.double()
    not_end = 1.0 - ends.double()
    deltas = rewards + gammas * not_terminated * next_values - values
    advantages = torch.zeros_like(rewards)
    running = 0.0
    for t in range(length - 1, -1, -1):
        running = deltas[t] + gammas[t] * lam * not_end[t] * running
        advantages[t] = running
    returns = advantages + values
    return advantages.float(), returns.float()


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Group-normalised advantages: ``(r - mean_g) / (std_g + eps)`` (TRL's GRPO; unbiased std).

    ``rewards`` is 1-D with the ``group_size`` members of each group contiguous. ``scale=False`` only centres.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"grpo_advantages: {rewards.numel()} rewards do not split into groups of {group_size}"
        )
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale and group_size > 1:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1", clamp: float = 10.0
) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled-token log-probs (Schulman's k1 / k3).

    k1 = log p - log q (unbiased, can be negative); k3 = exp(log q - log p) - 1 - (log q - log p) (>= 0).
    The result is clamped to ``[-clamp, clamp]`` so one wild token cannot dominate the reward.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio
    else:
        raise ValueError(f"kl_penalty: estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    return kl.clamp(-clamp, clamp)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution of each row of ``logits``: ``logsumexp - E[logit]``."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    weighted = torch.where(probs > 0, probs * logits, torch.zeros_like(logits))  # masked (-inf) logits add 0
    return torch.logsumexp(logits, dim=-1) - weighted.sum(dim=-1)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    clip_range: float,
) -> torch.Tensor:
    """PPO surrogate: ``mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))`` over masked tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    return masked_mean(torch.maximum(unclipped, clipped), mask)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None,
    clip_range: float | None,
) -> torch.Tensor:
    """``0.5 * mean(max((v - R)^2, (v_clip - R)^2))`` with ``v_clip = old + clip(v - old, -c, c)``.

    ``clip_range=None`` gives the plain ``0.5 * mean((v - R)^2)``.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask)
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """CleanRL's approx-KL(old || new) = ``mean((ratio - 1) - log ratio)`` (k3, always >= 0)."""
    log_ratio = logprobs - old_logprobs
    return masked_mean(torch.expm1(log_ratio) - log_ratio, mask)


def clip_fraction(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor | None, clip_range: float
) -> torch.Tensor:
    """Fraction of masked tokens whose ratio lies outside ``[1 - eps, 1 + eps]``."""
    ratio = torch.exp(logprobs - old_logprobs)
    return masked_mean(((ratio - 1.0).abs() > clip_range).to(logprobs.dtype), mask)


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """``1 - Var(returns - values) / Var(returns)`` (SB3); NaN when the returns have zero variance."""
    var_returns = masked_var(returns.double(), mask, unbiased=False)
    if var_returns.item() == 0.0:
        return float("nan")
    return float(1.0 - masked_var((returns - values).double(), mask, unbiased=False) / var_returns)


def first_non_finite(named: Sequence[tuple[str, torch.Tensor | float]]) -> str | None:
    """Name of the first quantity holding a NaN or an infinity, or None when all are finite."""
    for name, value in named:
        tensor = torch.as_tensor(value)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None
