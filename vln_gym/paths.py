"""Absolute paths that name what the file system names.

``os.path.abspath`` folds ``..`` as text: ``link/../data`` becomes ``./data``, while the file system
reads ``link/..`` as the parent of the link's target. `absolute_path` resolves the part of a path up to
its last ``..`` as the file system does and keeps the rest as written (so a linked folder or file given
by its link keeps that name in messages and outputs).
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute_path(path: str | os.PathLike) -> str:
    """The absolute path of ``path`` (file or folder), any ``..`` in it resolved as the file system does."""
    text = os.fspath(path)
    parts = text.split(os.sep)
    if ".." not in parts:
        return os.path.abspath(text)
    last = len(parts) - 1 - parts[::-1].index("..")
    head = os.path.realpath(os.sep.join(parts[: last + 1]) or os.sep)
    rest = os.sep.join(parts[last + 1 :])
    return os.path.normpath(os.path.join(head, rest)) if rest else head


def first_missing(path: str | os.PathLike) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist (what creating ``path`` creates);
    ``None`` when ``path`` exists (a dangling link counts as existing)."""
    missing = None
    for candidate in [Path(path), *Path(path).parents]:
        if os.path.lexists(candidate):
            break
        missing = candidate
    return missing
