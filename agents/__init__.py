"""Policies and training: ``VLMPolicy`` (Qwen2-VL + value head), the tiny offline Qwen2-VL, scripted agents,
rollouts, PPO/GRPO. ``import agents`` stays cheap: torch / transformers load on first attribute access."""

from __future__ import annotations

import importlib

_LAZY = {
    "VLMPolicy": "agents.policy",
    "PromptInputs": "agents.policy",
    "Generation": "agents.policy",
    "EvalOutput": "agents.policy",
    "PolicyConfig": "agents.policy",
    "build_tiny_qwen2_vl": "agents.tiny",
    "ensure_tiny_model": "agents.tiny",
    "default_tiny_path": "agents.tiny",
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
