"""World levels (easy / medium / standard), and training configs that cannot reach a goal are refused."""

from __future__ import annotations

import gymnasium as gym
import pytest

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.eval.evaluate import evaluate
from agents.train.config import PPOConfig
from vln_gym.world.levels import LEVELS


@pytest.mark.parametrize("name", list(LEVELS))
def test_a_level_sets_world_and_env_unless_given(name):
    env = gym.make("VLN-v0", world_config=name).unwrapped
    chosen = LEVELS[name]
    assert (env.forward_step, env.turn_angle, env.max_steps) == (
        chosen.forward_step,
        chosen.turn_angle,
        chosen.max_steps,
    )
    _, info = env.reset(seed=0)
    episode = env.episodes[info["episode_index"]] if "episode_index" in info else env._episode
    assert episode.geodesic_distance >= chosen.world.get("min_path_length", 4.0) - 1e-9
    overridden = gym.make("VLN-v0", world_config=name, forward_step=0.3, max_steps=7).unwrapped
    assert (overridden.forward_step, overridden.max_steps, overridden.turn_angle) == (
        0.3,
        7,
        chosen.turn_angle,
    )


def test_unknown_level_names_the_levels():
    with pytest.raises(ValueError, match="unknown level 'hard'; levels: easy, medium, standard"):
        gym.make("VLN-v0", world_config="hard")


def test_the_oracle_finishes_medium_with_room_to_spare():
    result = evaluate(
        "oracle", env_kwargs={"world_config": "medium", "world_seed": 1000}, num_episodes=10, plots=False
    )
    assert result.metrics["success_rate"] >= 0.9
    assert max(r["metrics"]["steps"] for r in result.episodes) < LEVELS["medium"].max_steps * 0.75


def test_default_config_trains_a_reachable_level():
    config = PPOConfig()
    assert config.env_kwargs["world_config"] == "easy" and config.sft_steps > 0


@pytest.mark.parametrize(
    "env_kwargs",
    [
        {"action_space": "text", "max_steps": 12},  # the old default: 12 x 0.25 m = 3 m, goals from 4 m
        {"max_steps": 12},  # discrete actions: one step per decision too
        {"action_space": "text", "world_config": "medium", "max_steps": 10},
    ],
)
def test_a_budget_that_cannot_reach_the_goals_is_refused_in_one_line(env_kwargs):
    with pytest.raises(ValueError) as caught:
        PPOConfig(env_kwargs=env_kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("PPOConfig.env_kwargs: max_steps ")
    assert "cannot reach the nearest goals (world min_path_length" in message


def test_settings_the_check_cannot_judge_are_left_alone(tmp_path):
    PPOConfig(env_kwargs={"action_space": "text", "max_steps": 12}, constrained_actions=False)  # amounts
    PPOConfig(env_kwargs={"data_files": str(tmp_path / "d.jsonl"), "max_steps": 1})
    PPOConfig(env_kwargs={"world_config": "standard"})


def test_tiny_models_train_on_one_thread():
    import torch

    from agents.policy.model import VLMPolicy
    from agents.policy.tiny import ensure_tiny_model
    from agents.ppo_train import set_threads_for

    before = torch.get_num_threads()
    try:
        policy = VLMPolicy.from_pretrained(str(ensure_tiny_model()), use_lora=False)
        assert set_threads_for(policy, None) == 1
        assert set_threads_for(policy, 2) == 2  # an explicit count wins
    finally:
        torch.set_num_threads(before)


def test_every_policy_setting_is_a_training_setting():
    """Each PolicyConfig field a run needs can be set from the CLI / YAML (PPOConfig)."""
    from dataclasses import fields

    from agents.policy.model import PolicyConfig

    settings = {f.name for f in fields(PPOConfig)}
    through = {
        "base_model": {"model_name_or_path"},
        "action_grammar": {"action_style", "max_actions_per_turn"},
    }
    for name in (f.name for f in fields(PolicyConfig)):
        if name == "format_version":
            continue
        assert through.get(name, {name}) <= settings, name
