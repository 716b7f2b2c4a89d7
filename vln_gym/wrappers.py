"""`EpisodeMetrics`: ``info["metrics"]`` on every episode end, also when an outer ``TimeLimit`` cuts it.

``gym.make("VLN-v0", max_episode_steps=N)`` puts gymnasium's ``TimeLimit`` around the env, which then
truncates episodes the env itself does not know have ended. ``VLN-v0`` is registered with this wrapper
outside the ``TimeLimit`` (gymnasium applies a spec's ``additional_wrappers`` last), so such a step still
carries the episode's metrics, computed from the env's own state.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class EpisodeMetrics(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["metrics"]`` (``VLNEnv.episode_metrics()``) to an episode-ending step that lacks it."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "metrics" not in info:
            info = {**info, "metrics": self.env.get_wrapper_attr("episode_metrics")()}
        return obs, reward, terminated, truncated, info
