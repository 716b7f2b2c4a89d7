"""Unimodal ablations: run an agent with one of its two inputs removed (Thomason et al., NAACL 2019,
"Shifting the Baseline: Single Modality Performance on Visual Navigation & QA").

``Ablated(agent, "frames")`` shows the agent black frames of the same shape with the same mask (it still
knows how many views it has had, so how many steps it has taken); ``Ablated(agent, "instruction")`` an
empty instruction. An agent that succeeds as often without its frames does not use them: the measure of
whether a policy's perception is learning (`scripts/bench_learning.py` reports it for the SFT policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agents.eval.agent import Agent, AgentError

ABLATIONS = ("frames", "instruction")


def ablate_observation(obs: Mapping[str, Any], remove: str) -> dict[str, Any]:
    """A copy of ``obs`` without ``remove``: ``frames`` all zero (same shape), ``instruction`` ``""``."""
    if remove == "frames":
        return {**obs, "frames": np.zeros_like(np.asarray(obs["frames"]))}
    check_ablation(remove)
    return {**obs, "instruction": ""}


class Ablated:
    """``agent`` acting on observations without ``remove`` (`ablate_observation`); batched when it is."""

    def __init__(self, agent: Agent, remove: str) -> None:
        check_ablation(remove)
        self.agent, self.remove = agent, remove
        self.name = f"{agent.name} (no {remove})"
        self.action_space = agent.action_space
        inner_batch = getattr(agent, "act_batch", None)
        if inner_batch is not None:
            self.act_batch = lambda observations, infos: inner_batch(
                [ablate_observation(o, remove) for o in observations], infos
            )

    def reset(self, seed: int | None = None) -> None:
        self.agent.reset(seed)

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int | str:
        return self.agent.act(ablate_observation(obs, self.remove), info)


def ablated_factory(factory: Callable[[int], Agent], remove: str) -> Callable[[int], Agent]:
    """``factory`` (env index -> agent) with each agent wrapped once in `Ablated`: an agent the factory
    shares between envs stays shared (one batched call answers them all)."""
    wrappers: dict[int, Ablated] = {}

    def make(index: int) -> Agent:
        inner = factory(index)
        return wrappers.setdefault(id(inner), Ablated(inner, remove))  # the wrapper keeps ``inner`` alive

    return make


def check_ablation(remove: str | None) -> None:
    """``AgentError`` naming the known ablations when ``remove`` is set and not one of them."""
    if remove is not None and remove not in ABLATIONS:
        raise AgentError(f"unknown ablation {remove!r}; ablations: {', '.join(ABLATIONS)}")
