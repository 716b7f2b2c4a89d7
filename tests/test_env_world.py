"""VLNEnv in the built-in world: closed loop renders, geodesic distances, collisions, oracle success."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vln_gym  # noqa: F401
from vln_gym.env import VLNEnv
from vln_gym.geometry import MOVE_FORWARD, STOP

SIZE = (48, 48)


@pytest.fixture(scope="module")
def world_env() -> VLNEnv:
    return VLNEnv(world_episodes=12, world_seed=5, image_size=SIZE, max_steps=400)


def test_default_is_the_built_in_world():
    env = gym.make("VLN-v0", world_episodes=3, image_size=SIZE)
    assert env.unwrapped.views == "world" and env.unwrapped.max_steps == 500
    obs, info = env.reset(seed=0)
    assert obs["frames"].shape == (2, *SIZE, 3) and obs["frame_mask"].tolist() == [0, 1]
    assert info["episode_id"].startswith("world-")


def test_gymnasium_check_env_world_mode():
    env = gym.make("VLN-v0", world_episodes=4, image_size=SIZE, max_steps=50, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_observation_is_the_world_render_and_distance_is_geodesic(world_env):
    obs, info = world_env.reset(options={"episode_index": 0})
    world = world_env._world
    expected = world.render(info["agent_position"], info["agent_heading"], size=SIZE)
    assert np.array_equal(obs["frames"][-1], expected)
    goal = info["goal_position"]
    assert info["distance_to_goal"] == pytest.approx(world.geodesic_distance(info["agent_position"], goal))
    assert info["distance_to_goal"] >= math.dist(info["agent_position"], goal) - 1e-9
    obs, _, _, _, info = world_env.step(info["expert_actions"][0])
    assert np.array_equal(
        obs["frames"][-1], world.render(info["agent_position"], info["agent_heading"], size=SIZE)
    )
    assert np.array_equal(obs["frames"][0], expected)  # history: the previous view


@pytest.mark.parametrize("index", range(6))
def test_oracle_expert_actions_reach_success(world_env, index):
    _, info = world_env.reset(options={"episode_index": index})
    start_distance = info["distance_to_goal"]
    for _ in range(world_env.max_steps):
        _, _, terminated, truncated, info = world_env.step(info["expert_actions"][0])
        assert not info["collision"]
        if terminated or truncated:
            break
    assert terminated and info["success"]
    metrics = info["metrics"]
    assert metrics["distance_kind"] == "geodesic" and metrics["success"] == 1.0
    assert metrics["navigation_error"] <= world_env._success_distance
    assert 0.0 < metrics["spl"] <= 1.0
    assert metrics["trajectory_length"] >= start_distance - world_env._success_distance - 1e-6


def test_walking_into_a_wall_collides_and_stays_out(world_env):
    _, info = world_env.reset(options={"episode_index": 1})
    for _ in range(200):  # keep walking straight: sooner or later a wall is hit
        before = info["agent_position"]
        info = world_env.step(MOVE_FORWARD)[4]
        if info["collision"]:
            break
    assert info["collision"] and info["reward_terms"]["collision"] == -1.0
    assert math.dist(before, info["agent_position"]) < 0.25  # blocked before a full step
    assert world_env._world.geodesic_distance(info["agent_position"], info["goal_position"]) < math.inf


def test_stop_far_from_goal_fails_and_truncation_gives_metrics():
    env = VLNEnv(world_episodes=3, world_seed=1, image_size=SIZE, max_steps=3)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(2)
    _, _, terminated, truncated, info = env.step(3)
    _, _, terminated, truncated, info = env.step(2)
    assert truncated and not terminated and info["metrics"]["steps"] == 3
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(STOP)
    assert terminated and not info["success"] and info["metrics"]["success"] == 0.0


def test_render_is_the_world_top_down(world_env):
    env = VLNEnv(world_episodes=2, image_size=SIZE, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(MOVE_FORWARD)
    picture = env.render()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 4


def test_world_mode_is_deterministic_for_a_seed():
    def run() -> list:
        env = VLNEnv(world_episodes=4, world_seed=2, image_size=SIZE, max_steps=6)
        rng = np.random.default_rng(9)
        obs, info = env.reset(seed=4)
        out = [(obs["frames"].tobytes(), info["episode_id"], info["agent_position"])]
        for _ in range(10):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(0, 4)))
            out.append((obs["frames"].tobytes(), reward, info["agent_position"], info.get("expert_actions")))
            if terminated or truncated:
                obs, info = env.reset()
                out.append((obs["frames"].tobytes(), info["episode_id"]))
        return out

    assert run() == run()
