"""PPO and GRPO collection on the episode runner (text actions from ``VLMPolicy.generate``).

Each decision of each env is one `Decision`: the prompt, the sampled response tokens with their old
log-probs and values (straight from ``generate``, no second forward pass), the env reward and the episode
flags.

- PPO (`collect_ppo`): the envs persist across iterations. An iteration takes ``num_steps`` decisions per
  env, continuing the episodes in flight; an env whose episode ended is reset (seeded from its own episode
  counter) when it is next needed. A stream cut by the end of the rollout or by truncation carries
  ``bootstrap_value`` = V(next state); a termination never bootstraps.
- GRPO (`collect_grpo`): ``num_envs / group_size`` groups. Each group starts from one state, either a fresh
  reset or (``start="expert_prefix"``, ActiveVLN's recipe) a reset followed by a random number of expert
  steps, snapshotted and restored into every member. Members run until their episode ends or they used
  ``turn_budget`` decisions; only live envs are stepped. Members whose observations are equal (every
  member's first) get one prompt, processed once by ``generate`` and by the update's scoring
  (`agents.policy.prompt_sharing`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.policy.model import Generation, PromptInputs, VLMPolicy
from agents.train.config import GRPO_STARTS
from agents.train.runner import EpisodeEnd, EpisodeRunner, ExpertActor, Step
from vln_gym.geometry import STOP


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
    carried_over: int = 0  # episodes already in flight when the rollout started (PPO)

    def merge(self, other: RolloutStats) -> None:
        """Add another rollout's times, tokens and episodes to these."""
        for name in ("generate_s", "env_s", "value_s", "generated_tokens", "carried_over"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.episode_returns += other.episode_returns
        self.episode_lengths += other.episode_lengths
        self.episode_metrics += other.episode_metrics

    def record(self, end: EpisodeEnd) -> None:
        self.episode_returns.append(end.episode_return)
        self.episode_lengths.append(end.length)
        metrics = end.info.get("metrics")
        if isinstance(metrics, Mapping):
            numeric = {
                k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number | bool)
            }
            self.episode_metrics.append(numeric)


class PolicyActor:
    """The policy as an `Actor`: one batched ``generate`` for all live envs; the payload is the
    ``(generation, slot)`` pair a `Decision` is built from."""

    def __init__(self, policy: VLMPolicy, generate_kwargs: Mapping[str, Any], stats: RolloutStats) -> None:
        self.policy, self.generate_kwargs, self.stats = policy, dict(generate_kwargs), stats

    def act(self, indices, observations, infos) -> list[tuple[str, tuple[Generation, int]]]:
        start = time.perf_counter()
        generation = self.policy.generate(observations, **self.generate_kwargs)
        self.stats.generate_s += time.perf_counter() - start
        self.stats.generated_tokens += sum(len(ids) for ids in generation.response_ids)
        return [(text, (generation, slot)) for slot, text in enumerate(generation.texts)]


def decision_of(step: Step, group: int = -1) -> Decision:
    """The `Decision` of a runner step whose payload came from `PolicyActor`."""
    generation, slot = step.output
    return Decision(
        env_index=step.env_index,
        prompt=generation.prompts[slot],
        response_ids=generation.response_ids[slot],
        logprobs=generation.logprobs[slot],
        values=generation.values[slot],
        text=generation.texts[slot],
        reward=float(step.reward),
        terminated=step.terminated,
        truncated=step.truncated,
        info=step.info,
        group=group,
    )


def episode_seed(seed: int, rank: int, env_index: int, episode: int) -> int:
    """Seed of episode number ``episode`` of env ``env_index`` on process ``rank`` (scheduling-free)."""
    return int(np.random.SeedSequence([seed, rank, env_index, episode]).generate_state(1)[0])


@torch.no_grad()
def state_values(policy: VLMPolicy, observations: Sequence[Mapping], batch_size: int = 16) -> list[float]:
    """V(s) of each observation (value at the last prompt token), in batches."""
    result: list[float] = []
    for start in range(0, len(observations), batch_size):
        prompts = policy.prepare(observations[start : start + batch_size])
        result.extend(policy.prompt_values(prompts).float().cpu().tolist())
    return result


