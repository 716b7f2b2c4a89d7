"""Fully sharded training (torch FSDP2 ``fully_shard`` through accelerate's FSDP plugin) for the trainer.

Under FSDP the policy's parameters are shards (DTensors): only the wrapped scorer's forward gathers them.
Everything else that reads weights goes through here:

- `make_accelerator`: accelerate turns FSDP on only for GPU-like devices; this also turns it on for CPU
  processes (gloo), so the CPU test runs the code path users run on GPUs. FSDP1 is refused (its gradient
  clipping cannot clip the policy and the value head separately).
- `ShardedPolicy`: the policy for rollouts: ``generate`` / ``prompt_values`` / ``reference_logprobs`` run
  inside the scorer's forward, each shard group gathered once per call (not once per decoded token).
- `ShardedPolicy.full_state`: the full state dict on the main process (accelerate's ``get_state_dict``), which
  checkpoints write and hash; `FullOptimizerState`: the optimizer state as full, name-keyed tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch


def make_accelerator(gradient_accumulation_steps: int):
    """``Accelerator(gradient_accumulation_steps=...)``, with FSDP also on CPU processes when launched with
    an FSDP config (accelerate would silently fall back to DDP there)."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    accelerator = Accelerator(gradient_accumulation_steps=gradient_accumulation_steps)
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted and accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        # both shared states: AcceleratorState() re-reads the process state's type whenever it is built
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ValueError("vln-gym trains with FSDP2 only: set fsdp_version: 2 in the accelerate config")
    return accelerator


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def broadcast_from_main(module: torch.nn.Module) -> None:
    """Copy the main process's parameters and buffers to every process (what DDP does when it wraps a
    module; FSDP2 shards each process's own values, e.g. a value head initialised with a per-process seed)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)


class ShardedPolicy:
    """A `VLMPolicy` whose weights are FSDP shards, seen through its prepared scorer (the FSDP root).

    Calls that read weights run as ``scorer(call=...)``, so FSDP gathers the root's shards, and every inner
    shard group stays gathered until the call returns. Everything else (``prepare``, ``grammar``, ...) is
    the policy's own."""

    def __init__(self, policy: torch.nn.Module, scorer: torch.nn.Module, reshard_after_forward: Any = True):
        self.policy = policy
        self.scorer = scorer
        self.reshard_after_forward = reshard_after_forward is not False  # an int (a smaller mesh): True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def generate(self, *args, **kwargs):
        return self._gathered(self.policy.generate, *args, **kwargs)

    def prompt_values(self, *args, **kwargs):
        return self._gathered(self.policy.prompt_values, *args, **kwargs)

    def reference_logprobs(self, *args, **kwargs):
        return self._gathered(self.policy.reference_logprobs, *args, **kwargs)

    def _gathered(self, method: Callable, *args, **kwargs):
        from torch.distributed.fsdp import FSDPModule

        inner = [m for m in self.scorer.modules() if isinstance(m, FSDPModule) and m is not self.scorer]
        for module in inner:
            module.set_reshard_after_forward(False, recurse=False)
        try:
            return self.scorer(call=partial(method, *args, **kwargs))
        finally:
            for module in inner:
                module.set_reshard_after_forward(self.reshard_after_forward, recurse=False)
                module.reshard()
            self.scorer.reshard()

    def full_state(self, accelerator) -> dict[str, torch.Tensor]:
        """The policy's full state dict (keys of ``policy.state_dict()``, CPU) on the main process, ``{}`` on
        the others. Every process must call it (the shards are gathered)."""
        prefix = "policy."
        state = accelerator.get_state_dict(self.scorer)
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    def save_pretrained(self, path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
        """``VLMPolicy.save_pretrained`` with the weights of a `full_state`."""
        self.policy.save_pretrained(path, state_dict=state_dict)


class FullOptimizerState:
    """An FSDP optimizer as full (unsharded, parameter-name-keyed) state dicts, for checkpoints: every process
    must call `state_dict` (gathered to the main process) and `load_state_dict` (each takes its shards)."""

    def __init__(self, scorer: torch.nn.Module, optimizer) -> None:
        self.scorer = scorer
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> torch's

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.scorer, self.optimizer, options=options)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.scorer, self.optimizer, optim_state_dict=state, options=options)
