"""Scripted agents for rollouts and baselines: random, forward, oracle, expert, plus checkpoint-backed ones.

Every agent has the interface the VLM policy has: ``act(obs, info) -> int | str`` (a Habitat action id
or an action text) and ``reset(seed=None)`` called at the start of each episode. ``action_space`` says
which env action space the agent needs (``"discrete"`` or ``"text"``). Privileged data (pose, goal,
expert actions) is read from ``info``, never from the observation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.eval.agent import Agent, AgentError
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, heading_towards, wrap_angle

AGENT_NAMES = ("random", "forward", "oracle", "expert", "policy", "sb3")


def _require(info: Mapping[str, Any], key: str, agent: str) -> Any:
    if key not in info or info[key] is None:
        raise AgentError(f"{agent} agent needs info[{key!r}], which this env does not provide")
    return info[key]


class RandomAgent:
    """Uniformly random Habitat actions from a seeded generator (STOP included, so episodes end)."""

    name = "random"
    action_space = "discrete"

    def __init__(self, seed: int = 0, actions: tuple[int, ...] = (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT)):
        if not actions:
            raise AgentError("random agent needs at least one action")
        self.actions = tuple(int(a) for a in actions)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int:
        return self.actions[int(self.rng.integers(len(self.actions)))]


class ForwardAgent:
    """MOVE_FORWARD ``steps`` times, then STOP (the "walk straight ahead" baseline)."""

    name = "forward"
    action_space = "discrete"

    def __init__(self, steps: int = 10):
        if steps < 0:
            raise AgentError(f"forward agent: steps must be >= 0, got {steps}")
        self.steps = int(steps)
        self._taken = 0

    def reset(self, seed: int | None = None) -> None:
        self._taken = 0

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int:
        if self._taken >= self.steps:
            return STOP
        self._taken += 1
        return MOVE_FORWARD


def straight_line_action(
    position: tuple[float, ...] | list[float],
    heading: float,
    goal: tuple[float, ...] | list[float],
    *,
    turn_angle: float = 15.0,
    stop_distance: float = 0.125,
) -> int:
    """Greedy action towards ``goal`` in free space: STOP when within ``stop_distance`` (metres, x-z
    plane), else turn towards the goal until it lies within half a turn step, else MOVE_FORWARD."""
    dx, dz = float(goal[0]) - float(position[0]), float(goal[2]) - float(position[2])
    if math.hypot(dx, dz) <= stop_distance:
        return STOP
    error = wrap_angle(heading_towards(position, goal) - heading)
    if abs(error) > math.radians(turn_angle) / 2.0:
        return TURN_LEFT if error > 0 else TURN_RIGHT
    return MOVE_FORWARD


class OracleAgent:
    """Shortest path from privileged data.

    ``mode="expert"`` (built-in world): follow ``info["expert_actions"][0]``, which the env recomputes
    from the current pose every step (geodesic shortest path around walls). ``mode="straight"``
    (dataset mode): straight line + turning from ``agent_position`` / ``agent_heading`` /
    ``goal_position`` (see ``straight_line_action``); ``stop_distance`` defaults to half a forward step,
    the closest a forward step can bring the agent.
    """

    name = "oracle"
    action_space = "discrete"

    def __init__(
        self,
        mode: str = "expert",
        *,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        stop_distance: float | None = None,
    ):
        if mode not in ("expert", "straight"):
            raise AgentError(f"oracle agent: mode must be 'expert' or 'straight', got {mode!r}")
        self.mode = mode
        self.turn_angle = float(turn_angle)
        self.stop_distance = forward_step / 2.0 if stop_distance is None else float(stop_distance)

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int:
        if self.mode == "expert":
            remaining = _require(info, "expert_actions", "oracle")
            return int(remaining[0]) if len(remaining) else STOP
        return straight_line_action(
            _require(info, "agent_position", "oracle"),
            float(_require(info, "agent_heading", "oracle")),
            _require(info, "goal_position", "oracle"),
            turn_angle=self.turn_angle,
            stop_distance=self.stop_distance,
        )


class ExpertAgent:
    """Replays the record's expert actions: ``info["expert_actions"][0]`` (STOP once they run out)."""

    name = "expert"
    action_space = "discrete"

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int:
        remaining = _require(info, "expert_actions", "expert")
        return int(remaining[0]) if len(remaining) else STOP


