"""VLNEnv on the real VLN-Ego sample (R2R-CE, 65 records) and its LLaMA-Factory twin."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vln_gym  # noqa: F401
from vln_gym.actions import VLN_R1_OPTIONS, parse_action
from vln_gym.env import VLNEnv
from vln_gym.geometry import STOP, TURN_RIGHT, apply_action
from vln_gym.images import decode_image

SIZE = (48, 64)


@pytest.fixture(scope="module")
def ego_env_kwargs(vln_ego_trajectory: Path) -> dict:
    return {"data_files": str(vln_ego_trajectory), "format": "vln-ego", "image_size": SIZE}


def test_gymnasium_check_env_on_real_sample(ego_env_kwargs):
    env = gym.make("VLN-v0", render_mode="rgb_array", **ego_env_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_stable_baselines3_check_env_on_real_sample(ego_env_kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = VLNEnv(**ego_env_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that it cannot feed str / 4-D frames to its policies
        sb3_check_env(env)


def test_record_mode_expert_scores_and_frames(ego_env_kwargs, vln_ego_trajectory):
    env = VLNEnv(**ego_env_kwargs)
    assert len(env.episodes) == 65
    obs, info = env.reset(options={"episode_index": 12})
    assert np.array_equal(obs["frames"][-1], _frame(str(vln_ego_trajectory / "step_12.jpg")))
    assert obs["frame_mask"].tolist() == [1, 1]
    assert obs["instruction"].startswith("Leave the room, go right")
    first = info["expert_actions"][0]
    _, _, terminated, _, info = env.step(first)
    assert terminated
    # the expert's forward step from record 12 lands exactly on record 13's pose
    assert info["agent_position"] == pytest.approx(env.episodes[13].agent_position)
    assert info["reward_terms"]["progress"] == pytest.approx(
        (env.episodes[12].distance_to_goal - env.episodes[13].distance_to_goal) / 0.25
    )
    env.reset(options={"episode_index": 64})  # the last record: at the goal, the expert stops
    _, _, terminated, _, info = env.step(STOP)
    assert terminated and info["success"] and info["metrics"]["success"] == 1.0


def test_trajectory_replay_of_the_expert_sees_every_recorded_frame(ego_env_kwargs, vln_ego_trajectory):
    env = VLNEnv(views="trajectory", **ego_env_kwargs)
    obs, info = env.reset(options={"episode_index": 0})
    expert = info["expert_actions"]
    assert len(expert) == 65
    for step, action in enumerate(expert[:-1], start=1):
        obs, _, terminated, truncated, info = env.step(action)
        assert info["view_error"] == pytest.approx(0.0, abs=1e-9)
        recorded = env.episodes[step]
        assert info["agent_position"] == pytest.approx(recorded.agent_position)
        assert np.array_equal(obs["frames"][-1], _frame(recorded.images[-1]))
        assert np.array_equal(obs["frames"][-2], _frame(env.episodes[step - 1].images[-1]))
        assert not terminated and not truncated
    obs, _, terminated, _, info = env.step(expert[-1])
    assert terminated and info["success"]
    metrics = info["metrics"]
    assert metrics["success"] == 1.0 and metrics["spl"] == pytest.approx(
        min(1.0, env.episodes[0].distance_to_goal / metrics["trajectory_length"])
    )
    assert metrics["ndtw"] == pytest.approx(1.0)  # the path is the reference


def _frame(path: str) -> np.ndarray:
    """The file decoded as the env decodes it (its accuracy against Pillow: test_images_decode.py)."""
    return decode_image(path, SIZE)


def test_llama_factory_json_with_path_remap(vln_ego_sample):
    env = gym.make(
        "VLN-v0",
        data_files=str(vln_ego_sample / "r2r_16_images_4act_debug.json"),
        format="sharegpt",
        path_remap={"VLN-Ego/data/r2r_training_rgb": str(vln_ego_sample / "rgb_images_r2r_debug")},
        action_space="text",
        action_options=VLN_R1_OPTIONS,
        image_size=SIZE,
    )
    obs, info = env.reset(options={"episode_index": 30})
    assert obs["frame_mask"].tolist() == [1, 1]
    expert_text = env.unwrapped.episodes[30].expert_response
    _, _, terminated, _, info = env.step(expert_text)  # four option sentences, one macro step
    assert terminated and not info["invalid_action"]
    # the answer's "Turn right 30 degrees" is honoured as written: two 15-degree turns (a known data quirk)
    assert "C. Turn right 30 degrees" in expert_text
    wanted = parse_action(expert_text, options=VLN_R1_OPTIONS).actions
    assert info["actions"] == wanted and wanted.count(TURN_RIGHT) == 2 * expert_text.count("Turn right")
    position, heading = env.unwrapped.episodes[30].agent_position, env.unwrapped.episodes[30].agent_heading
    for action in wanted:
        position, heading = apply_action(position, heading, action)
    assert info["agent_position"] == pytest.approx(position)
    assert info["agent_heading"] == pytest.approx(heading)
