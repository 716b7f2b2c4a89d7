"""Writing files without ever destroying a user's data: atomic replacement and refusal to overwrite.

- `atomic_write_text` / `atomic_writer`: the new content goes to a temporary file created safely
  (``mkstemp``: an unpredictable name, opened exclusively, so no symlink can redirect it) in the target's
  own folder, is flushed and fsynced, then renamed over the target. A kill at any moment leaves either the
  old file or the new one, whole.
- `check_output`: an output path that already exists is refused unless ``overwrite``; an output that is
  one of the inputs (same real path, or a folder holding an input) is refused always.
- `check_replaceable`: a folder a command would replace must hold only what that command writes.
- `writable_folder`: an output folder is created and written to before any work, so a read-only or
  impossible path is one line at the start, not a traceback after the work.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import IO

from vln_gym.paths import absolute_path


class OutputExistsError(ValueError):
    """An output would overwrite existing data (or an input); the message says which and how to proceed."""


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``with atomic_writer(path) as handle: ...``: ``path`` is replaced only when the block succeeds."""
    path = Path(absolute_path(path))  # mkstemp folds '..' as text: resolve it as the file system does
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _mode_for(path))  # mkstemp makes 0600; keep the file's mode, or the umask's
        binary = "b" in mode
        with os.fdopen(
            fd, mode, encoding=None if binary else encoding, newline=None if binary else "\n"
        ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see the module docstring)."""
    with atomic_writer(path) as handle:
        handle.write(text)


def _same_or_inside(output: Path, item: Path) -> bool:
    return output == item or (output.is_dir() and output in item.parents)


def check_output(
    output: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = (), flag: str = "--overwrite"
) -> None:
    """Refuse to write ``output`` onto an input, or onto existing data without ``overwrite``.

    A folder output counts as existing when it holds anything. Raises `OutputExistsError`.
    """
    target = Path(output)
    real = Path(os.path.realpath(target))
    for item in inputs:
        if _same_or_inside(real, Path(os.path.realpath(item))):
            raise OutputExistsError(f"{target}: is (or holds) the input {item}; write the output elsewhere")
    exists = any(target.iterdir()) if target.is_dir() else os.path.lexists(target)  # a dangling link too
    if exists and not overwrite:
        kind = "folder is not empty" if target.is_dir() else "file exists"
        raise OutputExistsError(f"{target}: {kind}; pass {flag} to replace it")


def check_replaceable(folder: str | Path, owned: Collection[str], command: str) -> None:
    """Refuse to replace ``folder`` if it holds anything but the entries ``command`` writes (``owned``
    names; hidden files included): replacing is for the command's own earlier output, never a user's
    folder. Raises `OutputExistsError` naming the first foreign entries."""
    folder = Path(folder)
    if not folder.is_dir():
        if os.path.lexists(folder):  # a file (or a dangling link): never the command's own output
            raise OutputExistsError(f"{folder}: is a file, not a folder {command} wrote; choose another path")
        return
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputExistsError(
            f"{folder}: holds {shown}, which {command} did not write; it replaces only a folder of its own "
            "output: choose a new or empty folder"
        )


def writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """``folder``, created (with its parents) and proven writable by a temporary file; a path that cannot
    be a writable folder (read-only, a file, a file among its parents) is an `OutputExistsError` naming
    ``option`` and the reason, in one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError as error:
        raise OutputExistsError(f"{option} {folder}: is a file, not a folder") from error
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputExistsError(f"{option} {folder}: cannot write there ({reason})") from error
    return folder
