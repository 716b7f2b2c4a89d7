"""agents.train.ppo: every function against numbers computed by hand (and GAE against SB3's buffer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.train import ppo


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- masked statistics
def test_masked_mean_ignores_padding():
    assert ppo.masked_mean(t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])).item() == pytest.approx(2.0)
    assert ppo.masked_mean(t([1.0, 3.0])).item() == pytest.approx(2.0)


def test_masked_mean_rejects_empty_mask():
    with pytest.raises(ValueError, match="no element"):
        ppo.masked_mean(t([1.0]), t([0]))


def test_masked_var_and_whiten():
    values, mask = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    assert ppo.masked_var(values, mask).item() == pytest.approx(1.0)  # unbiased: (1 + 0 + 1) / 2
    assert ppo.masked_var(values, mask, unbiased=False).item() == pytest.approx(2.0 / 3.0)
    whitened = ppo.masked_whiten(values, mask)
    assert whitened.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert ppo.masked_whiten(values, mask, shift_mean=False).tolist() == pytest.approx([1, 2, 3, 0], abs=1e-6)


# ---------------------------------------------------------------- GAE
REWARDS, VALUES, NEXT_VALUES = t([1.0, 0.0, 2.0]), t([0.5, 0.4, 0.3]), t([0.4, 0.3, 0.6])


def test_gae_terminated_does_not_bootstrap():
    adv, ret = ppo.gae(REWARDS, VALUES, NEXT_VALUES, t([0, 0, 1]), t([0, 0, 1]), gamma=0.9, lam=0.8)
    # delta = [1 + .9*.4 - .5, .9*.3 - .4, 2 - .3] = [.86, -.13, 1.7]; A_t = delta_t + .72 A_{t+1}
    assert adv.tolist() == pytest.approx([0.86 + 0.72 * 1.094, 1.094, 1.7], abs=1e-6)
    assert ret.tolist() == pytest.approx([0.86 + 0.72 * 1.094 + 0.5, 1.094 + 0.4, 2.0], abs=1e-6)


def test_gae_truncated_bootstraps():
    adv, _ = ppo.gae(REWARDS, VALUES, NEXT_VALUES, t([0, 0, 0]), t([0, 0, 1]), gamma=0.9, lam=0.8)
    # last delta = 2 + .9 * .6 - .3 = 2.24
    assert adv.tolist() == pytest.approx([0.86 + 0.72 * 1.4828, 1.4828, 2.24], abs=1e-6)


def test_gae_stops_at_episode_boundary():
    adv, _ = ppo.gae(REWARDS, VALUES, NEXT_VALUES, t([1, 0, 0]), t([1, 0, 1]), gamma=0.9, lam=0.8)
    assert adv.tolist() == pytest.approx([0.5, 1.4828, 2.24], abs=1e-6)


def test_gae_per_step_gamma():
    adv, _ = ppo.gae(
        t([0, 0, 1]), t([0, 0, 0]), t([0, 0, 0]), t([0, 0, 1]), t([0, 0, 1]), t([1, 0.5, 1]), 1.0
    )
    assert adv.tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_gae_matches_stable_baselines3_buffer():
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rng = np.random.default_rng(0)
    size = 12
    rewards, values = rng.normal(size=size), rng.normal(size=size)
    episode_starts = np.zeros(size)
    episode_starts[[0, 4, 9]] = 1.0
    last_value, last_done = 0.7, np.array([False])
    buffer = RolloutBuffer(size, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), gamma=0.95, gae_lambda=0.9)
    for step in range(size):
        buffer.add(
            np.zeros((1, 1)),
            np.zeros((1, 1)),
            np.array([rewards[step]]),
            np.array([episode_starts[step]]),
            torch.tensor([values[step]]),
            torch.zeros(1),
        )
    buffer.compute_returns_and_advantage(torch.tensor([last_value]), last_done)

    ends = np.append(episode_starts[1:], 1.0)
    next_values = np.append(values[1:], last_value)
    terminated = np.append(episode_starts[1:], float(last_done[0]))
    adv, ret = ppo.gae(t(rewards), t(values), t(next_values), t(terminated), t(ends), gamma=0.95, lam=0.9)
    np.testing.assert_allclose(adv.numpy(), buffer.advantages[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), buffer.returns[:, 0], rtol=1e-5, atol=1e-5)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="values"):
        ppo.gae(t([1, 2]), t([1]), t([1, 2]), t([0, 0]), t([0, 1]), 0.9, 0.9)


# ---------------------------------------------------------------- losses and diagnostics
RATIOS = [1.5, 0.5, 1.1]
LOGPROBS, OLD = torch.log(t(RATIOS)), torch.zeros(3)
ADVANTAGES = t([1.0, 1.0, -2.0])


def test_clipped_policy_loss():
    # per token max(-A r, -A clip(r)): [max(-1.5, -1.2), max(-0.5, -0.8), max(2.2, 2.2)] = [-1.2, -0.5, 2.2]
    loss = ppo.clipped_policy_loss(LOGPROBS, OLD, ADVANTAGES, None, clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 / 3, abs=1e-6)
    masked = ppo.clipped_policy_loss(LOGPROBS, OLD, ADVANTAGES, t([1, 1, 0]), clip_range=0.2)
    assert masked.item() == pytest.approx(-0.85, abs=1e-6)


def test_clipped_policy_loss_gradient_zero_when_clipped():
    logprobs = LOGPROBS.clone().requires_grad_(True)
    ppo.clipped_policy_loss(logprobs, OLD, ADVANTAGES, None, clip_range=0.2).backward()
    # token 0 is clipped (ratio 1.5 > 1.2 with A > 0): no gradient; token 1: d(-A r)/dlogp = -r/3
    assert logprobs.grad.tolist() == pytest.approx([0.0, -0.5 / 3, 2.0 * 1.1 / 3], abs=1e-6)


def test_clipped_value_loss():
    values, old, returns = t([1.0, 0.0]), t([0.5, 0.5]), t([2.0, 1.0])
    # v_clip = [0.7, 0.3]; unclipped [1, 1], clipped [1.69, 0.49] -> 0.5 * mean([1.69, 1])
    assert ppo.clipped_value_loss(values, old, returns, None, 0.2).item() == pytest.approx(0.6725, abs=1e-6)
    assert ppo.clipped_value_loss(values, old, returns, None, None).item() == pytest.approx(0.5, abs=1e-6)


def test_clip_fraction_and_approx_kl():
    assert ppo.clip_fraction(LOGPROBS, OLD, None, 0.2).item() == pytest.approx(2 / 3)
    expected = sum((r - 1) - math.log(r) for r in RATIOS) / 3
    assert ppo.approx_kl(LOGPROBS, OLD, None).item() == pytest.approx(expected, abs=1e-6)


def test_kl_estimators():
    logp, ref = t([-1.0, -2.0]), t([-2.0, -1.0])
    assert ppo.kl_penalty(logp, ref, "k1").tolist() == pytest.approx([1.0, -1.0])
    assert ppo.kl_penalty(logp, ref, "k3").tolist() == pytest.approx([math.exp(-1), math.e - 2], abs=1e-6)
    assert ppo.kl_penalty(t([0.0]), t([-30.0]), "k1", clamp=10.0).item() == 10.0
    assert ppo.kl_penalty(t([-30.0]), t([0.0]), "k3", clamp=5.0).item() == 5.0
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_penalty(logp, ref, "k2")


def test_k3_estimates_true_kl_on_samples():
    torch.manual_seed(0)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    samples = torch.multinomial(p, 200_000, replacement=True)
    true_kl = float((p * (p / q).log()).sum())
    k3 = ppo.kl_penalty(p.log()[samples], q.log()[samples], "k3").mean().item()
    assert k3 == pytest.approx(true_kl, rel=0.02)


def test_entropy_from_logits():
    assert ppo.entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    logits = torch.log(t([0.5, 0.25, 0.25]))
    assert ppo.entropy_from_logits(logits).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    masked = t([0.0, float("-inf")])
    assert ppo.entropy_from_logits(masked).item() == pytest.approx(0.0)


def test_grpo_advantages():
    adv = ppo.grpo_advantages(t([1, 0, 0, 1, 2, 2, 2, 2]), group_size=4)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 2
    assert adv[:4].tolist() == pytest.approx([expected[0], expected[1], expected[1], expected[0]], abs=1e-5)
    assert adv[4:].tolist() == [0.0] * 4
    assert ppo.grpo_advantages(t([1, 3]), 2, scale=False).tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="groups of 4"):
        ppo.grpo_advantages(t([1, 2, 3]), 4)


def test_explained_variance():
    returns = t([1.0, 2.0, 3.0])
    assert ppo.explained_variance(returns, returns) == pytest.approx(1.0)
    assert ppo.explained_variance(t([2.0, 2.0, 2.0]), returns) == pytest.approx(0.0)
    assert math.isnan(ppo.explained_variance(returns, t([1.0, 1.0, 1.0])))


def test_first_non_finite():
    assert ppo.first_non_finite([("a", torch.ones(2)), ("b", 1.0)]) is None
    assert ppo.first_non_finite([("a", torch.ones(2)), ("loss", float("nan")), ("c", math.inf)]) == "loss"
