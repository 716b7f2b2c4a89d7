"""A GRPO group's prompt is processed once: shared generation and scoring give the unshared numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agents.policy.model import VLMPolicy
from agents.policy.prompt_sharing import distinct_observations, distinct_prompts
from agents.policy.tiny import FAMILIES, build_tiny_model
from vln_gym.actions import parse_action

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=FAMILIES, ids=FAMILIES)
def tiny_path(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / request.param, request.param)


def make_obs(valid: int, seed: int, instruction: str = "Walk to the red door and stop.") -> dict:
    rng = np.random.default_rng(seed)
    frames = np.zeros((3, 224, 224, 3), np.uint8)
    frames[3 - valid :] = rng.integers(0, 256, (valid, 224, 224, 3), dtype=np.uint8)
    mask = np.zeros(3, np.int8)
    mask[3 - valid :] = 1
    return {"frames": frames, "frame_mask": mask, "instruction": instruction}


def copies(obs: dict, count: int) -> list[dict]:
    """``count`` equal observations that are distinct objects (as a vector env returns them)."""
    return [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()} for _ in range(count)]


def groups() -> list[dict]:
    """Two groups of 3 (different prompt lengths), then a group whose second member differs by a pixel."""
    odd = make_obs(1, seed=3)
    odd["frames"][-1, 0, 0, 0] ^= 1
    return [*copies(make_obs(2, seed=1), 3), *copies(make_obs(1, seed=2), 3), make_obs(1, seed=3), odd]


def perturbed(policy: VLMPolicy, scale: float = 0.05) -> VLMPolicy:
    """Move the LoRA weights off zero (a fresh adapter is a no-op and its A matrices get no gradient)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return policy


# ------------------------------------------------------------------ which inputs are the same


def test_distinct_observations_match_equal_fields_only():
    a, b = make_obs(2, seed=0), make_obs(2, seed=1)
    other_text = dict(a, instruction="Turn left.")
    other_pixel = copies(a, 1)[0]
    other_pixel["frames"][1, 5, 5, 2] ^= 1
    unreadable = dict(a, extra=[1, 2])  # a field this module does not compare: never shared
    observations = [a, copies(a, 1)[0], b, other_text, a, other_pixel, unreadable, unreadable]
    first, rows = distinct_observations(observations)
    assert first == [0, 2, 3, 5, 6, 7]
    assert rows == [0, 0, 1, 2, 0, 3, 4, 5]


def test_distinct_prompts_are_by_identity():
    p, q = object(), object()
    unique, rows = distinct_prompts([p, q, p, p])
    assert unique == [p, q] and rows == [0, 1, 0, 0]


# ------------------------------------------------------------------ generation


