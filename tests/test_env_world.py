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
from vln_gym.world.episodes import generate_episode

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


@pytest.fixture(scope="module")
def full_plan_env() -> VLNEnv:
    return VLNEnv(world_episodes=12, world_seed=5, image_size=SIZE, max_steps=400, expert_plan="full")


@pytest.mark.parametrize("plan", ["next", "full"])
@pytest.mark.parametrize("index", range(6))
def test_oracle_expert_actions_reach_success(world_env, full_plan_env, index, plan):
    world_env = world_env if plan == "next" else full_plan_env
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


def test_world_episodes_are_generated_when_first_picked():
    env = VLNEnv(image_size=SIZE)
    assert len(env.episodes) == 1000 and env.episodes.generated == 0  # nothing built up front
    assert env.observation_space["instruction"].max_length == 1024
    _, info = env.reset(seed=3)
    assert env.episodes.generated == 1
    index = env._episode_index
    episode = generate_episode(0, index)
    assert info["episode_id"] == episode.episode_id == f"world-s0-e{index}"
    assert info["agent_position"] == episode.agent_position and info["goal_position"] == episode.goal_position
    env.reset(options={"episode_index": index})
    assert env.episodes.generated == 1  # kept, not generated again


def test_expert_plan_next_and_full_agree_on_info_and_rewards():
    kwargs = {
        "world_episodes": 6,
        "world_seed": 3,
        "image_size": SIZE,
        "max_steps": 30,
        "action_space": "text",
        "rewards": {"expert_match": 1.0, "time_decayed_match": 2.0, "progress": 1.0, "success": 5.0},
    }
    fast, full = VLNEnv(**kwargs), VLNEnv(**kwargs, expert_plan="full")
    answers = ["move forward, turn left", "turn right", "forward, forward, right", "left", "move forward"]
    rng = np.random.default_rng(1)
    macro_scores = set()
    for episode in range(3):
        (_, info_fast), (_, info_full) = fast.reset(seed=episode), full.reset(seed=episode)
        for _ in range(30):
            assert info_fast["expert_actions"] == info_full["expert_actions"][:1]
            assert len(info_full["expert_actions"]) > 1 or info_full["expert_actions"] == (STOP,)
            if rng.random() < 0.5:  # follow the expert (single action) or answer a random macro step
                answer = {0: "stop", 1: "move forward", 2: "turn left", 3: "turn right"}[
                    info_fast["expert_actions"][0]
                ]
            else:
                answer = answers[int(rng.integers(len(answers)))]
            step_fast, step_full = fast.step(answer), full.step(answer)
            info_fast, info_full = step_fast[4], step_full[4]
            assert step_fast[1] == step_full[1] and info_fast["reward_terms"] == info_full["reward_terms"]
            assert step_fast[2:4] == step_full[2:4]
            if "," in answer:
                macro_scores.add(info_fast["reward_terms"]["time_decayed_match"])
            if step_fast[2] or step_fast[3]:
                break
    assert len(macro_scores) > 1  # macro steps were scored against the expert's sequence, not one action


def test_expert_plan_must_be_next_or_full():
    with pytest.raises(ValueError, match=r"expert_plan must be one of \('next', 'full'\)"):
        VLNEnv(world_episodes=1, image_size=SIZE, expert_plan="all")


def test_async_vector_env_world_mode_equals_sequential():
    kwargs = {"image_size": SIZE, "max_steps": 5}
    actions = np.random.default_rng(0).integers(0, 4, size=(9, 2))
    expected = []
    for i in range(2):
        env = VLNEnv(**kwargs)
        obs, _ = env.reset(seed=21 + i)
        rows, done = [(obs["frames"], 0.0)], False
        for a in actions[:, i]:
            if done:
                obs, _ = env.reset()
                rows.append((obs["frames"], 0.0))
                done = False
                continue
            obs, reward, terminated, truncated, _ = env.step(int(a))
            rows.append((obs["frames"], reward))
            done = terminated or truncated
        expected.append(rows)
    vec = gym.make_vec("VLN-v0", num_envs=2, vectorization_mode="async", **kwargs)
    try:
        obs, _ = vec.reset(seed=21)
        got = [[(obs["frames"][i], 0.0)] for i in range(2)]
        for row in actions:
            obs, reward, _, _, _ = vec.step(row)
            for i in range(2):
                got[i].append((obs["frames"][i], float(reward[i])))
    finally:
        vec.close()
    for i in range(2):
        for step, (want, have) in enumerate(zip(expected[i], got[i], strict=True)):
            assert np.array_equal(want[0], have[0]) and want[1] == pytest.approx(have[1]), (i, step)


def test_metrics_survive_an_outer_time_limit():
    """gym.make(max_episode_steps=N) adds gymnasium's TimeLimit; the registered EpisodeMetrics wrapper sits
    outside it, so the truncating step still reports the episode's metrics (the env's own state)."""
    import gymnasium as gym

    env = gym.make("VLN-v0", max_episode_steps=3, world_episodes=2, image_size=(16, 16))
    env.reset(seed=0)
    infos = [env.step(2)[4] for _ in range(2)]
    assert all("metrics" not in info for info in infos)
    _, _, terminated, truncated, info = env.step(1)
    assert truncated and not terminated
    assert info["metrics"]["steps"] == 3 and info["metrics"]["success"] == 0.0
    own = gym.make("VLN-v0", max_steps=3, world_episodes=2, image_size=(16, 16))
    own.reset(seed=0)
    for action in (2, 2, 1):
        *_, own_info = own.step(action)
    assert own_info["metrics"] == info["metrics"]
