"""The agent interface shared by scripted, checkpoint-backed and learned agents, and its error type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Agent(Protocol):
    """What evaluation and rollouts need from an agent."""

    name: str
    action_space: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int | str: ...


class AgentError(ValueError):
    """An agent cannot be built (unknown name, missing or incompatible checkpoint) or lacks its inputs."""
