"""Policies, training and evaluation, by role: ``agents.policy`` (Qwen2-VL + value head, prompts, constrained
decoding, the tiny offline models), ``agents.train`` (config, env pool and episode runner, PPO/GRPO
collection and update, SFT, checkpoints), ``agents.eval`` (scripted agents, evaluate, reports, SB3), the
``vln-gym`` dispatcher (``agents.cli``) and the loop (``agents.ppo_train``). ``import agents`` stays cheap:
torch / transformers load on first attribute access."""

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
    "EpisodeRunner": "agents.train.runner",
    "make_env_pool": "agents.train.envpool",
    "evaluate": "agents.eval.evaluate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