# ---------------------------------------------------------------- PPO
def collect_ppo(
    policy: VLMPolicy,
    runner: EpisodeRunner,
    num_steps: int,
    generate_kwargs: Mapping[str, Any],
    *,
    seed: int,
    rank: int = 0,
) -> tuple[list[list[Decision]], RolloutStats]:
    """``num_steps`` decisions per env, continuing the runner's episodes in flight.

    Returns one time-ordered stream of decisions per env and the stats. Streams cut by truncation or by the
    end of the rollout carry ``bootstrap_value`` = V(next state), computed in one batched pass at the end.
    """
    stats = RolloutStats(carried_over=int(runner.live.sum()))
    actor = PolicyActor(policy, generate_kwargs, stats)
    streams: list[list[Decision]] = [[] for _ in range(runner.num_envs)]
    pending: list[tuple[Decision, Mapping]] = []  # decisions needing V(next obs)
    env_start = runner.env_seconds
    for _ in range(num_steps):
        idle = [i for i in range(runner.num_envs) if not runner.live[i]]
        runner.reset({i: (episode_seed(seed, rank, i, int(runner.episodes_started[i])), None) for i in idle})
        steps, ends = runner.step(actor)
        for step in steps:
            decision = decision_of(step)
            streams[step.env_index].append(decision)
            if decision.truncated:
                pending.append((decision, step.next_observation))
        for end in ends:
            stats.record(end)
    for i in runner.live_indices():
        last = streams[i][-1]
        last.segment_end = True
        pending.append((last, runner.observations[i]))
    stats.env_s = runner.env_seconds - env_start
    start = time.perf_counter()
    for (decision, _), value in zip(pending, state_values(policy, [obs for _, obs in pending]), strict=True):
        decision.bootstrap_value = value
    stats.value_s += time.perf_counter() - start
    return streams, stats


# ---------------------------------------------------------------- GRPO
class _Fixed:
    """An actor that answers one given action."""

    def __init__(self, action: str) -> None:
        self.action = action

    def act(self, indices, observations, infos) -> list[tuple[str, None]]:
        return [(self.action, None) for _ in indices]


def start_group(runner: EpisodeRunner, members: Sequence[int], seed: int, prefix_steps: int) -> int:
    """Reset the group's first env with ``seed``, replay up to ``prefix_steps`` expert actions (never the
    expert's STOP, never to the episode's end), then restore that state into every member. Returns the
    number of expert steps replayed."""
    first = members[0]
    runner.reset({first: (seed, None)})
    replayed = 0
    replay = ExpertActor(needed_by="grpo_start='expert_prefix' (use grpo_start='reset' for other data)")
    while replayed < prefix_steps:
        action, (expert, _) = replay.act([first], [runner.observations[first]], [runner.infos[first]])[0]
        if expert == STOP:
            break
        before = runner.pool.get_state([first])[first]
        steps, _ = runner.step(_Fixed(action), [first])
        if steps[0].done:  # the prefix must leave an episode to play: back to the state before
            runner.restore({first: before})
            break
        replayed += 1
    snapshot = runner.pool.get_state([first])[first]
    runner.restore({i: snapshot for i in members})
    return replayed


def collect_grpo(
    policy: VLMPolicy,
    runner: EpisodeRunner,
    seeds: Sequence[int],
    group_size: int,
    generate_kwargs: Mapping[str, Any],
    *,
    first_group: int = 0,
    start: str = "reset",
    prefix_steps: Sequence[int] | None = None,
    turn_budget: int | None = None,
) -> tuple[list[list[Decision]], RolloutStats]:
    """One round of groups: group ``g`` (envs ``g * group_size ...``) starts from ``seeds[g]`` (and, with
    ``start="expert_prefix"``, ``prefix_steps[g]`` expert steps). Returns one decision list per env, tagged
    with ``group = first_group + g``; a member's list ends at its episode's end or at ``turn_budget``."""
    num_envs = runner.num_envs
    if num_envs % group_size:
        raise ValueError(f"GRPO needs num_envs ({num_envs}) to be a multiple of group_size ({group_size})")
    if start not in GRPO_STARTS:
        raise ValueError(f"GRPO start must be one of {GRPO_STARTS}, got {start!r}")
    stats = RolloutStats()
    env_start = runner.env_seconds
    for g in range(num_envs // group_size):
        members = list(range(g * group_size, (g + 1) * group_size))
        if start == "reset":
            runner.reset({i: (int(seeds[g]), None) for i in members})
        else:
            start_group(runner, members, int(seeds[g]), int(prefix_steps[g]) if prefix_steps else 0)
    episodes: list[list[Decision]] = [[] for _ in range(num_envs)]
    actor = PolicyActor(policy, generate_kwargs, stats)
    while runner.live.any():
        steps, ends = runner.step(actor)
        for step in steps:
            i = step.env_index
            episodes[i].append(decision_of(step, first_group + i // group_size))
            if turn_budget is not None and not step.done and len(episodes[i]) >= turn_budget:
                runner.release(i)
        for end in ends:
            stats.record(end)
    stats.env_s = runner.env_seconds - env_start
    return episodes, stats