class PolicyAgent:
    """A saved VLMPolicy checkpoint directory, decoding greedily (``VLMPolicy.act``); answers in text."""

    name = "policy"
    action_space = "text"

    def __init__(self, checkpoint: str | Path, *, seed: int = 0, constrained_actions: bool | None = None):
        path = _check_policy_checkpoint(checkpoint)
        from agents.policy.model import VLMPolicy

        kwargs: dict[str, Any] = {"seed": seed}
        if constrained_actions is not None:
            kwargs["constrained_actions"] = constrained_actions
        try:
            self.policy = VLMPolicy.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError) as error:
            raise AgentError(f"{path}: cannot load as a VLMPolicy checkpoint ({error})") from error
        self.policy.eval()

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        return self.policy.act(obs, info)

    def act_batch(self, observations: list[Mapping[str, Any]], infos: list[Mapping[str, Any]]) -> list[str]:
        """Greedy answers for several envs in one batched generation."""
        return list(self.policy.generate(observations, do_sample=False).texts)


_POLICY_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # agents.policy.model.SUPPORTED_MODEL_TYPES


def _find_policy_dir(path: Path) -> Path | None:
    """The directory holding the policy: itself, its ``policy/`` sub-directory (a trainer checkpoint,
    ``checkpoint-NNNNNN/policy``), or the newest checkpoint's of a training run dir (``latest``)."""
    candidates = [path, path / "policy"]
    latest = path / "latest"
    if latest.is_file():
        candidates.append(path / latest.read_text(encoding="utf-8").strip() / "policy")
    candidates += [c / "policy" for c in sorted(path.glob("checkpoint-*"), reverse=True)]
    for candidate in candidates:
        if (candidate / "policy_config.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    return None


def _check_policy_checkpoint(checkpoint: str | Path) -> Path:
    """Refuse a missing checkpoint or one for another kind of model, before any heavy import."""
    import json

    path = Path(checkpoint)
    if not path.exists():
        raise AgentError(f"{path}: checkpoint not found")
    if not path.is_dir():
        raise AgentError(f"{path}: a policy checkpoint is a directory (VLMPolicy.save_pretrained output)")
    found = _find_policy_dir(path)
    if found is None:
        raise AgentError(f"{path}: not a policy checkpoint (no policy_config.json or config.json inside)")
    config_file = found / "config.json"
    if config_file.is_file():
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, AttributeError) as error:
            raise AgentError(f"{config_file}: unreadable model config ({error})") from error
        if model_type not in _POLICY_MODEL_TYPES:
            raise AgentError(
                f"{config_file}: checkpoint is for model_type {model_type!r}, "
                f"the policy agent needs one of {', '.join(_POLICY_MODEL_TYPES)}"
            )
    return found


def make_agent(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    forward_steps: int = 10,
    oracle_mode: str = "expert",
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    trust_checkpoint: bool = False,
) -> Agent:
    """Build an agent by name (``AGENT_NAMES``). ``policy`` needs a VLMPolicy checkpoint directory,
    ``sb3`` a stable-baselines3 ``.zip`` from ``agents.eval.sb3_baseline``; the others take no checkpoint."""
    if name not in AGENT_NAMES:
        raise AgentError(f"unknown agent {name!r}; known agents: {', '.join(AGENT_NAMES)}")
    if name in ("policy", "sb3"):
        if checkpoint is None:
            raise AgentError(f"agent {name!r} needs --checkpoint")
        if name == "policy":
            return PolicyAgent(checkpoint, seed=seed)
        from agents.eval.sb3_baseline import SB3Agent

        return SB3Agent(checkpoint, trust_checkpoint=trust_checkpoint)
    if checkpoint is not None:
        raise AgentError(f"agent {name!r} takes no checkpoint (got {checkpoint})")
    if name == "random":
        return RandomAgent(seed)
    if name == "forward":
        return ForwardAgent(forward_steps)
    if name == "oracle":
        return OracleAgent(oracle_mode, forward_step=forward_step, turn_angle=turn_angle)
    return ExpertAgent()
