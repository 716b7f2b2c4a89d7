"""`make_vln_env`, the ``VLN-v0`` entry point: an in-process `VLNEnv`, or a `RemoteVLNEnv` (``server``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from vln_gym.env import VLNEnv


def make_vln_env(server: str | None = None, **kwargs: Any) -> gym.Env:
    """``VLNEnv(**kwargs)``; with ``server="host:port"``, the env served there (``vln_gym.remote.client``)."""
    if server is None:
        return VLNEnv(**kwargs)
    from vln_gym.remote.client import RemoteVLNEnv

    return RemoteVLNEnv(server, **kwargs)


make_vln_env.metadata = VLNEnv.metadata  # gym.make checks render modes against the entry point's
