"""`RemoteVectorEnv`: a vector env of served envs that steps their servers in parallel from one process.

Gymnasium's ``AsyncVectorEnv`` runs a worker process per env; for envs that already run in their own
server processes that only adds a hop (and CPU). ``RemoteVectorEnv`` is a ``SyncVectorEnv`` whose step
first sends every env's request (``RemoteVLNEnv.step_async`` / ``reset_async``) and only then lets the
sync loop read the answers, so all servers work at once. Autoreset, batching and infos are
``SyncVectorEnv``'s own.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate


def _make_client(address: str, client_kwargs: dict[str, Any]) -> gym.Env:
    import vln_gym  # noqa: F401  (registers VLN-v0)

    return gym.make("VLN-v0", server=address, **client_kwargs)


class RemoteVectorEnv(SyncVectorEnv):
    """``num_envs`` clients of ``servers`` (one address: that many connections to it; or one address per
    env); ``client_kwargs`` go to each ``RemoteVLNEnv`` (token, frames, rewards, ...)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        num_envs: int | None = None,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **client_kwargs: Any,
    ) -> None:
        addresses = [servers] * (num_envs or 1) if isinstance(servers, str) else list(servers)
        if num_envs is not None and len(addresses) != num_envs:
            raise ValueError(f"{len(addresses)} server addresses for num_envs={num_envs}")
        super().__init__(
            [partial(_make_client, address, dict(client_kwargs)) for address in addresses],
            autoreset_mode=autoreset_mode,
        )
        self.clients = [env.unwrapped for env in self.envs]

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        seeds = _seeds(seed, self.num_envs)
        for client, env_seed in zip(self.clients, seeds, strict=True):
            client.reset_async(seed=env_seed, options=options)
        return super().reset(seed=seeds, options=options)

    def step(self, actions: Any):
        for i, action in enumerate(iterate(self.action_space, actions)):
            if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._autoreset_envs[i]:
                self.clients[i].reset_async()  # the sync loop resets this env now, with no arguments
            else:
                self.clients[i].step_async(action)
        return super().step(actions)


def _seeds(seed: int | list[int | None] | None, num_envs: int) -> list[int | None]:
    """``SyncVectorEnv``'s rule: one int seeds env i with ``seed + i``; a list gives each env its own."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(num_envs)]
    if len(seed) != num_envs:
        raise ValueError(f"{len(seed)} seeds for {num_envs} envs")
    return list(seed)
