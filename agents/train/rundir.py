"""A training run owns its output dir: one writer at a time, no fresh run on top of an old one.

- A lock file (``OUTPUT_DIR/.lock``: pid, host, start time) is created exclusively when a run starts and
  removed when it ends. A second trainer is refused while the owner lives; a lock left by a dead process
  on this host is taken over (and said so).
- A fresh run (no ``resume_from``) in a dir that already holds a run (metrics, checkpoints, a warm-start
  policy) is refused unless ``overwrite_output_dir``, which removes the old run's files first.
- Leftovers of killed runs (``.tmp-checkpoint-*``, ``.stale-checkpoint-*``) are removed at start and
  counted in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from agents.train.checkpoint import list_checkpoints
from vln_gym.safe_files import writable_folder

LOCK_NAME = ".lock"
RUN_FILES = ("metrics.jsonl", "latest", "sft.json", "sft_policy", "tb")
LEFTOVER_PATTERNS = (".tmp-checkpoint-*", ".stale-checkpoint-*")


class RunDirError(ValueError):
    """The output dir cannot be used by this run (owned by another, or holds another run)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_files(output_dir: Path) -> list[str]:
    """Names of what a previous run left in ``output_dir`` (empty when there is none)."""
    found = [name for name in RUN_FILES if (output_dir / name).exists()]
    found += sorted(p.name for p in output_dir.glob("checkpoint-*"))
    return found


def acquire(output_dir: str | Path, *, resume: bool, overwrite: bool) -> tuple[Path, str]:
    """Take ownership of ``output_dir`` for this run; returns the lock path and a note for the log."""
    created = not Path(output_dir).exists()
    output_dir = writable_folder(output_dir, "output_dir")  # a read-only path: one line, before any work
    lock = output_dir / LOCK_NAME
    notes = [_take_lock(lock, created)]
    try:
        previous = run_files(output_dir)
        if previous and not resume:
            if not overwrite:
                raise RunDirError(_holds_a_run(output_dir, previous))
            for name in previous:
                path = output_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            notes.append(f"removed the previous run ({len(previous)} entries, --overwrite_output_dir)")
        leftovers = [p for pattern in LEFTOVER_PATTERNS for p in output_dir.glob(pattern)]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        if leftovers:
            notes.append(f"removed {len(leftovers)} half-written checkpoint(s) of a killed run")
    except BaseException:
        release(lock)
        raise
    return lock, "; ".join(note for note in notes if note)


def _holds_a_run(output_dir: Path, previous: list[str]) -> str:
    """The refusal of a fresh run in ``output_dir``: resume it, or (with no checkpoint, as after a Ctrl-C
    during the warm start) start over."""
    shown = ", ".join(previous[:4]) + (", ..." if len(previous) > 4 else "")
    if not list_checkpoints(output_dir):
        return (
            f"{output_dir}: already holds a run that saved no checkpoint ({shown}); nothing to resume: "
            "pass --overwrite_output_dir to delete it and start over, or choose another --output_dir"
        )
    return (
        f"{output_dir}: already holds a run ({shown}); pass --resume_from {output_dir} to continue it, "
        "or --overwrite_output_dir to delete it and start over"
    )


def _take_lock(lock: Path, created: bool) -> str:
    """Create the lock (``created``: this run made the output dir, which `release` then removes if the
    run left nothing in it)."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "created": created}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            same_host = holder.get("host") == owner["host"]
            pid = holder.get("pid")
            if same_host and isinstance(pid, int) and not _alive(pid):
                lock.unlink(missing_ok=True)  # the owner died without cleaning up
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
            raise RunDirError(
                f"{lock.parent}: in use by another trainer (pid {pid} on {holder.get('host')}, since "
                f"{since}); wait for it, choose another --output_dir, or delete {lock} if that run is gone"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(owner, handle)
        return ""
    raise RunDirError(f"{lock}: could not be taken (another trainer raced for it)")


def _read_lock(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def release(lock: Path | None) -> None:
    """Remove our lock (only if it is still ours), and the output dir if this run created it and left
    nothing in it (a run refused or failed before its first iteration was logged: a config that cannot
    resume, a model not found, data the env refuses) but an empty metrics.jsonl and its TensorBoard dir;
    those would make the same command's rerun a refusal ("holds a run that saved no checkpoint")."""
    if lock is None:
        return
    holder = _read_lock(lock)
    if holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        if holder.get("created") is True:
            _remove_unlogged_run(lock.parent)


def _remove_unlogged_run(folder: Path) -> None:
    """``folder`` removed if it holds at most an empty metrics.jsonl and tb/ (nothing logged, no
    checkpoint); anything else stays, the folder too."""
    metrics = folder / "metrics.jsonl"
    names = {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
    if not names <= {"metrics.jsonl", "tb"} or (metrics.exists() and metrics.stat().st_size > 0):
        return
    metrics.unlink(missing_ok=True)
    shutil.rmtree(folder / "tb", ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def claim_output_dir(config, accelerator) -> Path | None:
    """The main process takes the run dir (`agents.train.rundir`); every process raises if it could not."""
    lock, message = None, None
    if accelerator.is_main_process:
        try:
            lock, note = acquire(
                config.output_dir,
                resume=config.resume_from is not None,
                overwrite=config.overwrite_output_dir,
            )
            if note:
                print(f"{config.output_dir}: {note}", file=sys.stderr)
        except RunDirError as error:
            message = str(error)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message])[0]
    if message:
        raise RunDirError(message)
    return lock
