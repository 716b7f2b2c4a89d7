"""vln-gym: every VLN record becomes a Gymnasium episode. ``import vln_gym`` registers ``VLN-v0``."""

from __future__ import annotations

import gymnasium as gym

from vln_gym.episode import Episode

__all__ = ["Episode"]
__version__ = "0.1.0"

if "VLN-v0" not in gym.registry:
    # max_episode_steps is the VLN-CE horizon; dataset mode ends earlier on its own (one decision per record).
    gym.register(id="VLN-v0", entry_point="vln_gym.env:VLNEnv", max_episode_steps=500)
