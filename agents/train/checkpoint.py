"""Atomic training checkpoints: policy (adapter + value head, safetensors), optimizer, scheduler, RNG, state.

Layout of ``OUTPUT_DIR/checkpoint-000004/``::

    policy/               VLMPolicy.save_pretrained (safetensors, processor, policy_config.json)
    optimizer.pt          optimizer state dict (tensors only; loaded with weights_only=True)
    scheduler.pt          LR scheduler state dict
    rng-rank0.json ...    python / numpy / torch RNG states, one file per process
    envs-rank0.json/.npz  PPO: the episodes in flight (env snapshots, returns, lengths, episode counters);
                          frames in the .npz (loaded with allow_pickle=False), the rest as JSON
    trainer_state.json    iteration, config, model fingerprint

Everything is written into a hidden temporary sibling and renamed into place, so a kill at any moment
leaves every previous checkpoint whole; ``OUTPUT_DIR/latest`` names the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.train.runner import RunnerState


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names the file."""


STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
PREFIX = "checkpoint-"
EARLIER = "resume from an earlier checkpoint"

logger = logging.getLogger("agents.train")


# ---------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """JSON-serialisable python / numpy (legacy global) / torch CPU (+ CUDA) RNG states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------- files
def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=repr) + "\n", encoding="utf-8")