@pytest.mark.parametrize("constrained", [False, True])
def test_shared_generation_equals_unshared(tiny_path, constrained):
    observations = groups()
    runs = {}
    for share in (True, False):  # same seed, so the same sampling stream
        policy = VLMPolicy.from_pretrained(str(tiny_path), seed=5, constrained_actions=constrained)
        runs[share] = policy.generate(observations, max_new_tokens=6, share_prompts=share)
    shared, alone = runs[True], runs[False]
    for i in range(len(observations)):
        assert shared.response_ids[i].tolist() == alone.response_ids[i].tolist()
        torch.testing.assert_close(shared.logprobs[i], alone.logprobs[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(shared.values[i], alone.values[i], atol=1e-5, rtol=0)
        assert torch.equal(shared.prompts[i].input_ids, alone.prompts[i].input_ids)
    assert shared.texts == alone.texts
    # one object per distinct observation; the group with a differing member falls back for that member
    assert shared.prompts[0] is shared.prompts[1] is shared.prompts[2]
    assert shared.prompts[3] is shared.prompts[4] is shared.prompts[5]
    assert shared.prompts[0] is not shared.prompts[3]
    assert shared.prompts[6] is not shared.prompts[7]
    assert len({id(p) for p in alone.prompts}) == len(observations)
    # members of a group sample differently from one cache
    assert len({tuple(shared.response_ids[i].tolist()) for i in range(3)}) > 1 or constrained
    if constrained:
        assert all(parse_action(text).valid for text in shared.texts)


def test_generation_processes_each_distinct_observation_once(tiny_path, monkeypatch):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=0)
    prepared, prompt_rows = [], []
    prepare, hidden = policy.prepare, policy._hidden

    def counting_prepare(observations, **kwargs):
        prepared.append(len(observations))
        return prepare(observations, **kwargs)

    def counting_hidden(inputs, model=None, **kwargs):
        if "cache" not in kwargs:  # the prompt forward (decode steps run on the cache)
            prompt_rows.append(inputs["input_ids"].shape[0])
        return hidden(inputs, model=model, **kwargs)

    monkeypatch.setattr(policy, "prepare", counting_prepare)
    monkeypatch.setattr(policy, "_hidden", counting_hidden)
    generation = policy.generate(groups(), max_new_tokens=3)
    assert prepared == [4] and prompt_rows == [4]  # 8 observations, 4 distinct
    assert len(generation.response_ids) == 8


def test_generation_errors_name_the_original_observation(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=0)
    empty = make_obs(1, seed=0)
    empty["frame_mask"][:] = 0
    with pytest.raises(ValueError, match="observation 3"):
        policy.generate([*copies(make_obs(1, seed=1), 3), empty], max_new_tokens=2)


# ------------------------------------------------------------------ scoring (the update)


def _unshared(prompts):
    return [dataclasses.replace(p) for p in prompts]  # equal content, one object per sample


@pytest.mark.parametrize("constrained", [False, True])
def test_shared_scoring_equals_unshared_with_gradients(tiny_path, constrained):
    policy = perturbed(VLMPolicy.from_pretrained(str(tiny_path), seed=1, constrained_actions=constrained))
    generation = policy.generate(groups(), max_new_tokens=5)
    # ragged responses (prefixes of the sampled ones stay inside the grammar)
    responses = [r[: max(1, len(r) - i % 3)] for i, r in enumerate(generation.response_ids)]
    assert len({len(r) for r in responses}) > 1
    results = {}
    for share in (True, False):
        prompts = generation.prompts if share else _unshared(generation.prompts)
        assert (len(distinct_prompts(prompts)[0]) < len(prompts)) is share
        policy.zero_grad(set_to_none=True)
        out = policy.evaluate(prompts, responses)
        loss = (
            -(out.logprobs * out.mask).sum()
            + (out.values * out.mask).pow(2).sum()
            - (out.entropy * out.mask).sum()
        )
        loss.backward()
        grads = [p.grad.clone() for p in policy.trainable_parameters()]
        results[share] = (out, grads, policy.reference_logprobs(prompts, responses))
    (shared, shared_grads, shared_ref), (alone, alone_grads, alone_ref) = results[True], results[False]
    assert torch.equal(shared.mask, alone.mask)
    real = alone.mask.bool()
    for name in ("logprobs", "entropy", "values"):
        torch.testing.assert_close(getattr(shared, name)[real], getattr(alone, name)[real], atol=2e-5, rtol=0)
    torch.testing.assert_close(shared_ref[real], alone_ref[real], atol=2e-5, rtol=0)
    assert any(g.abs().max() > 0 for g in alone_grads)
    for a, b in zip(shared_grads, alone_grads, strict=True):  # float32 sums in another order
        assert float((a - b).norm()) <= 1e-5 * float(b.norm()) + 1e-6, float((a - b).norm() / b.norm())
    for i, n in enumerate(len(r) for r in responses):  # and the sampling distribution
        torch.testing.assert_close(
            shared.logprobs[i, :n].detach(), generation.logprobs[i][:n], atol=2e-5, rtol=0
        )


def test_shared_scoring_runs_each_prompt_once(tiny_path, monkeypatch):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=0)
    generation = policy.generate(groups(), max_new_tokens=3)
    shapes = []
    hidden = policy._hidden

    def recording_hidden(inputs, model=None, **kwargs):
        shapes.append(tuple(inputs["input_ids"].shape))
        return hidden(inputs, model=model, **kwargs)

    monkeypatch.setattr(policy, "_hidden", recording_hidden)
    policy.evaluate(generation.prompts, generation.response_ids)
    longest_prompt = max(len(p.input_ids) for p in generation.prompts)
    longest_response = max(len(r) for r in generation.response_ids)
    assert shapes == [(4, longest_prompt), (8, longest_response)]


# ------------------------------------------------------------------ GRPO collection


def test_grpo_group_members_share_their_start_prompt():
    from agents.ppo_train import resolve_model_path
    from agents.train.envpool import make_env_pool
    from agents.train.rollout import collect_grpo
    from agents.train.runner import EpisodeRunner

    policy = VLMPolicy.from_pretrained(resolve_model_path("tiny"), constrained_actions=True, seed=0)
    world = {"action_space": "text", "image_size": [32, 32], "world_episodes": 8, "history_frames": 2}
    pool = make_env_pool("VLN-v0", {**world, "max_steps": 6}, 6)
    try:
        episodes, _ = collect_grpo(policy, EpisodeRunner(pool), [3, 4], 3, {}, turn_budget=3)
    finally:
        pool.close()
    firsts = [episode[0].prompt for episode in episodes]
    assert firsts[0] is firsts[1] is firsts[2] and firsts[3] is firsts[4] is firsts[5]
    assert firsts[0] is not firsts[3]
    decisions = [d for episode in episodes for d in episode]
    scored = policy.evaluate([d.prompt for d in decisions], [d.response_ids for d in decisions])
    for row, d in enumerate(decisions):  # old log-probs = the update's (shared-prompt) scores
        n = len(d.response_ids)
        torch.testing.assert_close(scored.logprobs[row, :n].detach(), d.logprobs, atol=2e-5, rtol=0)
