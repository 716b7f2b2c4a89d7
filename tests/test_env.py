"""VLNEnv in dataset mode: spaces, reset/step, kinematics, rewards, text actions, replay, checkers."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import vln_gym  # noqa: F401  (registers VLN-v0)
from vln_gym.env import VLNEnv
from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT


def _write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (48, 64)) -> str:
    Image.new("RGB", (size[1], size[0]), colour).save(path)
    return str(path)


def _colour(i: int) -> tuple[int, int, int]:
    return (10 + 20 * i % 240, 200 - 7 * i % 200, 30 + 13 * i % 220)


@pytest.fixture()
def line_episodes(tmp_path: Path) -> list[Episode]:
    """One trajectory of 4 records walking 1 m along -z (heading 0): start (0,0,0), goal (0,0,-1).

    Record k stands at z = -0.25 k, sees frames 0..k (each a solid colour), expert = forward x (4-k), stop.
    """
    frames = [_write_png(tmp_path / f"f{k}.png", _colour(k)) for k in range(5)]
    reference = tuple((0.0, 0.0, -0.25 * k) for k in range(5))
    episodes = []
    for k in range(5):
        episodes.append(
            Episode(
                episode_id=f"line/step_{k}",
                instruction="Walk straight ahead one metre, then stop. 向前走一米然后停下 😀",
                images=tuple(frames[: k + 1]),
                agent_position=(0.0, 0.0, -0.25 * k),
                agent_heading=0.0,
                goal_position=(0.0, 0.0, -1.0),
                distance_to_goal=1.0 - 0.25 * k,
                trajectory_id="line",
                step_index=k,
                reference_path=reference,
                expert_actions=(MOVE_FORWARD,) * (4 - k) + (STOP,),
                success_distance=0.2,
                source=f"line.jsonl:{k + 1}",
            )
        )
    return episodes


def _make(episodes: list[Episode], **kwargs) -> VLNEnv:
    kwargs.setdefault("image_size", (36, 40))
    return VLNEnv(episodes=episodes, **kwargs)


def test_spaces_and_reset_observation(line_episodes):
    env = _make(line_episodes)
    assert env.action_space == gym.spaces.Discrete(4)
    obs, info = env.reset(seed=0, options={"episode_index": 2})
    assert obs["frames"].shape == (2, 36, 40, 3) and obs["frames"].dtype == np.uint8
    # record 2 sees frames 0,1,2: the last two, oldest first, resized from 48x64 solid colours
    assert tuple(obs["frames"][0, 5, 5]) == _colour(1)
    assert tuple(obs["frames"][1, 5, 5]) == _colour(2)
    assert obs["frame_mask"].tolist() == [1, 1]
    assert obs["instruction"] == line_episodes[2].instruction
    assert obs in env.observation_space
    assert info["episode_id"] == "line/step_2"
    assert info["agent_position"] == (0.0, 0.0, -0.5)
    assert info["distance_to_goal"] == pytest.approx(0.5)
    assert info["expert_actions"] == (MOVE_FORWARD, MOVE_FORWARD, STOP)
    assert "frames" not in info and "goal_position" not in obs


def test_first_record_pads_history_with_zeros(line_episodes):
    env = _make(line_episodes, history_frames=3)
    obs, _ = env.reset(options={"episode_index": 0})
    assert obs["frame_mask"].tolist() == [0, 0, 1]
    assert not obs["frames"][:2].any()
    assert tuple(obs["frames"][2, 0, 0]) == _colour(0)


def test_observations_are_fresh_writable_arrays(line_episodes):
    """Each observation owns its frames and mask: writing into one changes neither the next nor the cache."""
    env = _make(line_episodes, history_frames=3)
    first, _ = env.reset(options={"episode_index": 1})
    expected = {key: first[key].copy() for key in ("frames", "frame_mask")}
    assert expected["frame_mask"].tolist() == [0, 1, 1]
    first["frames"][:] = 7
    first["frame_mask"][:] = 9
    after_step, *_ = env.step(MOVE_FORWARD)
    after_reset, _ = env.reset(options={"episode_index": 1})
    for obs in (after_step, after_reset):
        for key, value in expected.items():
            assert obs[key].flags.writeable and obs[key].dtype == value.dtype
            assert np.array_equal(obs[key], value)


def test_forward_step_kinematics_and_reward_terms(line_episodes):
    env = _make(line_episodes)
    env.reset(options={"episode_index": 1})
    _obs, reward, terminated, truncated, info = env.step(np.int64(MOVE_FORWARD))
    # horizon 1: one decision per record ends the episode (terminated, nothing to bootstrap from)
    assert terminated and not truncated
    assert info["agent_position"] == pytest.approx((0.0, 0.0, -0.5))
    assert info["distance_to_goal"] == pytest.approx(0.5)
    assert info["reward_terms"]["progress"] == pytest.approx(1.0)  # 0.25 m closer = one step
    assert info["actions"] == (MOVE_FORWARD,)
    assert info["invalid_action"] is False and info["collision"] is False and info["success"] is False
    assert reward == pytest.approx(sum(env.reward_fn.weights[k] * v for k, v in info["reward_terms"].items()))
    assert info["expert_actions"] == (MOVE_FORWARD, MOVE_FORWARD, STOP)  # remaining after the step
    assert info["metrics"]["trajectory_length"] == pytest.approx(0.25)
    assert info["metrics"]["success"] == 0.0


def test_turns_follow_habitat_convention(line_episodes):
    env = _make(line_episodes)
    env.reset(options={"episode_index": 0})
    *_, info = env.step(TURN_LEFT)
    assert info["agent_heading"] == pytest.approx(math.radians(15))
    env.reset(options={"episode_index": 0})
    *_, info = env.step(TURN_RIGHT)
    assert info["agent_heading"] == pytest.approx(-math.radians(15))
    assert info["reward_terms"]["progress"] == pytest.approx(0.0)


def test_stop_at_goal_is_success_and_uses_record_success_distance(line_episodes):
    env = _make(line_episodes, success_distance=3.0)
    env.reset(options={"episode_index": 4})  # at the goal
    *_, terminated, _, info = env.step(STOP)
    assert terminated and info["success"] is True
    assert info["metrics"]["success"] == 1.0 and info["metrics"]["spl"] == 1.0
    env.reset(options={"episode_index": 2})  # 0.5 m away: outside the record's 0.2 m (3.0 m ignored)
    *_, info = env.step(STOP)
    assert info["success"] is False
    assert info["reward_terms"]["wrong_stop"] == -1.0


def test_multi_step_record_mode_tracks_expert(line_episodes):
    env = _make(line_episodes, max_steps=3)
    env.reset(options={"episode_index": 1})
    *_, terminated, _, info = env.step(MOVE_FORWARD)
    assert not terminated and info["expert_actions"] == (MOVE_FORWARD, MOVE_FORWARD, STOP)
    *_, info = env.step(TURN_LEFT)  # off the expert's path: remaining expert unknown
    assert "expert_actions" not in info
    *_, terminated, truncated, info = env.step(TURN_RIGHT)
    assert terminated and not truncated and "metrics" in info
    assert info["metrics"]["steps"] == 3


def test_bad_discrete_action_and_step_before_reset(line_episodes):
    env = _make(line_episodes)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    env.reset(seed=1)
    for bad in (4, -1, 1.0, "1", True):
        with pytest.raises(ValueError, match=r"0\.\.3"):
            env.step(bad)
    with pytest.raises(ValueError, match="episode_index"):
        env.reset(options={"episode_index": 5})


def test_text_macro_step_runs_actions_in_order(line_episodes):
    rewards = {"progress": 1.0, "format": 0.5, "invalid_action": 1.0}
    env = _make(line_episodes, action_space="text", max_steps=5, rewards=rewards)
    env.reset(options={"episode_index": 0})
    _, reward, terminated, _, info = env.step(
        "<think>go</think><answer>move forward, move forward, turn left</answer>"
    )
    assert info["actions"] == (MOVE_FORWARD, MOVE_FORWARD, TURN_LEFT)
    assert info["agent_position"] == pytest.approx((0.0, 0.0, -0.5))
    assert info["agent_heading"] == pytest.approx(math.radians(15))
    assert info["reward_terms"]["progress"] == pytest.approx(2.0)  # one Transition for the whole macro step
    assert info["reward_terms"]["format"] == 1.0
    assert reward == pytest.approx(2.0 + 0.5)
    assert not terminated
    # STOP ends the macro step: later actions are never applied
    _, _, terminated, _, info = env.step("turn right, stop, move forward")
    assert info["actions"] == (TURN_RIGHT, STOP)
    assert terminated and info["metrics"]["steps"] == 4  # F, F, L, R: STOP adds no path point


@pytest.mark.parametrize(
    "text", ["", "fly to the moon", "<answer>", "前进", "\x00\ud800", "move forward" * 2000]
)
def test_invalid_text_never_raises(line_episodes, text):
    env = _make(line_episodes, action_space="text", max_steps=2)
    env.reset(options={"episode_index": 0})
    _, _reward, terminated, truncated, info = env.step(text)
    assert info["invalid_action"] is True and info["actions"] == ()
    assert isinstance(info["action_error"], str)
    assert info["agent_position"] == (0.0, 0.0, 0.0)
    assert info["reward_terms"]["invalid_action"] == -1.0
    assert not terminated and not truncated
    with pytest.raises(TypeError):
        env.step(1)


def test_trajectory_replay_shows_nearest_frame(line_episodes):
    env = _make(line_episodes, views="trajectory", max_steps=10)
    obs, _ = env.reset(options={"episode_index": 0})
    assert obs["frame_mask"].tolist() == [0, 1]
    obs, *_, info = env.step(MOVE_FORWARD)  # now exactly at record 1's pose
    assert info["view_error"] == pytest.approx(0.0)
    assert tuple(obs["frames"][1, 3, 3]) == _colour(1) and tuple(obs["frames"][0, 3, 3]) == _colour(0)
    obs, *_, info = env.step(TURN_LEFT)  # same place, 15 degrees off: record 1 is still nearest
    assert info["view_error"] == pytest.approx(math.radians(15))
    assert tuple(obs["frames"][1, 3, 3]) == _colour(1)
    env.step(TURN_RIGHT)
    obs, *_, info = env.step(MOVE_FORWARD)
    obs, *_, info = env.step(MOVE_FORWARD)  # z = -0.75: record 3
    assert tuple(obs["frames"][1, 3, 3]) == _colour(3)
    assert info["expert_actions"] == (MOVE_FORWARD, STOP)  # back on a recorded pose
    # half-way between records 3 and 4 (0.125 m each): the first is chosen, error 0.125
    match = env.unwrapped._replay.nearest("line", (0.0, 0.0, -0.875), 0.0)
    assert match.view_error == pytest.approx(0.125)


def test_trajectory_mode_requires_trajectory_ids(line_episodes):
    bad = [Episode(**{**vars(line_episodes[0]), "trajectory_id": None})]
    with pytest.raises(ValueError, match=r"line.jsonl:1: trajectory_id"):
        _make(bad, views="trajectory")


def test_render_top_down(line_episodes):
    env = _make(line_episodes, render_mode="rgb_array", render_size=(96, 120), max_steps=10)
    env.reset(options={"episode_index": 0})
    for action in (TURN_LEFT,) * 6 + (MOVE_FORWARD,) * 4:  # walk 1 m along -x, away from the reference
        env.step(action)
    picture = env.render()
    assert picture.shape == (96, 120, 3) and picture.dtype == np.uint8
    colours = {tuple(int(v) for v in c) for c in picture.reshape(-1, 3)}
    assert {
        (40, 90, 220),
        (60, 170, 80),
        (220, 40, 40),
        (240, 150, 150),
    } <= colours  # path, ref, goal, circle
    # +x is to the right: the agent went to x = -1, so the path's blue lies left of the reference's green
    blue_u = np.nonzero((picture == (40, 90, 220)).all(axis=2))[1]
    green_u = np.nonzero((picture == (60, 170, 80)).all(axis=2))[1]
    assert blue_u.mean() < green_u.mean()


def test_determinism_same_seed_same_trajectory(line_episodes):
    def run(seed: int) -> list:
        env = _make(line_episodes, max_steps=3)
        env.action_space.seed(seed)
        out = []
        obs, info = env.reset(seed=seed)
        for _ in range(12):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out.append(
                (obs["frames"].tobytes(), reward, terminated, info["episode_id"], info["agent_position"])
            )
            if terminated or truncated:
                obs, info = env.reset()
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_gymnasium_check_env_no_warnings(line_episodes):
    env = gym.make("VLN-v0", episodes=line_episodes, image_size=(36, 40), render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_gymnasium_check_env_text_actions(line_episodes):
    env = gym.make(
        "VLN-v0", episodes=line_episodes, image_size=(36, 40), action_space="text", views="trajectory"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_stable_baselines3_check_env(line_episodes):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = VLNEnv(episodes=line_episodes, image_size=(36, 40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env)
    messages = [str(w.message) for w in caught]
    # SB3 cannot feed text to its policies and says so; nothing else fails
    assert any("Sequence observation space is not supported" in m for m in messages)