def _replace_file(path: Path, text: str) -> None:
    """Atomically replace a small text file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def checkpoint_dir(output_dir: str | Path, iteration: int) -> Path:
    return Path(output_dir) / f"{PREFIX}{iteration:06d}"


def assert_finite_parameters(parameters: Mapping[str, torch.Tensor]) -> None:
    """Refuse to save NaN/inf weights: raise naming the first bad parameter."""
    for name, tensor in parameters.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"refusing to checkpoint: parameter {name} holds NaN/inf")


def save_checkpoint(
    output_dir: str | Path,
    iteration: int,
    *,
    save_policy: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: Mapping[str, Any],
    rng_states: list[dict[str, Any]],
    runner_states: list[RunnerState] | None = None,
    keep_last: int = 2,
    optimizer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``iteration`` atomically; keep the ``keep_last`` newest of the same run (``run_id`` in
    ``trainer_state``; 0: all). Returns its path. ``optimizer_state``: written instead of
    ``optimizer.state_dict()`` (FSDP gathers it beforehand, on every process)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(output_dir, iteration)
    tmp = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".tmp-{final.name}-"))
    try:
        save_policy(tmp / "policy")
        optimizer_state = optimizer.state_dict() if optimizer_state is None else optimizer_state
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        for rank, state in enumerate(rng_states):
            _write_json(tmp / f"rng-rank{rank}.json", state)
        for rank, runner_state in enumerate(runner_states or []):
            _write_runner_state(tmp, rank, runner_state)
        _write_json(tmp / STATE_FILE, {**trainer_state, "iteration": iteration})
        if final.exists():  # the same iteration saved again (a resumed run): swap the old one out
            stale = output_dir / f".stale-{final.name}"
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            os.replace(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_file(output_dir / LATEST_FILE, final.name + "\n")
    if keep_last > 0:  # rotation only ever deletes checkpoints of this run
        ours = [c for c in list_checkpoints(output_dir) if _run_id_of(c) == trainer_state.get("run_id")]
        for old in ours[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _run_id_of(checkpoint: Path) -> str | None:
    try:
        return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir itself, or a run dir (its ``latest``/newest checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = path / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8", errors="replace").strip()
        if not name.startswith(PREFIX) or Path(name).name != name:
            raise CheckpointError(f"{latest}: must name a {PREFIX}* folder of this run dir, got {name!r}")
        candidate = path / name
        if (candidate / STATE_FILE).is_file():
            return candidate
        found = list_checkpoints(path)
        if found:
            _warn_once(f"{latest} names {candidate}, which is missing or incomplete; using {found[-1]}")
            return found[-1]
        raise FileNotFoundError(f"{latest}: names {candidate}, which is missing; no other checkpoint is here")
    found = list_checkpoints(path)
    if found:
        return found[-1]
    raise FileNotFoundError(f"{path}: no checkpoint here ({STATE_FILE} not found, no {PREFIX}* dirs)")


@lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """Log ``message`` as a warning once per process (a resume resolves its checkpoint more than once)."""
    logger.warning("warning: %s", message)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing (was the checkpoint written by fewer processes, or cut short?)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable or corrupt JSON ({error})") from None


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The checkpoint's trainer state, checked for the fields a resume reads."""
    path = Path(checkpoint) / STATE_FILE
    state = _read_json(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(state).__name__}")
    iteration = state.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(f"{path}: iteration: must be an int >= 0, got {iteration!r}")
    for key, kind in (("fingerprint", dict), ("num_processes", int), ("config", dict)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{path}: {key}: missing or not a {kind.__name__}")
    return state


def load_rng_state(checkpoint: str | Path, rank: int) -> dict[str, Any]:
    return _read_json(Path(checkpoint) / f"rng-rank{rank}.json")


def load_optimizer_and_scheduler(
    checkpoint: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    checkpoint = Path(checkpoint)
    for name, target in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        try:
            target.load_state_dict(torch.load(checkpoint / name, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise CheckpointError(f"{checkpoint / name}: missing") from None
        except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{checkpoint / name}: corrupt or from another run ({first})") from None


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose model fingerprint (base model, LoRA shape, trainable shapes) differs."""
    problems = [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if problems:
        raise ValueError(
            f"{checkpoint}: checkpoint was made with another model/config:\n  " + "\n  ".join(problems)
        )


# ---------------------------------------------------------------- episodes in flight
def _write_runner_state(directory: Path, rank: int, state: RunnerState) -> None:
    frames = {f"env{i}": snap["frames"] for i, snap in enumerate(state.snapshots) if snap is not None}
    snapshots = [
        None if snap is None else {k: v for k, v in snap.items() if k != "frames"} for snap in state.snapshots
    ]
    with (directory / f"envs-rank{rank}.npz").open("wb") as handle:
        np.savez(handle, **frames)
    _write_json(
        directory / f"envs-rank{rank}.json",
        {
            "snapshots": snapshots,
            "returns": state.returns,
            "lengths": state.lengths,
            "episodes_started": state.episodes_started,
        },
    )


def holds_episodes(trainer_state: Mapping[str, Any]) -> bool:
    """Whether a checkpoint with this (checked) trainer state saved the episodes in flight (PPO does, GRPO
    does not)."""
    return trainer_state["config"].get("algo", "ppo") == "ppo"


def load_runner_state(checkpoint: str | Path, rank: int) -> RunnerState | None:
    """The episodes in flight saved for process ``rank``; ``None`` for a checkpoint that holds none (GRPO).
    A PPO checkpoint without them is refused (its episodes would be dropped)."""
    path = Path(checkpoint) / f"envs-rank{rank}.json"
    if not path.is_file() and not holds_episodes(load_trainer_state(checkpoint)):
        return None
    saved = _read_json(path)
    try:
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as frames:
            snapshots = [
                None if snap is None else {**snap, "frames": frames[f"env{i}"]}
                for i, snap in enumerate(saved["snapshots"])
            ]
        return RunnerState(snapshots, saved["returns"], saved["lengths"], saved["episodes_started"])
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path.with_suffix('.npz')}: episodes in flight unreadable ({error}); {EARLIER}"
        ) from None


def _check_episodes_files(checkpoint: Path, rank: int) -> None:
    """Process ``rank``'s episodes in flight: the JSON parses and the .npz archive opens (frames unread)."""
    _read_json(checkpoint / f"envs-rank{rank}.json")
    frames = checkpoint / f"envs-rank{rank}.npz"
    if not frames.is_file():
        raise CheckpointError(f"{frames}: missing")
    try:
        with zipfile.ZipFile(frames) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{frames}: corrupt or truncated ({error}); {EARLIER}") from None


def check_checkpoint_files(checkpoint: str | Path, trainer_state: Mapping[str, Any], world: int) -> None:
    """Pre-flight: every file a resume reads is there (the saved policy's files whole too, see
    `agents.policy.model.check_saved_policy`), so nothing is loaded from a cut-short or damaged checkpoint.
    Raises `CheckpointError` naming the first bad file."""
    from agents.policy.model import PolicyFileError, check_saved_policy

    checkpoint = Path(checkpoint)
    try:
        check_saved_policy(checkpoint / "policy")
    except PolicyFileError as error:
        raise CheckpointError(f"{error}; {EARLIER}") from None
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint / name}: missing")
    for rank in range(world):
        load_rng_state(checkpoint, rank)
        if holds_episodes(trainer_state):
            _check_episodes_files(checkpoint, rank)


# ---------------------------------------------------------------- a run's checkpoint, from every process
def digested_names(policy: torch.nn.Module) -> list[str]:
    """Names of the parameters a digest covers: the trainable ones and the value head's."""
    return [n for n, p in policy.named_parameters() if p.requires_grad or n.startswith("value_head")]


def parameter_digest(policy: torch.nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> str:
    """sha256 of the trainable parameters (names and bytes): equal on all processes when DDP keeps sync.
    ``state``: take the values from this full state dict (FSDP) instead of the parameters."""
    import hashlib

    values = dict(policy.named_parameters()) if state is None else state
    digest = hashlib.sha256()
    for name in digested_names(policy):
        digest.update(name.encode())
        digest.update(values[name].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_run(
    accelerator, policy, optimizer, scheduler, config, iteration: int, shapes, runner_state=None, run_id=None
) -> Path | None:
    """Checkpoint from the main process, with every process's RNG states (and episodes in flight).

    Under FSDP (``policy`` a `ShardedPolicy`) the weights and optimizer state are gathered to the main
    process first; there is one copy of the weights, so every process's digest is that copy's."""
    from agents.train.sharding import ShardedPolicy

    sharded = isinstance(policy, ShardedPolicy)
    full = policy.full_state(accelerator) if sharded else None  # every process takes part
    optimizer_state = optimizer.state_dict() if sharded else None
    digest = None if sharded else parameter_digest(policy)
    local = {"rng": rng_state(), "digest": digest, "runner": runner_state}
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([local])
    else:
        gathered = [local]
    path = None
    if accelerator.is_main_process:
        weights = dict(policy.named_parameters()) if full is None else full
        assert_finite_parameters({n: weights[n] for n, p in policy.named_parameters() if p.requires_grad})
        digests = [item["digest"] for item in gathered]  # equal on every process under DDP
        if sharded:
            digests = [parameter_digest(policy, full)] * accelerator.num_processes
        trainer_state = {
            "fingerprint": config.fingerprint(),
            "trainable_shapes": shapes,
            "num_processes": accelerator.num_processes,
            "parameter_digests": digests,
            "config": config.as_dict(),
            "run_id": run_id,
        }
        runners = [item["runner"] for item in gathered]
        path = save_checkpoint(
            config.output_dir,
            iteration,
            save_policy=partial(policy.save_pretrained, state_dict=full),
            optimizer=optimizer,
            optimizer_state=optimizer_state,
            scheduler=scheduler,
            trainer_state=trainer_state,
            rng_states=[item["rng"] for item in gathered],
            runner_states=runners if all(r is not None for r in runners) else None,
            keep_last=config.keep_checkpoints,
        )
    accelerator.wait_for_everyone()
    return path


# ---------------------------------------------------------------- resuming
def resume_point(config, world: int) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to resume from and its trainer state; refuses another model / LoRA shape / world size,
    and a missing, truncated or corrupt file, before anything is loaded."""
    if not config.resume_from:
        return None, {"iteration": 0}
    resume = resolve_checkpoint(config.resume_from)
    saved = load_trainer_state(resume)
    check_compatible(saved["fingerprint"], config.fingerprint(), resume)
    if saved["num_processes"] != world:
        raise ValueError(f"{resume}: written by {saved['num_processes']} processes, this run has {world}")
    if saved["iteration"] > config.num_iterations:
        raise ValueError(
            f"{resume}: iteration {saved['iteration']} is past this run's "
            f"num_iterations={config.num_iterations}"
        )
    changed = config.resume_differences(saved["config"])
    if changed:
        raise ValueError(f"{resume}: a resume cannot change " + "; ".join(changed))
    check_checkpoint_files(resume, saved, world)
    return resume, saved


def verify_digest(policy, saved: dict[str, Any], rank: int, resume: Path) -> None:
    """Refuse resumed weights whose sha256 differs from the one saved with them (a corrupt file)."""
    digests = saved.get("parameter_digests") or []
    if rank < len(digests) and parameter_digest(policy) != digests[rank]:
        raise CheckpointError(
            f"{resume / 'policy'}: the weights do not match the digest saved in {resume / STATE_FILE} "
            f"(corrupt or edited files); {EARLIER}"
        )
