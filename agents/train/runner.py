"""The one episode runner: PPO, GRPO, SFT pair collection and evaluation all step envs through it.

An `EpisodeRunner` owns an `EnvPool` and, per env, the observation and info in flight, whether an episode
is live, and the running return / length of that episode. `step(actor)` asks the actor for the actions of
the live envs only (one batched call, so a policy generates for all of them at once), steps exactly those
envs and returns one `Step` per env. Finished episodes stay finished until the caller resets them; the
callers differ only in when they reset, from which state (a seed or a snapshot), and what they keep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agents.train.envpool import EnvPool
from vln_gym.actions import format_action
from vln_gym.geometry import MOVE_FORWARD, TURN_LEFT, TURN_RIGHT

EXPLORE_ACTIONS = (MOVE_FORWARD, TURN_LEFT, TURN_RIGHT)  # random detours never STOP (that ends the episode)


class Actor(Protocol):
    """Chooses the actions of several envs at once."""

    def act(
        self, indices: Sequence[int], observations: Sequence[Mapping], infos: Sequence[Mapping]
    ) -> list[tuple[Any, Any]]:
        """One ``(env action, payload)`` per index; the payload comes back in `Step.output`."""
        ...


class ExpertActor:
    """Moves as the expert, or with chance ``explore`` one random move (never STOP). The expert's answer is
    ``encode(info["expert_actions"])`` (an `ActionGrammar`'s: a chunk of its next actions), by default its
    next action as a word; the payload is ``(expert's next action, expert's answer)`` (the label of an SFT
    pair). ``needed_by`` names the caller in the error raised when the env does not know the expert."""

    def __init__(
        self,
        explore: float = 0.0,
        rng: np.random.Generator | None = None,
        *,
        needed_by: str = "the expert",
        encode: Callable[[Sequence[int]], str] | None = None,
    ) -> None:
        if not 0.0 <= explore < 1.0:
            raise ValueError(f"explore must be in [0, 1), got {explore}")
        self.explore, self.rng, self.needed_by = explore, rng or np.random.default_rng(0), needed_by
        self.encode = encode or (lambda plan: format_action(int(plan[0])))

    def act(self, indices, observations, infos) -> list[tuple[str, tuple[int, str]]]:
        answers = []
        for i, info in zip(indices, infos, strict=True):
            expert = info.get("expert_actions")
            if not expert:
                raise ValueError(
                    f"env {i}: info['expert_actions'] is missing or empty; {self.needed_by} needs an env "
                    "that knows the expert's actions (the built-in world, or records that have them)"
                )
            label = self.encode(expert)
            answer = label
            if self.explore > 0 and self.rng.random() < self.explore:
                answer = format_action(int(self.rng.choice(EXPLORE_ACTIONS)))
            answers.append((answer, (int(expert[0]), label)))
        return answers


@dataclass
class Step:
    """One env step: what the actor saw and chose, and what the env answered."""

    env_index: int
    observation: dict[str, Any]
    output: Any  # the actor's payload for this env (e.g. the generated tokens)
    reward: float
    terminated: bool
    truncated: bool  # only when not also terminated
    info: dict[str, Any]
    next_observation: dict[str, Any]  # the episode's last observation when it ended here

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class EpisodeEnd:
    """A finished episode: its return, its length (decisions), the env's last info."""

    env_index: int
    episode_return: float
    length: int
    info: dict[str, Any]


@dataclass
class RunnerState:
    """What a checkpoint needs to continue the runner's episodes exactly: env snapshots of the live envs
    (``None`` for the others), their running returns and lengths, and each env's episode counter."""

    snapshots: list[dict[str, Any] | None]
    returns: list[float]
    lengths: list[int]
    episodes_started: list[int]


@dataclass
class EpisodeRunner:
    """Per-env episode bookkeeping over an `EnvPool`."""

    pool: EnvPool
    observations: list[dict[str, Any] | None] = field(init=False)
    infos: list[dict[str, Any] | None] = field(init=False)
    live: np.ndarray = field(init=False)
    returns: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)
    episodes_started: np.ndarray = field(init=False)
    env_seconds: float = 0.0

    def __post_init__(self) -> None:
        n = self.pool.num_envs
        self.observations = [None] * n
        self.infos = [None] * n
        self.live = np.zeros(n, dtype=bool)
        self.returns = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.episodes_started = np.zeros(n, dtype=np.int64)

    @property
    def num_envs(self) -> int:
        return self.pool.num_envs

    def live_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.live)]

    # ------------------------------------------------------------------ starting episodes
    def reset(self, requests: Mapping[int, tuple[int | None, dict[str, Any] | None]]) -> None:
        """Start a new episode on each env of ``{i: (seed, options)}``."""
        start = time.perf_counter()
        answers = self.pool.reset(requests)
        self.env_seconds += time.perf_counter() - start
        for i, (obs, info) in answers.items():
            self._begin(i, obs, info)
            self.episodes_started[i] += 1

    def restore(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Continue each env of ``{i: snapshot}`` from its snapshot, as a fresh decision stream (return and
        length count from 0; the env's own step count and path continue)."""
        start = time.perf_counter()
        answers = self.pool.set_state(states)
        self.env_seconds += time.perf_counter() - start
        for i, (obs, info) in answers.items():
            self._begin(i, obs, info)

    def release(self, index: int) -> None:
        """Stop stepping env ``index`` (its episode is left unfinished, e.g. at a decision budget)."""
        self.live[index] = False

    def _begin(self, i: int, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self.observations[i], self.infos[i] = obs, info
        self.live[i] = True
        self.returns[i], self.lengths[i] = 0.0, 0

    # ------------------------------------------------------------------ stepping
    def step(self, actor: Actor, indices: Sequence[int] | None = None) -> tuple[list[Step], list[EpisodeEnd]]:
        """One decision for each live env (or for ``indices``, all of which must be live)."""
        indices = self.live_indices() if indices is None else [int(i) for i in indices]
        if not indices:
            return [], []
        if not all(self.live[i] for i in indices):
            raise RuntimeError(f"step() on finished envs {[i for i in indices if not self.live[i]]}")
        observations = [self.observations[i] for i in indices]
        infos = [self.infos[i] for i in indices]
        chosen = actor.act(indices, observations, infos)
        if len(chosen) != len(indices):
            raise RuntimeError(f"the actor answered {len(chosen)} actions for {len(indices)} envs")
        start = time.perf_counter()
        results = self.pool.step({i: action for i, (action, _) in zip(indices, chosen, strict=True)})
        self.env_seconds += time.perf_counter() - start
        steps, ends = [], []
        for i, obs, (_, payload) in zip(indices, observations, chosen, strict=True):
            next_obs, reward, terminated, truncated, info = results[i]
            step = Step(i, obs, payload, reward, terminated, truncated and not terminated, info, next_obs)
            steps.append(step)
            self.observations[i], self.infos[i] = next_obs, info
            self.returns[i] += reward
            self.lengths[i] += 1
            if step.done:
                self.live[i] = False
                ends.append(EpisodeEnd(i, float(self.returns[i]), int(self.lengths[i]), info))
        return steps, ends

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> RunnerState:
        """Snapshots of the live envs and the bookkeeping (see `RunnerState`)."""
        snapshots = self.pool.get_state(self.live_indices())
        return RunnerState(
            snapshots=[snapshots.get(i) for i in range(self.num_envs)],
            returns=[float(r) for r in self.returns],
            lengths=[int(n) for n in self.lengths],
            episodes_started=[int(n) for n in self.episodes_started],
        )

    def load_state(self, state: RunnerState) -> None:
        """Put every env back where `state` found it (envs without a snapshot are left finished)."""
        if len(state.snapshots) != self.num_envs:
            raise ValueError(f"runner state for {len(state.snapshots)} envs, this run has {self.num_envs}")
        self.live[:] = False
        self.restore({i: s for i, s in enumerate(state.snapshots) if s is not None})
        self.returns[:] = state.returns
        self.lengths[:] = state.lengths
        self.episodes_started[:] = state.episodes_started
