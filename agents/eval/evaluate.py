"""`vln-gym evaluate`: run an agent on episodes of ``VLN-v0`` (vectorised), write metrics, episodes, report.

Outputs in ``--out DIR`` (byte-identical for the same arguments and seed; no timestamps inside):

- ``metrics.json``: means of ``success_rate, spl, oracle_success_rate, navigation_error, trajectory_length,
  ndtw, sdtw, steps, invalid_action_rate, reward`` (the episode's summed env reward) over episodes,
  ``episodes`` (count), ``distance_kind``,
  plus ``std`` (sample std, ddof 1) and ``ci95`` (normal approximation: mean +- 1.96 std / sqrt(n)).
- ``episodes.jsonl``: one line per episode: index, id, instruction, actions applied, agent outputs, path,
  reference path, goal, metrics, reward and the sum of each reward term.
- ``report.md`` + PNGs: top-down trajectory plots, first-person frames along the first episode, histogram
  of navigation error.

Episode order is fixed: episode ``k`` of the run is env episode index ``episode_indices[k]`` whatever the
number of envs, and both the env and the agent are reseeded per episode from ``(seed, index)``, so results
do not depend on ``--num-envs``.

Held-out built-in-world episodes: with no ``--data``, evaluation uses ``HELDOUT_WORLD_KWARGS`` (a world
seed the trainer never trains on; see that constant).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.eval import report
from agents.eval.scripted import AGENT_NAMES, Agent, AgentError, make_agent
from vln_gym.geometry import ACTION_NAMES, STOP
from vln_gym.images import ImageLoadError

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
_DATA_LOAD_OPTIONS = ("format", "field_map", "media_dir", "path_remap", "heading_unit", "allow_outside_media")


class EvaluationError(ValueError):
    """Bad evaluation input (arguments, env kwargs, data) reported as one line."""


@dataclass
class EvaluationResult:
    """What ``evaluate`` returns: aggregated metrics, one record per episode, frames of the first one."""

    metrics: dict[str, Any]
    episodes: list[dict[str, Any]]
    frames: list[np.ndarray] = field(default_factory=list)
    frame_titles: list[str] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    out_dir: Path | None = None


def aggregate_metrics(per_episode: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean of each metric (``MEAN_KEYS``) over episodes, with ``std`` (ddof 1; 0 for one episode) and
    ``ci95`` = mean +- 1.96 * std / sqrt(n); ``distance_kind`` is the common kind or ``"mixed"``."""
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
        ci95[key] = [mean - half, mean + half]
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


