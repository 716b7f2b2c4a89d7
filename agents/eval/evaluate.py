"""`vln-gym evaluate`: run an agent on episodes of ``VLN-v0`` (vectorised), write metrics, episodes, report.

Outputs in ``--out DIR`` (byte-identical for the same arguments and seed; no timestamps inside):

- ``metrics.json``: means of ``success_rate, spl, oracle_success_rate, navigation_error, trajectory_length,
  ndtw, sdtw, steps, invalid_action_rate, reward`` (the episode's summed env reward) over episodes,
  ``episodes`` (count), ``distance_kind``,
  plus ``std`` (sample std, ddof 1) and ``ci95`` (Wilson score interval for the success rates, normal
  approximation mean +- 1.96 std / sqrt(n) for the other metrics, clipped at the metric's natural bounds:
  ``METRIC_BOUNDS``), ``env_kwargs`` (the ``gym.make`` kwargs the episodes ran with) and ``env_source``.
- ``episodes.jsonl``: one line per episode: index, id, instruction, actions applied, agent outputs, path,
  reference path, goal, metrics, reward and the sum of each reward term.
- ``report.md`` + PNGs: top-down trajectory plots, first-person frames along the first episode, histogram
  of navigation error.

Episode order is fixed: episode ``k`` of the run is env episode index ``episode_indices[k]`` whatever the
number of envs, and both the env and the agent are reseeded per episode from ``(seed, index)``, so results
do not depend on ``--num-envs``.

Held-out built-in-world episodes: with no ``--data``, evaluation uses ``HELDOUT_WORLD_KWARGS`` (a world
seed the trainer never trains on; see that constant). A policy checkpoint evaluated without env kwargs
runs its training env (``trainer_state.json``'s ``config.env_kwargs``) on those held-out episodes; env
units other than its action grammar's are refused (`agents.eval.trained_env`).

The result set is written whole or not at all: into a hidden folder inside ``--out``, then moved in (with
Ctrl-C held off for those renames), the previous run's files moved out and deleted (``--overwrite``, a
folder of evaluate's own files only). A failed or interrupted run removes an ``--out`` it created.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.eval import report
from agents.eval.ablation import ABLATIONS, ablated_factory, check_ablation
from agents.eval.agent import Agent, AgentError
from agents.eval.decisions import aggregate_decisions, decision_record
from agents.eval.intervals import clip_interval, wilson_interval
from agents.eval.scripted import AGENT_NAMES, make_agent
from agents.eval.trained_env import (
    DATA_SOURCE_KEYS,
    TrainedPolicy,
    check_units,
    held_out_env,
    read_trained_policy,
)
from agents.train.envpool import make_env, make_env_pool
from agents.train.runner import EpisodeRunner
from vln_gym.arguments import whole_number
from vln_gym.data.fields import FORMATS
from vln_gym.geometry import ACTION_NAMES
from vln_gym.images import ImageLoadError
from vln_gym.paths import absolute_path, first_missing
from vln_gym.safe_files import (
    atomic_write_text,
    atomic_writer,
    check_output,
    check_replaceable,
    writable_folder,
)

# Episodes of the built-in world used for evaluation. Training (agents.ppo_train defaults, the env's
# default world) uses world seed 0; evaluation uses a different world seed, so every floor plan, start
# and goal is unseen.
HELDOUT_WORLD_SEED = 1000
HELDOUT_WORLD_KWARGS: dict[str, Any] = {"world_seed": HELDOUT_WORLD_SEED, "world_episodes": 100}

MEAN_KEYS: dict[str, str] = {
    "success_rate": "success",
    "spl": "spl",
    "oracle_success_rate": "oracle_success",
    "navigation_error": "navigation_error",
    "trajectory_length": "trajectory_length",
    "ndtw": "ndtw",
    "sdtw": "sdtw",
    "steps": "steps",
    "invalid_action_rate": "invalid_action_rate",
    "reward": "reward",
}
_UNIT = (0.0, 1.0)
_NONNEGATIVE = (0.0, math.inf)
# Where each mean lies (its 95% interval is clipped there); the reward's sign is the reward terms' to choose.
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "success_rate": _UNIT,
    "spl": _UNIT,
    "oracle_success_rate": _UNIT,
    "navigation_error": _NONNEGATIVE,
    "trajectory_length": _NONNEGATIVE,
    "ndtw": _UNIT,
    "sdtw": _UNIT,
    "steps": _NONNEGATIVE,
    "invalid_action_rate": _UNIT,
    "reward": (-math.inf, math.inf),
}
# What `write_outputs` writes into --out (all an --overwrite may replace), and its hidden build folders.
OUTPUT_NAMES = (
    "metrics.json",
    "episodes.jsonl",
    "report.md",
    "trajectories.png",
    "maps.png",
    "frames.png",
    "navigation_error.png",
    "videos",
)
STAGING_PREFIX = ".vln-gym-evaluate-"
_DATA_KWARGS = ("data_files", "format", "field_map", "media_dir", "path_remap", "data_options")  # VLNEnv's
_LOAD_OPTIONS = ("heading_unit", "allow_outside_media")  # load_episodes options the env takes in data_options


class EvaluationError(ValueError):
    """Bad evaluation input (arguments, env kwargs, data) reported as one line."""


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during `evaluate`; the message says what ``--out`` holds now."""


