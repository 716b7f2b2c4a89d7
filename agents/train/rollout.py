"""Collecting PPO / GRPO samples from a Gymnasium vector env (text actions, SAME_STEP autoreset).

Each decision of each env is one `Decision`: the prompt, the sampled response tokens with their old
log-probs and values (straight from `VLMPolicy.generate`, no second forward pass), the env reward and the
episode flags. The vector env runs in ``AutoresetMode.SAME_STEP``: when an episode ends, the step's own
info and last observation come back in ``infos["final_info"]`` / ``infos["final_obs"]`` and the returned
observation already belongs to the next episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.policy.model import Generation, PromptInputs, VLMPolicy

PAD_ACTION = ""  # sent to envs whose GRPO episode is over (an invalid, discarded no-op step)


@dataclass
class Decision:
    """One policy decision (= one PPO sample)."""

    env_index: int
    prompt: PromptInputs
    response_ids: torch.Tensor  # [T] long
    logprobs: torch.Tensor  # [T] old log-probs of the sampled tokens (temperature 1)
    values: torch.Tensor  # [T] values before each response token
    text: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    bootstrap_value: float = 0.0  # V(next state) when the stream is cut without termination
    segment_end: bool = False  # last decision of this env in the rollout, episode not over
    group: int = -1  # GRPO group index (episodes sharing a start state)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class RolloutStats:
    """Wall-clock split and episode results of one rollout."""

    generate_s: float = 0.0
    env_s: float = 0.0
    value_s: float = 0.0
    generated_tokens: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    episode_metrics: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------- vector env plumbing
def make_env(env_id: str, env_kwargs: Mapping[str, Any]) -> gym.Env:
    """One env (importing vln_gym registers VLN-v0); top-level so AsyncVectorEnv can pickle it."""
    import vln_gym  # noqa: F401

    return gym.make(env_id, **dict(env_kwargs))


def make_vector_env(
    env_id: str, env_kwargs: Mapping[str, Any], num_envs: int, mode: str = "sync"
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` in SAME_STEP autoreset mode (``mode`` = sync | async)."""
    fns: list[Callable[[], gym.Env]] = [partial(make_env, env_id, dict(env_kwargs)) for _ in range(num_envs)]
    autoreset = gym.vector.AutoresetMode.SAME_STEP
    if mode == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset)
    if mode == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=autoreset)
    raise ValueError(f"vector env mode must be 'sync' or 'async', got {mode!r}")


def obs_at(observations: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The single-env observation ``index`` of a batched Dict observation."""
    return {key: value[index] for key, value in observations.items()}


def info_at(infos: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The single-env info ``index`` of a vector-env info dict (follows the ``_key`` masks, recursively)."""
    single: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[index]:
            continue
        if isinstance(value, Mapping):
            single[key] = info_at(value, index)
        else:
            item = value[index]
            single[key] = item.item() if isinstance(item, np.generic) else item
        if key == "final_obs" and single[key] is None:
            del single[key]
    return single


def step_result(infos: Mapping[str, Any], observations: Mapping[str, Any], index: int, done: bool):
    """``(info, last_obs)`` of env ``index``'s step: the finished episode's own when ``done`` (SAME_STEP)."""
    if done:
        return info_at(infos["final_info"], index), infos["final_obs"][index]
    return info_at(infos, index), obs_at(observations, index)


@torch.no_grad()
def state_values(policy: VLMPolicy, observations: Sequence[Mapping], batch_size: int = 16) -> list[float]:
    """V(s) of each observation (value at the last prompt token), in batches."""
    result: list[float] = []
    for start in range(0, len(observations), batch_size):
        prompts = policy.prepare(observations[start : start + batch_size])
        result.extend(policy.prompt_values(prompts).float().cpu().tolist())
    return result


# ---------------------------------------------------------------- collection
def _generate(
    policy: VLMPolicy,
    observations: Sequence[Mapping],
    generate_kwargs: Mapping[str, Any],
    stats: RolloutStats,
) -> Generation:
    """``policy.generate`` on single-env observations, its time and token count added to ``stats``."""
    start = time.perf_counter()
    generation = policy.generate(observations, **generate_kwargs)
    stats.generate_s += time.perf_counter() - start
    stats.generated_tokens += sum(len(ids) for ids in generation.response_ids)
    return generation


def _decision(
    generation: Generation,
    slot: int,
    env_index: int,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    info: dict[str, Any],
    group: int = -1,
) -> Decision:
    """The `Decision` of env ``env_index``, whose response is ``slot`` of ``generation``, after a vector
    step (``truncated`` only when not also terminated)."""
    return Decision(
        env_index=int(env_index),
        prompt=generation.prompts[slot],
        response_ids=generation.response_ids[slot],
        logprobs=generation.logprobs[slot],
        values=generation.values[slot],
        text=generation.texts[slot],
        reward=float(rewards[env_index]),
        terminated=bool(terminated[env_index]),
        truncated=bool(truncated[env_index]) and not bool(terminated[env_index]),
        info=info,
        group=group,
    )


def _record_episode_end(
    stats: RolloutStats, info: Mapping[str, Any], episode_return: float, length: int
) -> None:
    stats.episode_returns.append(episode_return)
    stats.episode_lengths.append(length)
    metrics = info.get("metrics")
    if isinstance(metrics, Mapping):
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number | bool)}
        stats.episode_metrics.append(numeric)