def unbatch_info(infos: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Sub-env ``index``'s info dict out of a vector env's batched info (honours the ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not bool(mask[index]):
            continue
        out[key] = unbatch_info(value, index) if isinstance(value, Mapping) else value[index]
    return out


def unbatch_obs(obs: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Sub-env ``index``'s observation dict out of a batched observation."""
    return {key: value[index] for key, value in obs.items()}


def _is_world_mode(env_kwargs: Mapping[str, Any]) -> bool:
    if "views" in env_kwargs:
        return env_kwargs["views"] == "world"
    return "episodes" not in env_kwargs and "data_files" not in env_kwargs


def _load_data(data: Sequence[str], env_kwargs: dict[str, Any]) -> list[Any]:
    """Load and validate dataset episodes (load options are taken out of ``env_kwargs``)."""
    from vln_gym.data import DataError, load_episodes

    options = {key: env_kwargs.pop(key) for key in _DATA_LOAD_OPTIONS if key in env_kwargs}
    options.update(env_kwargs.pop("data_options", None) or {})
    for key in ("forward_step", "turn_angle"):
        if key in env_kwargs:
            options[key] = env_kwargs[key]
    missing = [path for path in data if not Path(path).exists()]
    if missing:
        raise EvaluationError(f"{missing[0]}: data path not found")
    try:
        episodes = load_episodes(list(data), **options)
    except DataError as error:
        first = str(error).splitlines()[0] if str(error) else "data failed validation"
        raise EvaluationError(f"data failed validation: {first}") from error
    except TypeError as error:
        raise EvaluationError(f"bad data load option in --env-kwargs: {error}") from error
    if not episodes:
        raise EvaluationError(f"{', '.join(data)}: no episodes")
    return episodes


def _world_episodes(env_kwargs: dict[str, Any], wanted: int | None) -> list[Any]:
    """Built-in-world episodes, generated once here (not once per sub-env): the held-out set
    (``HELDOUT_WORLD_KWARGS``) unless ``world_seed`` / ``world_episodes`` are given. Generation is
    prefix-stable, so only the first ``wanted`` episodes are built. ``world_config`` (a ``WorldConfig`` or its
    fields) is honoured as the env honours it."""
    from vln_gym.world import WorldConfig, generate_episodes

    seed = int(env_kwargs.pop("world_seed", HELDOUT_WORLD_KWARGS["world_seed"]))
    total = int(env_kwargs.pop("world_episodes", HELDOUT_WORLD_KWARGS["world_episodes"]))
    try:
        config = WorldConfig.coerce(env_kwargs.pop("world_config", None))
    except ValueError as error:
        raise EvaluationError(f"env kwargs: {error}") from error
    count = total if wanted is None else min(int(wanted), total)
    return generate_episodes(
        seed=seed,
        num_episodes=max(count, 1),
        config=config,
        forward_step=float(env_kwargs.get("forward_step", 0.25)),
        turn_angle=float(env_kwargs.get("turn_angle", 15.0)),
    )


def _agent_factory(
    agent: str | Agent | Callable[[], Agent],
    *,
    checkpoint: str | Path | None,
    world_mode: bool,
    **agent_kwargs: Any,
) -> Callable[[int], Agent]:
    """``env index -> agent``: checkpoint agents are loaded once and shared (they are stateless across
    steps); scripted agents get one instance per env (they count steps)."""
    if isinstance(agent, str):
        if agent not in AGENT_NAMES:
            raise AgentError(f"unknown agent {agent!r}; known agents: {', '.join(AGENT_NAMES)}")
        if agent in ("policy", "sb3"):
            shared = make_agent(agent, checkpoint=checkpoint)
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
) -> EvaluationResult:
    """Run ``agent`` (a name from ``AGENT_NAMES``, an agent, or a zero-argument factory) on episodes.

    Episodes: ``episode_indices`` when given, else the first ``num_episodes`` (``None`` = all) of the
    episode list. With neither ``data`` nor ``episodes`` / ``data_files`` in ``env_kwargs``, the built-in
    world's held-out episodes (``HELDOUT_WORLD_KWARGS``; ``world_seed`` / ``world_episodes`` in
    ``env_kwargs`` override them). ``data`` loads through ``vln_gym.data.load_episodes``
    with load options (``format``, ``field_map``, ``media_dir``, ``path_remap``, ``heading_unit``) taken
    from ``env_kwargs``. Writes the output files when ``out_dir`` is given.
    """
    kwargs = dict(env_kwargs or {})
    if data is not None or "data_files" in kwargs:
        paths = kwargs.pop("data_files", None) if data is None else data
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        kwargs["episodes"] = _load_data([str(p) for p in paths], kwargs)
    elif "episodes" not in kwargs:
        needed = None if episode_indices is None else max(episode_indices, default=-1) + 1
        kwargs["episodes"] = _world_episodes(kwargs, num_episodes if needed is None else needed)
        kwargs.setdefault("views", "world")
    world_mode = _is_world_mode(kwargs)
    factory = _agent_factory(
        agent,
        checkpoint=checkpoint,
        world_mode=world_mode,
        seed=seed,
        forward_steps=forward_steps,
        forward_step=float(kwargs.get("forward_step", 0.25)),
        turn_angle=float(kwargs.get("turn_angle", 15.0)),
    )
    first_agent = factory(0)
    kwargs.setdefault("action_space", first_agent.action_space)
    if kwargs["action_space"] == "discrete" and first_agent.action_space == "text":
        raise EvaluationError(f"agent {first_agent.name!r} answers in text; it needs action_space='text'")
    text_env = kwargs["action_space"] == "text"
    if num_envs < 1:
        raise EvaluationError(f"--num-envs must be >= 1, got {num_envs}")

    available = len(kwargs["episodes"])
    if episode_indices is None:
        count = available if num_episodes is None else min(int(num_episodes), available)
        episode_indices = list(range(count))
    indices = [int(i) for i in episode_indices]
    bad = [i for i in indices if not 0 <= i < available]
    if bad:
        raise EvaluationError(f"episode index {bad[0]} out of range (the env has {available} episodes)")
    if not indices:
        raise EvaluationError("no episodes selected (--episodes must be >= 1)")
    try:
        vec = gym.make_vec(
            "VLN-v0",
            num_envs=min(num_envs, len(indices)),
            vectorization_mode=vectorization_mode,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED},
            **kwargs,
        )
    except (TypeError, ValueError, RuntimeError) as error:
        # gymnasium re-raises the env's own error with every kwarg (all episodes) appended: show the original
        cause = error.__cause__ if isinstance(error.__cause__, type(error)) else error
        raise EvaluationError(f"cannot make VLN-v0 with these env kwargs: {cause}") from error
    env_episodes = kwargs["episodes"]
    default_radius = float(vec.get_attr("success_distance")[0])
    radii = [
        default_radius if e.success_distance is None else float(e.success_distance) for e in env_episodes
    ]
    try:
        result = _run(
            vec, factory, first_agent, indices, [radii[i] for i in indices], seed, text_env, on_episode
        )
    finally:
        vec.close()
    result.metrics = {"agent": label or first_agent.name, "seed": seed, **result.metrics}
    if plots and world_mode:
        result.maps = world_maps(
            result.episodes[:MAP_PANELS], [env_episodes[r["index"]] for r in result.episodes]
        )
    if out_dir is not None:
        result.out_dir = write_outputs(result, out_dir, plots=plots)
    return result


def _env_action(action: int | str, text_env: bool) -> int | str:
    if text_env and not isinstance(action, str):
        from vln_gym.actions import format_action

        return format_action(int(action), "word")
    return action if isinstance(action, str) else int(action)


def _run(
    vec: gym.vector.VectorEnv,
    factory: Callable[[int], Agent],
    first_agent: Agent,
    indices: list[int],
    radii: list[float],
    seed: int,
    text_env: bool,
    on_episode: Callable[[dict[str, Any]], None] | None,
) -> EvaluationResult:
    """The rollout loop: each sub-env runs one scheduled episode at a time; finished envs are reset
    individually (``reset_mask``) to the next index, or parked on a dummy episode once the queue is empty."""
    k = vec.num_envs
    agents = [first_agent] + [factory(i) for i in range(1, k)]
    # One shared model agent (policy) answers all live envs in one batched generation.
    act_batch = getattr(first_agent, "act_batch", None)
    batched = act_batch is not None and all(agent is first_agent for agent in agents)
    queue = list(enumerate(indices))  # (run order, env episode index)
    records: list[dict[str, Any] | None] = [None] * len(indices)
    frames: list[np.ndarray] = []
    frame_titles: list[str] = []
    current: list[dict[str, Any] | None] = [None] * k
    obs_list: list[dict[str, Any]] = [{}] * k
    info_list: list[dict[str, Any]] = [{}] * k
    stop_action = _env_action(STOP, text_env)

    def start(env_index: int, first: bool) -> None:
        order, index = queue.pop(0) if queue else (-1, indices[-1])
        seeds: list[int | None] = [None] * k
        ep_seed = episode_seed(seed, index)
        seeds[env_index] = ep_seed
        options: dict[str, Any] = {"episode_index": index}
        if not first:
            mask = np.zeros(k, dtype=np.bool_)
            mask[env_index] = True
            options["reset_mask"] = mask
        obs, infos = vec.reset(seed=seeds if not first else [ep_seed] * k, options=options)
        for j in range(k) if first else [env_index]:
            obs_list[j] = unbatch_obs(obs, j)
            info_list[j] = unbatch_info(infos, j)
        if order < 0:
            current[env_index] = None
            return
        agents[env_index].reset(seed=ep_seed)
        info = info_list[env_index]
        current[env_index] = {
            "order": order,
            "index": index,
            "id": str(info.get("episode_id")),
            "instruction": str(obs_list[env_index]["instruction"]),
            "seed": ep_seed,
            "actions": [],
            "outputs": [],
            "path": [_plain(info["agent_position"])],
            "reference_path": _plain(info.get("reference_path")),
            "goal_position": _plain(info["goal_position"]),
            "success_distance": radii[order],
            "reward": 0.0,
            "reward_terms": {},
            "invalid_actions": 0,
            "collisions": 0,
        }
        if order == 0:
            frames.append(np.array(obs_list[env_index]["frames"][-1]))
            frame_titles.append("start")

    # The first reset must cover every sub-env; then each env gets its own episode.
    start(0, first=True)
    for env_index in range(1, k):
        start(env_index, first=False)

    while any(record is not None for record in current):
        live = [j for j in range(k) if current[j] is not None]
        if batched:
            outputs = act_batch([obs_list[j] for j in live], [info_list[j] for j in live])
        else:
            outputs = [agents[j].act(obs_list[j], info_list[j]) for j in live]
        actions: list[int | str] = [stop_action] * k
        for j, output in zip(live, outputs, strict=True):
            current[j]["outputs"].append(_plain(output))  # type: ignore[index]
            actions[j] = _env_action(output, text_env)
        batch = tuple(actions) if text_env else np.asarray(actions, dtype=np.int64)
        obs, rewards, terminated, truncated, infos = vec.step(batch)
        for j in range(k):
            obs_list[j] = unbatch_obs(obs, j)
            info_list[j] = unbatch_info(infos, j)
            record = current[j]
            if record is not None:
                _record_step(record, info_list[j], float(rewards[j]))
                if record["order"] == 0:
                    applied = info_list[j].get("actions") or ()
                    name = "+".join(ACTION_NAMES[a] for a in applied) or "invalid"
                    frames.append(np.array(obs_list[j]["frames"][-1]))
                    frame_titles.append(f"step {len(record['outputs'])}: {name}")
            if terminated[j] or truncated[j]:
                if record is not None:
                    records[record["order"]] = record
                    _finish(record, info_list[j], bool(truncated[j]))
                    if on_episode is not None:
                        on_episode(record)
                start(j, first=False)
    done = [record for record in records if record is not None]
    metrics = aggregate_metrics([record["metrics"] for record in done])
    return EvaluationResult(metrics=metrics, episodes=done, frames=frames, frame_titles=frame_titles)


def _record_step(record: dict[str, Any], info: Mapping[str, Any], reward: float) -> None:
    record["actions"].extend(int(a) for a in (info.get("actions") or ()))
    record["path"].append(_plain(info["agent_position"]))
    record["reward"] += reward
    for term, value in (info.get("reward_terms") or {}).items():
        if value is not None:
            record["reward_terms"][term] = record["reward_terms"].get(term, 0.0) + float(value)
    record["invalid_actions"] += int(bool(info.get("invalid_action", False)))
    record["collisions"] += int(bool(info.get("collision", False)))


def _finish(record: dict[str, Any], info: Mapping[str, Any], truncated: bool) -> None:
    if "metrics" not in info:
        raise EvaluationError(
            f"episode {record['id']}: the env returned no info['metrics'] at the episode end"
        )
    metrics = _plain(info["metrics"])
    steps = max(1, len(record["outputs"]))
    metrics["invalid_action_rate"] = record["invalid_actions"] / steps
    metrics["reward"] = record["reward"]
    record["metrics"] = metrics
    record["truncated"] = truncated
    record.pop("order")


MAP_PANELS = 6
MAP_PIXELS_PER_METRE = 32
MAP_MARGIN = 1.5  # metres of floor plan shown around the route


def world_maps(records: Sequence[Mapping[str, Any]], episodes: Sequence[Any]) -> list[np.ndarray]:
    """Built-in-world top-down maps (walls, rooms, landmarks) with each record's path (blue), reference
    (green) and goal (red, with its success circle), cropped to a square around the route plus
    ``MAP_MARGIN`` metres (at ``MAP_PIXELS_PER_METRE``), so short routes stay visible."""
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
        maps.append(_square_crop(image, round(float(centre[0])), round(float(centre[1])), half))
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
    """metrics.json, episodes.jsonl, PNGs and report.md into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n", encoding="utf-8")
    with (out / "episodes.jsonl").open("w", encoding="utf-8") as handle:
        for record in result.episodes:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    sections = [
        ("Metrics", report.metrics_table({result.metrics["agent"]: result.metrics})),
        ("Spread (per-episode std and 95% CI)", report.confidence_table(result.metrics)),
    ]
    if plots:
        report.plot_trajectories(result.episodes, out / "trajectories.png")
        errors = [record["metrics"]["navigation_error"] for record in result.episodes]
        report.plot_histogram(
            errors,
            out / "navigation_error.png",
            xlabel="navigation error (m)",
            title="final distance to goal",
        )
        pictures = "![trajectories](trajectories.png)\n\n"
        if result.maps:
            titles = [_verdict(record) for record in result.episodes[: len(result.maps)]]
            report.plot_frame_grid(result.maps, out / "maps.png", titles=titles)
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
    m = result.metrics
    title = f"Evaluation: {m['agent']} ({m['episodes']} episodes, seed {m['seed']})"
    report.write_markdown(out / "report.md", sections, title=title)
    return out


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors on one stderr line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="vln-gym evaluate",
        description="Run an agent on VLN-v0 episodes; write metrics, episodes and a report.",
    )
    parser.add_argument("--agent", required=True, help=f"one of: {', '.join(AGENT_NAMES)}")
    parser.add_argument("--checkpoint", help="VLMPolicy checkpoint dir (policy) or SB3 .zip (sb3)")
    parser.add_argument(
        "--env-kwargs", default="{}", help="JSON object of gym.make('VLN-v0', ...) keyword arguments"
    )
    parser.add_argument(
        "--data", nargs="+", help="dataset file(s)/folder(s); default: held-out built-in-world episodes"
    )
    parser.add_argument("--episodes", type=int, default=20, help="evaluate the first N episodes (default 20)")
    parser.add_argument("--all", action="store_true", help="evaluate every episode")
    parser.add_argument("--num-envs", type=int, default=1, help="parallel envs (gym.make_vec)")
    parser.add_argument("--vectorization", choices=("sync", "async"), default="sync")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forward-steps", type=int, default=10, help="forward agent: steps before STOP")
    parser.add_argument("--out", help="output dir (default runs/eval/AGENT)")
    parser.add_argument("--no-plots", action="store_true", help="skip PNGs")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for model agents (default 1)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``vln-gym evaluate``: exit 0 on success, 2 with one stderr line on bad input."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, code 2) and --help (code 0)
        return int(stop.code or 0)
    prog = "vln-gym evaluate"
    try:
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as error:
            raise EvaluationError(f"--env-kwargs is not JSON ({error.msg} at char {error.pos})") from error
        if not isinstance(env_kwargs, dict):
            raise EvaluationError("--env-kwargs must be a JSON object")
        out = Path(args.out or f"runs/eval/{args.agent}")
        if args.agent in ("policy", "sb3"):
            import torch

            torch.set_num_threads(max(1, args.threads))
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
        )
    except (AgentError, EvaluationError, ImageLoadError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(report.metrics_table({result.metrics["agent"]: result.metrics}, markdown=False))
    print(f"distance: {result.metrics['distance_kind']}; report: {out / 'report.md'}")
    return 0