@dataclass
class EvaluationResult:
    """What ``evaluate`` returns: aggregated metrics, one record per episode, frames of the first one."""

    metrics: dict[str, Any]
    episodes: list[dict[str, Any]]
    frames: list[np.ndarray] = field(default_factory=list)
    frame_titles: list[str] = field(default_factory=list)
    maps: list[tuple[np.ndarray, tuple[float, float, float, float]]] = field(default_factory=list)
    plotted: list[int] = field(default_factory=list)  # run-order positions of the drawn episodes
    videos: list[list[np.ndarray]] = field(default_factory=list)  # render() frames of the first episodes
    out_dir: Path | None = None


RATE_KEYS = ("success_rate", "oracle_success_rate")  # per-episode 0/1: Wilson score intervals


def aggregate_metrics(per_episode: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean of each metric (``MEAN_KEYS``) over episodes, with ``std`` (ddof 1; 0 for one episode) and
    ``ci95``: the Wilson interval for the rates (``RATE_KEYS``), mean +- 1.96 * std / sqrt(n) clipped to
    ``METRIC_BOUNDS`` for the rest; ``distance_kind`` is the common kind or ``"mixed"``."""
    if not per_episode:
        raise EvaluationError("no episodes to aggregate")
    n = len(per_episode)
    result: dict[str, Any] = {}
    std: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    for key, source in MEAN_KEYS.items():
        values = np.array([float(m[source]) for m in per_episode], dtype=float)
        mean = float(values.mean())
        spread = float(values.std(ddof=1)) if n > 1 else 0.0
        half = 1.96 * spread / math.sqrt(n)
        result[key] = mean
        std[key] = spread
        ci95[key] = (
            wilson_interval(float(values.sum()), n)
            if key in RATE_KEYS
            else clip_interval(mean - half, mean + half, METRIC_BOUNDS[key])
        )
    kinds = sorted({str(m.get("distance_kind", "euclidean")) for m in per_episode})
    result["episodes"] = n
    result["distance_kind"] = kinds[0] if len(kinds) == 1 else "mixed"
    result["std"] = std
    result["ci95"] = ci95
    return result


def episode_seed(seed: int, index: int) -> int:
    """Per-episode seed from the run seed and the episode index (independent of scheduling)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> JSON-ready Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def env_build_kwargs(env_kwargs: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """``gym.make`` kwargs: ``data`` becomes ``data_files`` (the env loads and validates it); the load options
    ``heading_unit`` / ``allow_outside_media`` given at the top level move into ``data_options``; with no
    data, the held-out built-in world (``HELDOUT_WORLD_KWARGS``, which ``env_kwargs`` may override)."""
    kwargs = dict(env_kwargs)
    if data is not None and ("data_files" in kwargs or "episodes" in kwargs):
        raise EvaluationError(
            "give the data once: --data / data, or env_kwargs data_files / episodes, not both"
        )
    if data is not None:
        kwargs["data_files"] = [str(data)] if isinstance(data, str | Path) else [str(p) for p in data]
    if "data_files" in kwargs:
        files = kwargs["data_files"]
        kwargs["data_files"] = files = (
            [str(files)] if isinstance(files, str | Path) else [str(f) for f in files]
        )
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise EvaluationError(f"{missing[0]}: data path not found")
    options = {key: kwargs.pop(key) for key in _LOAD_OPTIONS if key in kwargs}
    if options:
        kwargs["data_options"] = {**options, **dict(kwargs.get("data_options") or {})}
    if not _has_data(kwargs) and kwargs.get("views", "world") == "world":
        kwargs = {**HELDOUT_WORLD_KWARGS, **kwargs}
    return kwargs


def _has_data(kwargs: Mapping[str, Any]) -> bool:
    """Data files, episodes or a LLaMA-Factory dataset_info entry (else: the built-in world)."""
    return (
        "data_files" in kwargs or "episodes" in kwargs or "dataset_info" in (kwargs.get("data_options") or {})
    )


def make_probe_env(kwargs: Mapping[str, Any]) -> gym.Env:
    """One env in this process, to read the episode list and success radii (errors as one line)."""
    from vln_gym.data import DataError

    try:
        return make_env("VLN-v0", kwargs)
    except DataError as error:
        first = str(error).splitlines()[0] if str(error) else "data failed validation"
        raise EvaluationError(f"data failed validation: {first}") from error
    except (TypeError, ValueError, RuntimeError, OSError) as error:
        # gymnasium re-raises the env's own error with every kwarg (all episodes) appended: show the original
        cause = error.__cause__ if isinstance(error.__cause__, type(error)) else error
        raise EvaluationError(f"cannot make VLN-v0 with these env kwargs: {cause}") from error


def _agent_factory(
    agent: str | Agent | Callable[[], Agent],
    *,
    checkpoint: str | Path | None,
    world_mode: bool,
    trust_checkpoint: bool = False,
    **agent_kwargs: Any,
) -> Callable[[int], Agent]:
    """``env index -> agent``: checkpoint agents are loaded once and shared (they are stateless across
    steps); scripted agents get one instance per env (they count steps)."""
    if isinstance(agent, str):
        if agent not in AGENT_NAMES:
            raise AgentError(f"unknown agent {agent!r}; known agents: {', '.join(AGENT_NAMES)}")
        if agent in ("policy", "sb3"):
            shared = make_agent(agent, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint)
            return lambda _index: shared
        if agent == "oracle":
            agent_kwargs.setdefault("oracle_mode", "expert" if world_mode else "straight")
        built = [make_agent(agent, checkpoint=checkpoint, **agent_kwargs)]
        return lambda index: (
            built[0] if index == 0 else make_agent(agent, checkpoint=checkpoint, **agent_kwargs)
        )
    if hasattr(agent, "act"):
        return lambda _index: agent  # type: ignore[return-value]
    return lambda _index: agent()  # type: ignore[operator]


def _as_evaluation_error(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)``, its ValueError (a bad seed, an output in the way) an `EvaluationError`."""
    try:
        return check(*args, **kwargs)
    except ValueError as error:
        raise EvaluationError(str(error)) from None


def _check_run(seed: Any, out_dir: str | Path | None, overwrite: bool, inputs: Sequence[Any]) -> None:
    """The seed, and an ``out_dir`` that is a folder, neither an input nor existing results (without
    ``overwrite``; with it, a folder of evaluate's own files only)."""
    _as_evaluation_error(whole_number, "seed", seed, low=0)
    if out_dir is None:
        return
    out = Path(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise EvaluationError(f"--out {out}: is a file, not a folder")
    _as_evaluation_error(check_output, out, overwrite=overwrite, inputs=inputs)
    if overwrite:
        _as_evaluation_error(check_replaceable, out, _owned_entries(out), "vln-gym evaluate")


def _owned_entries(out: Path) -> set[str]:
    """The names in ``out`` that evaluate wrote: `OUTPUT_NAMES`, and build folders a killed run left."""
    names = [entry.name for entry in out.iterdir()] if out.is_dir() else []
    stale = {name for name in names if name.startswith(STAGING_PREFIX)}
    return set(OUTPUT_NAMES) | stale


def _evaluation_env(
    trained: TrainedPolicy | None, env_kwargs: Mapping[str, Any] | None, data: Any
) -> tuple[dict[str, Any], str]:
    """The env kwargs to evaluate with and where they come from (a line of the report): those given, else a
    policy checkpoint's training env on the held-out world, else the held-out world's defaults."""
    if env_kwargs is not None or data is not None:
        return dict(env_kwargs or {}), "as given (env kwargs / data)"
    if trained is None:
        return {}, "the held-out built-in world's defaults"
    if trained.env_kwargs is None:
        return {}, (
            f"the held-out built-in world's defaults: no trainer_state.json next to {trained.policy_dir} "
            "says what the policy trained on"
        )
    source = f"the training env of {trained.env_source}, on the held-out world"
    if any(key in trained.env_kwargs for key in DATA_SOURCE_KEYS):
        source += " (its episodes not used: --data evaluates on a dataset)"
    return held_out_env(trained.env_kwargs, HELDOUT_WORLD_KWARGS), source


def _recorded_env(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` as metrics.json records them: JSON values (dataclasses as objects, in-memory episodes
    counted)."""

    def default(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    recorded = {
        key: f"{len(value)} episodes given in memory" if key == "episodes" else value
        for key, value in kwargs.items()
    }
    return json.loads(json.dumps(_plain(recorded), default=default))


def _select_episodes(env: Any, num_episodes: int | None, episode_indices: Sequence[int] | None) -> list[int]:
    """``episode_indices`` (checked against the env's episode list), else the first ``num_episodes``."""
    available = len(env.episodes)
    if episode_indices is None:
        count = available if num_episodes is None else min(int(num_episodes), available)
        episode_indices = list(range(count))
    indices = [int(i) for i in episode_indices]
    bad = [i for i in indices if not 0 <= i < available]
    if bad:
        raise EvaluationError(f"episode index {bad[0]} out of range (the env has {available} episodes)")
    if not indices:
        raise EvaluationError("no episodes selected (--episodes must be >= 1)")
    return indices


def evaluate(
    agent: str | Agent | Callable[[], Agent],
    *,
    checkpoint: str | Path | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    data: str | Path | Sequence[str | Path] | None = None,
    num_episodes: int | None = 20,
    episode_indices: Sequence[int] | None = None,
    num_envs: int = 1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    vectorization_mode: str = "sync",
    forward_steps: int = 10,
    plots: bool = True,
    label: str | None = None,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    video: int = 0,
    ablate: str | None = None,
) -> EvaluationResult:
    """Run ``agent`` (a name from ``AGENT_NAMES``, an agent, or a zero-argument factory) on episodes.

    Episodes: ``episode_indices`` when given, else the first ``num_episodes`` (``None`` = all) of the
    episode list. With neither ``data`` nor ``episodes`` / ``data_files`` in ``env_kwargs``, the built-in
    world's held-out episodes (``HELDOUT_WORLD_KWARGS``; ``world_seed`` / ``world_episodes`` in
    ``env_kwargs`` override them); ``env_kwargs=None`` with a ``policy`` checkpoint: its training env on
    them. ``data`` loads through ``vln_gym.data.load_episodes``
    with load options (``format``, ``field_map``, ``media_dir``, ``path_remap``, ``heading_unit``) taken
    from ``env_kwargs``. ``ablate`` (``frames`` | ``instruction``) runs the agent with that input removed
    (`agents.eval.ablation`: a unimodal baseline). Writes the output files when ``out_dir`` is given; an
    ``out_dir`` that holds anything is refused (before any episode runs) unless ``overwrite``, and it may
    never hold the data. Ctrl-C raises `EvaluationInterrupted` (a ``KeyboardInterrupt``).
    """
    check_ablation(ablate)
    trained = read_trained_policy(checkpoint) if agent == "policy" and checkpoint is not None else None
    env_kwargs, env_source = _evaluation_env(trained, env_kwargs, data)
    kwargs = env_build_kwargs(env_kwargs, data)
    if video:
        _require_moviepy()
        kwargs.update(render_mode="rgb_array", render_view=kwargs.get("render_view", "both"))
    _check_run(seed, out_dir, overwrite, kwargs.get("data_files", []))
    if num_envs < 1:
        raise EvaluationError(f"--num-envs must be >= 1, got {num_envs}")
    with _claimed_output(out_dir):
        probe = make_probe_env(kwargs)
        try:
            if out_dir is not None:
                _as_evaluation_error(writable_folder, out_dir)  # once the data loads, before any episode
            env = probe.unwrapped
            world_mode = env.views == "world"
            indices = _select_episodes(env, num_episodes, episode_indices)
            if trained is not None:
                check_units(trained, env.forward_step, env.turn_angle)
            chosen = [env.episodes[i] for i in indices]
            radii = [
                env.success_distance if e.success_distance is None else float(e.success_distance)
                for e in chosen
            ]
            factory = _agent_factory(
                agent,
                checkpoint=checkpoint,
                world_mode=world_mode,
                trust_checkpoint=trust_checkpoint,
                seed=seed,
                forward_steps=forward_steps,
                forward_step=env.forward_step,
                turn_angle=env.turn_angle,
            )
            if ablate is not None:
                factory = ablated_factory(factory, ablate)
            first_agent = factory(0)
            kwargs.setdefault("action_space", first_agent.action_space)
            if kwargs["action_space"] == "discrete" and first_agent.action_space == "text":
                raise EvaluationError(
                    f"agent {first_agent.name!r} answers in text; it needs action_space='text'"
                )
            text_env = kwargs["action_space"] == "text"
            recorded = _recorded_env(kwargs)
            if _has_data(kwargs):  # loaded and validated once (here), not again by every sub-env
                kwargs = {k: v for k, v in kwargs.items() if k not in _DATA_KWARGS}
                kwargs["episodes"] = list(env.episodes)
        finally:
            probe.close()
        pool = make_env_pool("VLN-v0", kwargs, min(num_envs, len(indices)), vectorization_mode)
        try:
            result = _run(
                EpisodeRunner(pool), factory, first_agent, indices, radii, seed, text_env, on_episode, video
            )
        finally:
            pool.close()
        result.metrics = {
            "agent": label or first_agent.name,
            "seed": seed,
            **result.metrics,
            "env_kwargs": recorded,
            "env_source": env_source,
        }
        result.plotted = plotted_indices(len(result.episodes), seed)
        if plots and world_mode:
            result.maps = world_maps(
                [result.episodes[i] for i in result.plotted], [chosen[i] for i in result.plotted]
            )
        if out_dir is not None:
            result.out_dir = write_outputs(result, out_dir, plots=plots)
    return result


def _remove_created(out: Path, created: Path) -> None:
    """Remove ``out`` and its parents up to ``created`` while they are empty (never anything inside)."""
    folder = out
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above
            return
        if folder == created:
            return
        folder = folder.parent


@contextlib.contextmanager
def _claimed_output(out_dir: str | Path | None) -> Iterator[None]:
    """Around a run that writes ``out_dir``: a failure removes the folders the run created (when empty,
    as they are unless the results were written); Ctrl-C becomes `EvaluationInterrupted` saying what
    ``out_dir`` holds."""
    if out_dir is None:
        yield
        return
    out = Path(absolute_path(out_dir))
    created = first_missing(out)
    earlier = out.is_dir() and any(out.iterdir())
    try:
        yield
    except BaseException as error:
        if created is not None:
            _remove_created(out, created)
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, EvaluationInterrupted):
            kept = "the earlier results in {} are kept" if earlier else "nothing written to {}"
            raise EvaluationInterrupted(kept.format(out_dir)) from None
        raise


@contextlib.contextmanager
def _sigint_held(detail: str) -> Iterator[None]:
    """Hold Ctrl-C off while the block runs (main thread only); one that came then raises
    `EvaluationInterrupted` (``detail``) after it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise EvaluationInterrupted(detail)


def _require_moviepy() -> None:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise EvaluationError("--video needs moviepy: pip install 'vln-gym[video]'") from None


def write_videos(videos: Sequence[Sequence[np.ndarray]], folder: Path, fps: int = 4) -> list[Path]:
    """One H.264 ``episode_K.mp4`` per frame list (moviepy; each file written atomically)."""
    from moviepy import ImageSequenceClip

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frames in enumerate(videos):
        path = folder / f"episode_{k}.mp4"
        temporary = folder / f".episode_{k}.tmp.mp4"
        clip = ImageSequenceClip([np.asarray(f) for f in frames], fps=fps)
        clip.write_videofile(str(temporary), codec="libx264", logger=None, audio=False)
        clip.close()
        temporary.replace(path)
        paths.append(path)
    return paths


def _env_action(action: int | str, text_env: bool) -> int | str:
    if text_env and not isinstance(action, str):
        from vln_gym.actions import format_action

        return format_action(int(action), "word")
    return action if isinstance(action, str) else int(action)


class AgentsActor:
    """Evaluation agents as a runner `Actor`: one agent per env, or one shared model agent that answers all
    live envs in one batched call (``act_batch``). The payload is the agent's raw output."""

    def __init__(self, agents: Sequence[Agent], text_env: bool) -> None:
        self.agents, self.text_env = list(agents), text_env
        shared = all(a is agents[0] for a in agents)
        self.act_batch = getattr(agents[0], "act_batch", None) if shared else None

    def act(self, indices, observations, infos) -> list[tuple[int | str, Any]]:
        if self.act_batch is not None:
            outputs = self.act_batch(list(observations), list(infos))
        else:
            outputs = [self.agents[i].act(o, f) for i, o, f in zip(indices, observations, infos, strict=True)]
        return [(_env_action(output, self.text_env), output) for output in outputs]


def _new_record(order: int, index: int, ep_seed: int, obs: Mapping, info: Mapping, radius: float) -> dict:
    return {
        "index": index,
        "id": str(info.get("episode_id")),
        "instruction": str(obs["instruction"]),
        "seed": ep_seed,
        "actions": [],
        "outputs": [],
        "path": [_plain(info["agent_position"])],
        "reference_path": _plain(info.get("reference_path")),
        "goal_position": _plain(info["goal_position"]),
        "success_distance": radius,
        "reward": 0.0,
        "reward_terms": {},
        "invalid_actions": 0,
        "collisions": 0,
        "decisions": [],
        "_before": (info.get("expert_actions"), float(info["distance_to_goal"])),  # dropped at the end
    }


def _run(
    runner: EpisodeRunner,
    factory: Callable[[int], Agent],
    first_agent: Agent,
    indices: list[int],
    radii: list[float],
    seed: int,
    text_env: bool,
    on_episode: Callable[[dict[str, Any]], None] | None,
    video: int = 0,
) -> EvaluationResult:
    """Each env runs one queued episode at a time on the episode runner; an env whose episode ended takes
    the next index from the queue (reset with that episode's own seed) or stays idle once it is empty.
    The first ``video`` episodes (run order) keep one ``render()`` frame per step."""
    agents = [first_agent] + [factory(i) for i in range(1, runner.num_envs)]
    actor = AgentsActor(agents, text_env)
    queue = list(enumerate(indices))  # (run order, env episode index)
    records: list[dict[str, Any] | None] = [None] * len(indices)
    current: list[tuple[int, dict[str, Any]] | None] = [None] * runner.num_envs
    frames: list[np.ndarray] = []
    frame_titles: list[str] = []
    videos: list[list[np.ndarray]] = [[] for _ in range(min(video, len(indices)))]

    def film(order: int, env_index: int) -> None:
        if order < len(videos):
            videos[order].append(runner.pool.render(env_index))

    def start(env_index: int) -> None:
        if not queue:
            current[env_index] = None
            return
        order, index = queue.pop(0)
        ep_seed = episode_seed(seed, index)
        runner.reset({env_index: (ep_seed, {"episode_index": index})})
        agents[env_index].reset(seed=ep_seed)
        obs, info = runner.observations[env_index], runner.infos[env_index]
        current[env_index] = (order, _new_record(order, index, ep_seed, obs, info, radii[order]))
        film(order, env_index)
        if order == 0:
            frames.append(np.array(obs["frames"][-1]))
            frame_titles.append("start")

    for env_index in range(runner.num_envs):
        start(env_index)
    while runner.live.any():
        steps, _ = runner.step(actor)
        for step in steps:
            order, record = current[step.env_index]
            record["outputs"].append(_plain(step.output))
            _record_step(record, step.info, step.reward)
            film(order, step.env_index)
            if order == 0:
                name = "+".join(ACTION_NAMES[a] for a in step.info.get("actions") or ()) or "invalid"
                frames.append(np.array(step.next_observation["frames"][-1]))
                frame_titles.append(f"step {len(record['outputs'])}: {name}")
            if step.done:
                _finish(record, step.info, step.truncated)
                records[order] = record
                if on_episode is not None:
                    on_episode(record)
                start(step.env_index)
    done = [record for record in records if record is not None]
    metrics = aggregate_metrics([record["metrics"] for record in done])
    metrics["decision"] = aggregate_decisions([d for record in done for d in record["decisions"]])
    return EvaluationResult(metrics, done, frames=frames, frame_titles=frame_titles, videos=videos)


def _record_step(record: dict[str, Any], info: Mapping[str, Any], reward: float) -> None:
    record["actions"].extend(int(a) for a in (info.get("actions") or ()))
    record["path"].append(_plain(info["agent_position"]))
    record["reward"] += reward
    for term, value in (info.get("reward_terms") or {}).items():
        if value is not None:
            record["reward_terms"][term] = record["reward_terms"].get(term, 0.0) + float(value)
    record["invalid_actions"] += int(bool(info.get("invalid_action", False)))
    record["collisions"] += int(bool(info.get("collision", False)))
    expert, distance = record["_before"]
    after = float(info["distance_to_goal"])
    applied = info.get("actions") or ()
    invalid = bool(info.get("invalid_action", False))
    record["decisions"].append(decision_record(expert, applied, invalid, distance, after))
    record["_before"] = (info.get("expert_actions"), after)


def _finish(record: dict[str, Any], info: Mapping[str, Any], truncated: bool) -> None:
    if "metrics" not in info:
        raise EvaluationError(
            f"episode {record['id']}: the env returned no info['metrics'] at the episode end"
        )
    record.pop("_before")
    metrics = _plain(info["metrics"])
    steps = max(1, len(record["outputs"]))
    metrics["invalid_action_rate"] = record["invalid_actions"] / steps
    metrics["reward"] = record["reward"]
    record["metrics"] = metrics
    record["truncated"] = truncated


MAP_PANELS = 6
MAP_PIXELS_PER_METRE = 32
MAP_MARGIN = 1.5  # metres of floor plan shown around the route


def plotted_indices(count: int, seed: int, panels: int = MAP_PANELS) -> list[int]:
    """Which episodes (run order) the report draws: all of them up to ``panels``, else ``panels`` of them
    drawn at random with ``seed`` (the same every run), in run order."""
    if count <= panels:
        return list(range(count))
    return sorted(int(i) for i in np.random.default_rng([seed, 7]).choice(count, panels, replace=False))


def world_maps(
    records: Sequence[Mapping[str, Any]], episodes: Sequence[Any]
) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Built-in-world top-down maps (walls, rooms, landmarks) with each record's path (blue), reference
    (green) and goal (red, with its success circle), cropped to a square around the route plus
    ``MAP_MARGIN`` metres (at ``MAP_PIXELS_PER_METRE``), so short routes stay visible. Each map comes with
    its extent in metres, ``(x left, x right, z bottom, z top)`` as ``imshow`` takes it."""
    from vln_gym.world import world_for_episode

    maps = []
    for record, episode in zip(records, episodes, strict=False):
        world = world_for_episode(episode)
        nz, nx = world.layout.solid.shape
        cell = float(world.config.cell_size)
        height, width = round(nz * cell * MAP_PIXELS_PER_METRE), round(nx * cell * MAP_PIXELS_PER_METRE)
        path = [tuple(p) for p in record["path"]]
        reference = [tuple(p) for p in record["reference_path"] or ()]
        goal = tuple(record["goal_position"])
        radius = record["success_distance"]
        image = world.top_down(path, reference, goal, radius, size=(height, width))
        # pixel = metres * scale + offset (the map is fitted to the image, centred: vln_gym.world.topdown)
        scale = min(height / (nz * cell), width / (nx * cell))
        off_x, off_z = (width - nx * cell * scale) / 2, (height - nz * cell * scale) / 2
        points = np.array([[p[0], p[-1]] for p in [*path, *reference, goal]], dtype=float)
        low = points.min(axis=0) - (MAP_MARGIN + radius)
        high = points.max(axis=0) + (MAP_MARGIN + radius)
        centre = (low + high) / 2 * scale + np.array([off_x, off_z])
        half = int(np.ceil((high - low).max() / 2 * scale))
        cx, cz = round(float(centre[0])), round(float(centre[1]))
        extent = ((cx - half - off_x) / scale, (cx + half - off_x) / scale)
        extent += ((cz + half - off_z) / scale, (cz - half - off_z) / scale)
        maps.append((_square_crop(image, cx, cz, half), extent))
    return maps


def _square_crop(image: np.ndarray, cx: int, cz: int, half: int) -> np.ndarray:
    """The ``2 half`` pixel square of ``image`` centred at column ``cx``, row ``cz`` (white outside)."""
    out = np.full((2 * half, 2 * half, 3), 255, dtype=np.uint8)
    r0, c0 = cz - half, cx - half
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + 2 * half, image.shape[0]), min(c0 + 2 * half, image.shape[1])
    if rs < re and cs < ce:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = image[rs:re, cs:ce]
    return out


def _verdict(record: Mapping[str, Any]) -> str:
    metrics = record["metrics"]
    verdict = "success" if metrics["success"] else "fail"
    return f"{record['id']}\n{verdict}, NE {metrics['navigation_error']:.2f} m"


def write_outputs(result: EvaluationResult, out_dir: str | Path, *, plots: bool = True) -> Path:
    """metrics.json, episodes.jsonl, PNGs and report.md into ``out_dir``, as one set: built in a hidden
    folder inside it, then moved in; the earlier results there (`OUTPUT_NAMES`) are moved out and deleted,
    so none of them stays beside the new ones."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
    try:
        _write_files(result, staging, plots=plots)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after the swap: the earlier results
    return out


def _swap_in(staging: Path, out: Path) -> None:
    """Move evaluate's entries of ``out`` into ``staging/.earlier`` and those of ``staging`` into ``out``,
    with Ctrl-C held off until all are moved."""
    earlier = staging / ".earlier"
    earlier.mkdir()
    new = sorted(entry.name for entry in staging.iterdir() if entry.name in OUTPUT_NAMES)
    with _sigint_held(f"the results are complete in {out}"):
        for name in sorted(_owned_entries(out) - {staging.name}):
            if os.path.lexists(out / name):
                os.replace(out / name, earlier / name)
        for name in new:
            os.replace(staging / name, out / name)


def _write_files(result: EvaluationResult, out: Path, *, plots: bool) -> None:
    """Every output file of ``result`` into the folder ``out``."""
    atomic_write_text(out / "metrics.json", json.dumps(result.metrics, indent=2) + "\n")
    with atomic_writer(out / "episodes.jsonl") as handle:
        for record in result.episodes:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    sections = [
        ("Metrics", report.metrics_table({result.metrics["agent"]: result.metrics})),
        ("Spread (per-episode std and 95% CI)", report.confidence_table(result.metrics)),
        ("Decisions", report.decision_table(result.metrics["decision"])),
    ]
    if plots:
        drawn = [result.episodes[i] for i in result.plotted]
        report.plot_trajectories(drawn, out / "trajectories.png", max_panels=len(drawn))
        errors = [record["metrics"]["navigation_error"] for record in result.episodes]
        report.plot_histogram(
            errors,
            out / "navigation_error.png",
            xlabel="navigation error (m)",
            title="final distance to goal",
        )
        which = (
            f"all {len(drawn)} episodes"
            if len(drawn) == len(result.episodes)
            else f"{len(drawn)} of the {len(result.episodes)} episodes, drawn at random with seed "
            f"{result.metrics['seed']} (run order {', '.join(str(i) for i in result.plotted)})"
        )
        pictures = f"Pictured: {which}.\n\n![trajectories](trajectories.png)\n\n"
        if result.maps:
            report.plot_maps(result.maps, out / "maps.png", titles=[_verdict(record) for record in drawn])
            pictures += (
                "The same episodes on the built-in world's map (agent blue, from the grey dot to the dark "
                "one; reference green; goal red with its success circle):\n\n![maps](maps.png)\n\n"
            )
        if result.frames:
            report.plot_frame_grid(result.frames, out / "frames.png", titles=result.frame_titles)
            first_id = result.episodes[0]["id"]
            pictures += f"First-person frames along episode `{first_id}`:\n\n![frames](frames.png)\n\n"
        pictures += "![navigation error](navigation_error.png)"
        sections.append(
            ("Pictures", "Agent path (blue), reference path (green dashed), goal (red star).\n\n" + pictures)
        )
    if result.videos:
        links = [f"[{p.name}](videos/{p.name})" for p in write_videos(result.videos, out / "videos")]
        text = f"The first {len(links)} episode(s), one frame per step (map and first-person view): "
        sections.append(("Videos", text + ", ".join(links)))
    m = result.metrics
    title = f"Evaluation: {m['agent']} ({m['episodes']} episodes, seed {m['seed']})"
    report.write_markdown(out / "report.md", [_env_section(m), *sections], title=title)


def _env_section(metrics: Mapping[str, Any]) -> tuple[str, str]:
    """The report's line on the env the episodes ran in (when metrics.json records it)."""
    if "env_kwargs" not in metrics:
        return "Env", "not recorded"
    kwargs = json.dumps(metrics["env_kwargs"], sort_keys=True)
    return "Env", f'`gym.make("VLN-v0", **env_kwargs)` with env_kwargs `{kwargs}`: {metrics["env_source"]}.'


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors on one stderr line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (else argparse's one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="vln-gym evaluate",
        description="Run an agent on VLN-v0 episodes; write metrics, episodes and a report.",
    )
    parser.add_argument("--agent", required=True, help=f"one of: {', '.join(AGENT_NAMES)}")
    parser.add_argument("--checkpoint", help="VLMPolicy checkpoint dir (policy) or SB3 .zip (sb3)")
    parser.add_argument(
        "--env-kwargs",
        help="JSON object of gym.make('VLN-v0', ...) keyword arguments (default: the held-out built-in "
        "world; for a policy checkpoint, its training env on that world)",
    )
    parser.add_argument(
        "--data", nargs="+", help="dataset file(s)/folder(s); default: held-out built-in-world episodes"
    )
    data = parser.add_argument_group("data (as for vln-gym validate)")
    data.add_argument("--format", choices=FORMATS, help="input format (default: per-file auto)")
    data.add_argument("--media-dir", help="folder that relative image paths resolve against")
    data.add_argument("--path-remap", action="append", metavar="OLD=NEW", help="replace an image path prefix")
    data.add_argument("--dataset-info", metavar="FILE", help="a LLaMA-Factory dataset_info.json")
    data.add_argument("--dataset", metavar="NAME", help="the entry of --dataset-info to evaluate on")
    data.add_argument("--pose-source", action="append", metavar="FILE", help="Habitat VLN-CE episode file(s)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument(
        "--episodes", type=_at_least(1), default=20, help="evaluate the first N episodes (default 20)"
    )
    count.add_argument("--all", action="store_true", help="evaluate every episode")
    parser.add_argument("--num-envs", type=_at_least(1), default=1, help="parallel envs (gym.make_vec)")
    parser.add_argument("--vectorization", choices=("sync", "async"), default="sync")
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument(
        "--forward-steps", type=_at_least(0), default=10, help="forward agent: steps before STOP"
    )
    parser.add_argument("--out", help="output dir (default runs/eval/AGENT)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    parser.add_argument(
        "--trust-checkpoint", action="store_true", help="allow an SB3 .zip (loading it unpickles: runs code)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip PNGs")
    parser.add_argument(
        "--ablate",
        choices=ABLATIONS,
        help="remove one input: black frames or an empty instruction (a unimodal baseline)",
    )
    parser.add_argument(
        "--video",
        type=_at_least(0),
        default=0,
        metavar="N",
        help="videos of the first N episodes (needs vln-gym[video])",
    )
    parser.add_argument(
        "--threads", type=_at_least(1), default=1, help="torch CPU threads for model agents (default 1)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser


def _progress_bar(args: argparse.Namespace):
    """A tqdm bar over episodes on stderr, or ``None`` (``--no-progress``, or stderr not a terminal)."""
    show = sys.stderr.isatty() if args.progress is None else args.progress
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=None if args.all else args.episodes, unit="episode", desc="evaluate", file=sys.stderr)


def data_env_kwargs(args: argparse.Namespace, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` with the data flags added (flags win over the same keys in --env-kwargs)."""
    kwargs = dict(env_kwargs)
    for key in ("format", "media_dir"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.path_remap:
        pairs = [item.partition("=") for item in args.path_remap]
        bad = [old for old, sep, new in pairs if not (old and sep and new)]
        if bad:
            raise EvaluationError(f"--path-remap expects OLD=NEW, got {bad[0]!r}")
        kwargs["path_remap"] = {old: new for old, _, new in pairs}
    options = dict(kwargs.get("data_options") or {})
    if (args.dataset_info is None) != (args.dataset is None):
        raise EvaluationError("--dataset-info and --dataset go together")
    if args.dataset_info is not None:
        options.update(dataset_info=args.dataset_info, dataset=args.dataset)
    if args.pose_source:
        options["pose_source"] = args.pose_source
    if options:
        kwargs["data_options"] = options
    return kwargs


def _cli_env_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """--env-kwargs with the data flags added; ``None`` when neither gives any (the default env)."""
    given = None
    if args.env_kwargs is not None:
        try:
            given = json.loads(args.env_kwargs)
        except json.JSONDecodeError as error:
            raise EvaluationError(f"--env-kwargs is not JSON ({error.msg} at char {error.pos})") from error
        if not isinstance(given, dict):
            raise EvaluationError("--env-kwargs must be a JSON object")
    env_kwargs = data_env_kwargs(args, given or {})
    return env_kwargs if given is not None or env_kwargs else None


def main(argv: Sequence[str] | None = None) -> int:
    """``vln-gym evaluate``: exit 0 on success, 2 with one stderr line on bad input, 130 on Ctrl-C."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, code 2) and --help (code 0)
        return int(stop.code or 0)
    prog = "vln-gym evaluate"
    progress = None
    out = Path(args.out or f"runs/eval/{args.agent}")
    try:
        env_kwargs = _cli_env_kwargs(args)
        if args.agent in ("policy", "sb3"):
            import torch

            torch.set_num_threads(max(1, args.threads))
        progress = _progress_bar(args)
        result = evaluate(
            args.agent,
            checkpoint=args.checkpoint,
            env_kwargs=env_kwargs,
            data=args.data,
            num_episodes=None if args.all else args.episodes,
            num_envs=args.num_envs,
            seed=args.seed,
            out_dir=out,
            vectorization_mode=args.vectorization,
            forward_steps=args.forward_steps,
            plots=not args.no_plots,
            overwrite=args.overwrite,
            trust_checkpoint=args.trust_checkpoint,
            video=args.video,
            ablate=args.ablate,
            on_episode=(lambda _record: progress.update()) if progress is not None else None,
        )
    except (AgentError, EvaluationError, ImageLoadError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        detail = str(stop) if isinstance(stop, EvaluationInterrupted) else f"nothing written to {out}"
        print(f"{prog}: interrupted; {detail}", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    print(report.metrics_table({result.metrics["agent"]: result.metrics}, markdown=False))
    print(f"distance: {result.metrics['distance_kind']}; report: {out / 'report.md'}")
    return 0
