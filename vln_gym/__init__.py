"""vln-gym: every VLN record becomes a Gymnasium episode. ``import vln_gym`` registers ``VLN-v0``."""

from __future__ import annotations

import gymnasium as gym

from vln_gym.episode import Episode

__all__ = ["Episode"]
__version__ = "0.1.0"

if "VLN-v0" not in gym.registry:
    # No TimeLimit wrapper: the horizon depends on the view mode (1 decision per record in dataset mode,
    # VLN-CE's 500 steps in the world), so the env truncates at its own `max_steps` and reports the
    # episode's metrics in `info`. A user's `max_episode_steps` adds a TimeLimit; EpisodeMetrics (applied
    # outside it) still reports the metrics when that TimeLimit ends an episode.
    gym.register(
        id="VLN-v0",
        entry_point="vln_gym.make:make_vln_env",
        additional_wrappers=(
            gym.envs.registration.WrapperSpec("EpisodeMetrics", "vln_gym.wrappers:EpisodeMetrics", {}),
        ),
    )
