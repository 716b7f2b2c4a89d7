"""What a policy checkpoint says about the env it was trained on, read from its JSON files (no model load).

- ``policy/policy_config.json``'s ``action_grammar``: the step and turn units its answers are written in
  (``None`` for bare-word answers, which carry no units);
- the trainer's ``trainer_state.json`` next to the policy (``checkpoint-N/``, or the run dir's ``latest``
  checkpoint for ``sft_policy/``): ``config.env_kwargs``, the training env.

`held_out_env` turns the training env into the held-out evaluation env: the same level, action space, image
size, units and budget, on the held-out world seed and episodes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.eval.agent import AgentError
from agents.eval.scripted import _check_policy_checkpoint

# Keys of a training env that name episodes other than the built-in world's (data, a server).
DATA_SOURCE_KEYS = (
    "data_files",
    "episodes",
    "format",
    "field_map",
    "media_dir",
    "path_remap",
    "data_options",
    "views",
    "server",
)
# Keys of a training env that name its episodes, not its settings.
EPISODE_SOURCE_KEYS = (*DATA_SOURCE_KEYS, "world_seed", "world_episodes")


@dataclass(frozen=True)
class TrainedPolicy:
    """A policy checkpoint's grammar units and training env (``None`` where the checkpoint lacks them)."""

    policy_dir: Path
    units: tuple[float, float] | None  # (forward_step metres, turn_angle degrees) of the action grammar
    env_kwargs: dict[str, Any] | None
    env_source: Path | None  # the trainer_state.json that env_kwargs came from


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AgentError(f"{path}: unreadable JSON ({error})") from None


def _grammar_units(policy_dir: Path) -> tuple[float, float] | None:
    path = policy_dir / "policy_config.json"
    if not path.is_file():
        return None
    config = _read_json(path)
    grammar = config.get("action_grammar") if isinstance(config, dict) else None
    if grammar is None:
        return None
    try:
        return float(grammar["forward_step"]), float(grammar["turn_angle"])
    except (TypeError, KeyError, ValueError):
        raise AgentError(f"{path}: action_grammar: needs numbers forward_step and turn_angle") from None


def _trainer_state(policy_dir: Path) -> Path | None:
    """``trainer_state.json`` of the checkpoint holding ``policy_dir``, else of its run dir's latest."""
    beside = policy_dir.parent / "trainer_state.json"
    if beside.is_file():
        return beside
    latest = policy_dir.parent / "latest"
    if latest.is_file():
        candidate = policy_dir.parent / latest.read_text(encoding="utf-8").strip() / "trainer_state.json"
        if candidate.is_file():
            return candidate
    return None


def read_trained_policy(checkpoint: str | Path) -> TrainedPolicy:
    """The grammar units and training env of the policy checkpoint ``checkpoint`` (`AgentError` when it is
    missing, not a policy, or its JSON is unreadable)."""
    policy_dir = _check_policy_checkpoint(checkpoint)
    units = _grammar_units(policy_dir)
    state_path = _trainer_state(policy_dir)
    if state_path is None:
        return TrainedPolicy(policy_dir, units, None, None)
    state = _read_json(state_path)
    env_kwargs = state.get("config", {}).get("env_kwargs") if isinstance(state, dict) else None
    if not isinstance(env_kwargs, dict):
        raise AgentError(f"{state_path}: config.env_kwargs: missing or not a JSON object")
    return TrainedPolicy(policy_dir, units, dict(env_kwargs), state_path)


def held_out_env(training: Mapping[str, Any], held_out: Mapping[str, Any]) -> dict[str, Any]:
    """The training env's settings (``training`` less `EPISODE_SOURCE_KEYS`) on the ``held_out`` world."""
    settings = {key: value for key, value in training.items() if key not in EPISODE_SOURCE_KEYS}
    return {**settings, **held_out}


def check_units(policy: TrainedPolicy, forward_step: float, turn_angle: float) -> None:
    """`AgentError` when the env's units differ from those of the policy's action grammar."""
    if policy.units is None:
        return
    step, turn = policy.units
    if math.isclose(step, forward_step, rel_tol=1e-9) and math.isclose(turn, turn_angle, rel_tol=1e-9):
        return
    hint = " (or no --env-kwargs: the training env)" if policy.env_kwargs is not None else ""
    raise AgentError(
        f"{policy.policy_dir / 'policy_config.json'}: the policy's action grammar answers in steps of "
        f"{step:g} m and turns of {turn:g} degrees, the env's forward_step is {forward_step:g} and "
        f"turn_angle {turn_angle:g}: its answers would mean other distances; give --env-kwargs "
        f'{{"forward_step": {step:g}, "turn_angle": {turn:g}}}{hint}'
    )
