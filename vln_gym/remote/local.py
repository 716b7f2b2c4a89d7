"""`VLNBackend`: our own `VLNEnv` (world, dataset or trajectory mode) as an env-server backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vln_gym.env import VLNEnv
from vln_gym.remote.spaces import space_to_data

# What a client may read (``env.get_wrapper_attr``) and check its own arguments against.
SERVED_ATTRIBUTES = (
    "views",
    "expert_plan",
    "forward_step",
    "turn_angle",
    "success_distance",
    "max_steps",
    "history_frames",
    "image_size",
    "text_actions",
    "action_options",
)


class VLNBackend:
    """One `VLNEnv` built from ``env_kwargs``; rewards and metrics are the env's own (``reward: "env"``)."""

    def __init__(self, env_kwargs: Mapping[str, Any] | None = None) -> None:
        kwargs = dict(env_kwargs or {})
        for key in ("render_mode", "server"):
            if kwargs.get(key) is not None:
                raise ValueError(f"env_kwargs: {key!r} cannot be served")
        self.env = VLNEnv(**kwargs)

    def spec(self) -> dict[str, Any]:
        attributes = {name: getattr(self.env, name) for name in SERVED_ATTRIBUTES}
        attributes["image_size"] = list(attributes["image_size"])
        return {
            "backend": "vln-gym VLNEnv",
            "reward": "env",
            "observation_space": space_to_data(self.env.observation_space),
            "action_space": space_to_data(self.env.action_space),
            "attributes": attributes,
        }

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, Any]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, ...]:
        return self.env.step(action)

    def get_state(self) -> dict[str, Any]:
        return self.env.get_state()

    def set_state(self, state: Any) -> tuple[Any, Any]:
        if not isinstance(state, dict):
            raise ValueError(f"set_state takes a get_state() snapshot (a dict), got {type(state).__name__}")
        return self.env.set_state(state)

    def episode_metrics(self) -> dict[str, Any]:
        return self.env.episode_metrics()

    def close(self) -> None:
        self.env.close()
