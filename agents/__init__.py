"""Policies and training: ``VLMPolicy`` (Qwen2-VL + value head), the tiny offline Qwen2-VL, scripted agents,
rollouts, PPO/GRPO. ``import agents`` stays cheap: torch / transformers load on first attribute access."""

from __future__ import annotations

import importlib

_LAZY = {
    "VLMPolicy": "agents.policy.model",
    "PromptInputs": "agents.policy.model",
    "Generation": "agents.policy.model",
    "EvalOutput": "agents.policy.model",
    "PolicyConfig": "agents.policy.model",
    "build_tiny_qwen2_vl": "agents.policy.tiny",
    "ensure_tiny_model": "agents.policy.tiny",
    "default_tiny_path": "agents.policy.tiny",
    "ppo_train": "agents.ppo_train",
    "PPOConfig": "agents.ppo_train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
