"""agents.train.sft (supervised warm start on expert actions) and agents.presets on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents import presets
from agents.ppo_train import SFT_POLICY_DIR, PPOConfig, ppo_train
from agents.train.envpool import make_env_pool
from agents.train.sft import ExpertPair, answer_ids, collect_expert_pairs, supervised_warm_start
from vln_gym.actions import parse_action
from vln_gym.geometry import STOP

torch.set_num_threads(1)

# The presets' world, with small frames and a short history so the test stays fast.
WORLD = {**presets.EASY_WORLD_ENV_KWARGS, "history_frames": 2, "image_size": [56, 56], "world_episodes": 64}


def pairs(world_seed: int, count: int, explore: float = 0.0) -> list[ExpertPair]:
    envs = make_env_pool("VLN-v0", {**WORLD, "world_seed": world_seed}, 2)
    try:
        return collect_expert_pairs(
            envs, count, seeds=[1, 2], explore=explore, rng=np.random.default_rng(world_seed)
        )
    finally:
        envs.close()


def test_expert_pairs_follow_the_expert_to_its_stop():
    collected = pairs(0, 40)
    assert len(collected) == 40
    assert {p.action for p in collected} <= {0, 1, 2, 3}
    assert sum(p.action == STOP for p in collected) >= 2  # whole expert paths end with STOP
    first = collected[0].observation
    assert set(first) == {"frames", "frame_mask", "instruction"}  # nothing privileged in the observation
    assert first["frames"].shape == (2, 56, 56, 3)


def test_expert_pairs_need_expert_actions(no_expert_env_kwargs):
    envs = make_env_pool("VLN-v0", no_expert_env_kwargs, 1)
    with pytest.raises(ValueError, match="expert_actions"):
        collect_expert_pairs(envs, 4, seeds=[0])
    envs.close()


def test_answer_ids_parse_back_to_the_action():
    from agents.policy.model import VLMPolicy
    from agents.policy.tiny import ensure_tiny_model

    policy = VLMPolicy.from_pretrained(str(ensure_tiny_model()), constrained_actions=True)
    tokenizer = policy.processor.tokenizer
    for action in range(4):
        ids = answer_ids(policy, action)
        assert int(ids[-1]) == policy.eos_token_id
        assert parse_action(tokenizer.decode(ids[:-1])).actions == (action,)


def first_decisions(world_seed: int, count: int) -> list[ExpertPair]:
    """(first observation, expert's first action) of ``count`` episodes: the instruction's opening ("Turn
    left and ...", "Turn around ...", none) names it, so a small budget can learn it."""
    import gymnasium as gym

    env = gym.make("VLN-v0", **{**WORLD, "world_seed": world_seed, "world_episodes": count})
    result = []
    for index in range(count):
        obs, info = env.reset(options={"episode_index": index})
        result.append(ExpertPair(obs, int(info["expert_actions"][0])))
    env.close()
    return result


def test_warm_start_lowers_heldout_loss_and_raises_accuracy():
    from agents.policy.model import VLMPolicy
    from agents.policy.tiny import ensure_tiny_model

    torch.manual_seed(0)
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), use_lora=False, freeze_vision=False, constrained_actions=True
    )
    train, heldout = first_decisions(0, 128), first_decisions(presets.HELDOUT_WORLD_SEED, 64)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    report = supervised_warm_start(policy, train, steps=120, batch_size=16, lr=3e-3, heldout=heldout)
    assert len(report.losses) == 120 and all(np.isfinite(report.losses))
    assert report.heldout_loss_after < 0.7 * report.heldout_loss_before  # other worlds: it generalises
    assert report.heldout_accuracy_after >= report.heldout_accuracy_before + 0.2
    moved = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("visual" in n for n in moved)  # full fine-tuning reaches the vision tower
    assert not any(n.startswith("value_head") for n in moved)  # SFT leaves the value head alone
    summary = report.summary()
    assert summary["sft/steps"] == 120 and summary["sft/samples"] == 128


def test_learning_config_quick_runs_sft_then_ppo(tmp_path):
    config = presets.learning_config(tmp_path / "run", "ppo", quick=True, progress=False)
    assert isinstance(config, PPOConfig) and not config.use_lora and not config.freeze_vision
    assert config.env_kwargs["world_seed"] == presets.TRAIN_WORLD_SEED
    config.env_kwargs.update(history_frames=2, world_episodes=64)  # smaller than the preset: a fast test
    config.sft_samples, config.sft_steps = 64, 4
    result = ppo_train(config)
    sft = json.loads((tmp_path / "run" / "sft.json").read_text())
    assert sft["sft/steps"] == 4 and len(sft["losses"]) == 4
    assert (tmp_path / "run" / SFT_POLICY_DIR / "policy_config.json").is_file()
    assert np.isfinite(result["loss/policy"]) and result["iteration"] == 1


def test_heldout_settings_use_another_world():
    kwargs = presets.heldout_env_kwargs(3)
    assert len(kwargs["episodes"]) == 3
    assert [e.episode_id for e in kwargs["episodes"]] == [
        f"world-s{presets.HELDOUT_WORLD_SEED}-e{i}" for i in range(3)
    ]
    assert "world_seed" not in kwargs and kwargs["max_steps"] == presets.MAX_STEPS
    grpo = presets.learning_config("unused", "grpo")
    assert grpo.num_envs % grpo.group_size == 0


def test_preset_answers_chunks_the_warm_start_can_teach_and_generation_can_hold():
    from agents.policy.model import VLMPolicy
    from agents.policy.tiny import ensure_tiny_model

    config = presets.learning_config("unused", "grpo")
    assert (config.action_style, config.max_actions_per_turn) == (presets.ACTION_STYLE, 8)
    assert config.env_kwargs["expert_plan"] == "full"  # chunk labels need the expert's whole plan
    assert config.grpo_start == "reset" and config.num_iterations == presets.GRPO_ITERATIONS[False]
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), constrained_actions=True, action_grammar=config.action_grammar()
    )
    assert config.max_new_tokens is None  # generation holds the grammar's longest answer in any tokenizer
    envs = make_env_pool("VLN-v0", {**WORLD, "world_seed": 0}, 2)
    try:
        chunked = collect_expert_pairs(envs, 24, seeds=[1, 2], encode=policy.grammar.encode)
    finally:
        envs.close()
    answers = policy.grammar.answers
    assert all(pair.answer in answers for pair in chunked)  # constrained decoding can say every label
    sampled = policy.generate([p.observation for p in chunked[:4]], max_new_tokens=config.max_new_tokens)
    assert all(text in answers for text in sampled.texts)  # whole answers within the length limit
    assert all(answers[pair.answer][0] == pair.action for pair in chunked)  # led by the expert's next action
    assert sum(len(answers[pair.answer]) > 1 for pair in chunked) >= len(chunked) // 2  # mostly chunks
