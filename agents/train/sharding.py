"""Sharded training for the trainer: torch FSDP2 (``fully_shard``) through accelerate's FSDP plugin, and what
DeepSpeed ZeRO-2 needs from a trainer without a dataloader.

Under FSDP the policy's parameters are shards (DTensors): only the wrapped scorer's forward gathers them.
Everything else that reads weights goes through here:

- `make_accelerator`: accelerate turns FSDP on only for GPU-like devices; this also turns it on for CPU
  processes (gloo), so the CPU test runs the code path users run on GPUs. FSDP1 is refused (its gradient
  clipping cannot clip the policy and the value head separately). DeepSpeed on CPU gets its gloo backend.
- `ShardedPolicy.gathered`: a rollout or the reference log-probs run inside the scorer's forward with every
  shard group gathered once for the phase (not once per decoded token, and no collectives within it).
- `ShardedPolicy.full_state`: the full state dict on the main process (accelerate's ``get_state_dict``), which
  checkpoints write and hash; `FullOptimizerState`: the optimizer state as full, name-keyed tensors.
- `configure_deepspeed`: the micro-batch and clip norm DeepSpeed would read from a dataloader; ZeRO-3 refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def make_accelerator(gradient_accumulation_steps: int):
    """``Accelerator(gradient_accumulation_steps=...)``, with FSDP also on CPU processes when launched with
    an FSDP config (accelerate would silently fall back to DDP there)."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    handlers = []
    if _flag("ACCELERATE_USE_DEEPSPEED") and not torch.cuda.is_available():
        # DeepSpeed's CPU accelerator talks gloo; without a backend named, accelerate sees one process
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps, kwargs_handlers=handlers
    )
    if _flag("ACCELERATE_USE_DEEPSPEED") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        raise ValueError(
            "ACCELERATE_USE_CPU=1 with a DeepSpeed config makes accelerate run DDP instead: unset it "
            "(DeepSpeed finds the CPU itself where there is no GPU)"
        )
    if _flag("ACCELERATE_USE_FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        # both shared states: AcceleratorState() re-reads the process state's type whenever it is built
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ValueError("vln-gym trains with FSDP2 only: set fsdp_version: 2 in the accelerate config")
    return accelerator


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def configure_deepspeed(accelerator, micro_batch_size: int, max_grad_norm: float) -> None:
    """Fill what DeepSpeed's config leaves ``auto`` (the trainer has no dataloader to infer it from): one
    process's micro-batch and the clipping norm (DeepSpeed clips all gradients together, not the policy and
    the value head apart). Refuses ZeRO-3 (see configs/deepspeed_zero3.yaml). No-op without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds_config = plugin.deepspeed_config
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        raise ValueError(
            "DeepSpeed ZeRO-3 is not supported: generation gathers its sharded weights module by module, so "
            "processes whose answers differ in length issue different collectives (abort or hang); shard "
            "weights with FSDP instead (configs/accelerate_fsdp.yaml)"
        )
    if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds_config["train_micro_batch_size_per_gpu"] = max(1, micro_batch_size)
    if ds_config.get("gradient_clipping", "auto") == "auto":
        ds_config["gradient_clipping"] = max_grad_norm


def broadcast_from_main(module: torch.nn.Module) -> None:
    """Copy the main process's parameters and buffers to every process (what DDP does when it wraps a
    module; FSDP2 shards each process's own values, e.g. a value head initialised with a per-process seed)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)


class ShardedPolicy:
    """A `VLMPolicy` whose weights are FSDP shards, seen through its prepared scorer (the FSDP root).

    `gathered` runs a phase that reads weights outside the loss (a rollout, reference log-probs) inside the
    scorer's forward with every shard group gathered up front, in module order on every process: the calls
    within then issue no collectives, so processes may make different numbers of them (generation lengths,
    bootstrap batches, GRPO episodes). Everything else is the policy's own (``named_parameters``, ...)."""

    def __init__(self, policy: torch.nn.Module, scorer: torch.nn.Module, reshard_after_forward: Any = True):
        self.policy = policy
        self.scorer = scorer
        self.reshard_after_forward = reshard_after_forward is not False  # an int (a smaller mesh): True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def gathered(self, phase: Callable[[], T]) -> T:
        """``phase()`` with the full weights (each process holds all of them until it returns)."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in self.scorer.modules() if isinstance(m, FSDPModule)]  # the root first
        for unit in units[1:]:
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            return self.scorer(call=partial(_unshard_then, units, phase))
        finally:
            for unit in units[1:]:
                unit.set_reshard_after_forward(self.reshard_after_forward, recurse=False)
            for unit in units:
                unit.reshard()

    def full_state(self, accelerator) -> dict[str, torch.Tensor]:
        """The policy's full state dict (keys of ``policy.state_dict()``, CPU) on the main process, ``{}`` on
        the others. Every process must call it (the shards are gathered)."""
        prefix = "policy."
        state = accelerator.get_state_dict(self.scorer)
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    def save_pretrained(self, path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
        """``VLMPolicy.save_pretrained`` with the weights of a `full_state`."""
        self.policy.save_pretrained(path, state_dict=state_dict)


def _unshard_then(units: list, phase: Callable[[], T]) -> T:
    for unit in units:
        unit.unshard()
    return phase()


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
