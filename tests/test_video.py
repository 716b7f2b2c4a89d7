"""First-person video: render() shows the map, the agent's view or both; RecordVideo and evaluate --video."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

import vln_gym  # noqa: F401
from agents.eval.evaluate import EvaluationError, evaluate

KWARGS = {"world_episodes": 4, "image_size": (32, 32), "render_mode": "rgb_array", "render_size": (64, 64)}


def test_render_views_show_what_the_agent_saw():
    env = gym.make("VLN-v0", render_view="both", **KWARGS)
    obs, _ = env.reset(seed=0)
    both = env.render()
    assert both.shape == (64, 64 + 64, 3) and both.dtype == np.uint8
    view = gym.make("VLN-v0", render_view="view", **KWARGS)
    view.reset(seed=0)
    frame = view.render()
    assert np.array_equal(frame, obs["frames"][-1].repeat(2, axis=0).repeat(2, axis=1))  # 32 -> 64, nearest
    assert np.array_equal(both[:, 64:], frame)
    with pytest.raises(ValueError, match="render_view must be one of"):
        gym.make("VLN-v0", render_view="side")


def test_record_video_records_the_first_person_view(tmp_path):
    env = gym.wrappers.RecordVideo(
        gym.make("VLN-v0", render_view="view", max_steps=3, **KWARGS),
        str(tmp_path),
        episode_trigger=lambda _: True,
    )
    env.reset(seed=0)
    for _ in range(3):
        env.step(2)
    env.close()
    assert [p.suffix for p in tmp_path.iterdir()] == [".mp4"]


def test_evaluate_video_writes_episode_videos_and_links_them(tmp_path):
    out = tmp_path / "eval"
    evaluate(
        "random", num_episodes=2, out_dir=out, video=1, env_kwargs={"image_size": [32, 32], "max_steps": 5}
    )
    assert (out / "videos" / "episode_0.mp4").stat().st_size > 0
    assert not (out / "videos" / "episode_1.mp4").exists()
    assert "[episode_0.mp4](videos/episode_0.mp4)" in (out / "report.md").read_text()


def test_evaluate_video_without_moviepy_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)
    with pytest.raises(EvaluationError, match=r"--video needs moviepy: pip install 'vln-gym\[video\]'"):
        evaluate("random", num_episodes=1, out_dir=tmp_path / "eval", video=1)
    assert not (tmp_path / "eval").exists()