def collect_ppo(
    policy: VLMPolicy,
    envs: gym.vector.VectorEnv,
    observations: Mapping[str, Any],
    num_steps: int,
    generate_kwargs: Mapping[str, Any],
) -> tuple[list[list[Decision]], RolloutStats]:
    """``num_steps`` decisions per env from ``observations`` (the envs' current batched observation).

    Returns one time-ordered stream of decisions per env and the stats. Streams cut by truncation or by the
    end of the rollout carry ``bootstrap_value`` = V(next state), computed in one batched pass at the end.
    """
    num_envs = envs.num_envs
    streams: list[list[Decision]] = [[] for _ in range(num_envs)]
    stats = RolloutStats()
    running_return, running_length = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    pending: list[tuple[Decision, Mapping]] = []  # decisions needing V(next obs)
    for _ in range(num_steps):
        singles = [obs_at(observations, i) for i in range(num_envs)]
        generation = _generate(policy, singles, generate_kwargs, stats)
        start = time.perf_counter()
        observations, rewards, terminated, truncated, infos = envs.step(tuple(generation.texts))
        stats.env_s += time.perf_counter() - start
        for i in range(num_envs):
            done = bool(terminated[i] or truncated[i])
            info, last_obs = step_result(infos, observations, i, done)
            decision = _decision(generation, i, i, rewards, terminated, truncated, info)
            streams[i].append(decision)
            running_return[i] += decision.reward
            running_length[i] += 1
            if done:
                _record_episode_end(stats, info, float(running_return[i]), int(running_length[i]))
                running_return[i], running_length[i] = 0.0, 0
            if decision.truncated:
                pending.append((decision, last_obs))
    for i in range(num_envs):
        last = streams[i][-1]
        if not last.done:
            last.segment_end = True
            pending.append((last, obs_at(observations, i)))
    start = time.perf_counter()
    for (decision, _), value in zip(pending, state_values(policy, [obs for _, obs in pending]), strict=True):
        decision.bootstrap_value = value
    stats.value_s += time.perf_counter() - start
    return streams, stats


def collect_grpo(
    policy: VLMPolicy,
    envs: gym.vector.VectorEnv,
    seeds: Sequence[int],
    group_size: int,
    generate_kwargs: Mapping[str, Any],
    first_group: int = 0,
) -> tuple[list[list[Decision]], RolloutStats]:
    """One round of complete episodes: env ``j`` resets with ``seeds[j // group_size]``, so each group of
    ``group_size`` consecutive envs starts from the same state; only live envs generate.

    Returns one episode (list of decisions) per env, its decisions tagged with ``group = first_group + j //
    group_size``. Finished envs receive `PAD_ACTION` (discarded) until the whole round is over.
    """
    num_envs = envs.num_envs
    if num_envs % group_size:
        raise ValueError(f"GRPO needs num_envs ({num_envs}) to be a multiple of group_size ({group_size})")
    env_seeds = [int(seeds[j // group_size]) for j in range(num_envs)]
    observations, _ = envs.reset(seed=env_seeds)
    episodes: list[list[Decision]] = [[] for _ in range(num_envs)]
    live = np.ones(num_envs, dtype=bool)
    stats = RolloutStats()
    while live.any():
        active = np.flatnonzero(live)
        generation = _generate(policy, [obs_at(observations, i) for i in active], generate_kwargs, stats)
        actions = [PAD_ACTION] * num_envs
        for slot, i in enumerate(active):
            actions[i] = generation.texts[slot]
        start = time.perf_counter()
        observations, rewards, terminated, truncated, infos = envs.step(tuple(actions))
        stats.env_s += time.perf_counter() - start
        for slot, i in enumerate(active):
            done = bool(terminated[i] or truncated[i])
            info, _ = step_result(infos, observations, i, done)
            group = first_group + int(i) // group_size
            episodes[i].append(_decision(generation, slot, i, rewards, terminated, truncated, info, group))
            if done:
                live[i] = False
                episode_return = sum(d.reward for d in episodes[i])
                _record_episode_end(stats, info, episode_return, len(episodes[i]))
    return episodes, stats
