"""Image path resolution (path remap, media root, containment) and optional image checks.

Rules, in order:
1. ``path_remap`` replaces a path prefix written on another machine (longest prefix first); the result
   must stay inside the remap target (``OLD/../..`` cannot climb out).
2. Otherwise a relative path is joined to ``media_dir``, or to the data file's folder when no
   ``media_dir`` is given, and must stay inside that folder.
3. An absolute path must be inside ``media_dir`` when one is given; without ``media_dir`` it is used as is.
"Inside" is as the file system resolves both paths: a link out of the folder is outside, a path by the
real name of a linked media folder inside. Paths that break 2 or 3 are refused unless
``allow_outside_media=True``. Images stay path strings.
Every referenced image must exist (checked once per distinct file); a record whose images are missing
gets one problem naming the path tried, the media folder and the first part of the written path that does
not exist here, with the ``path_remap`` that would fix it. ``check_images=True`` also decodes each file.
"""

from __future__ import annotations

import functools
import os
import re
from collections import defaultdict
from typing import TYPE_CHECKING

from vln_gym.data.fields import LoadOptions
from vln_gym.data.problems import FieldError, RecordProblems
from vln_gym.images import ImageLoadError, decode_image
from vln_gym.paths import first_missing

if TYPE_CHECKING:
    from vln_gym.data.context import ReadContext


@functools.lru_cache(maxsize=64)
def _is_normal_folder(root: str) -> bool:
    return os.sep == "/" and root != "/" and os.path.isabs(root) and os.path.normpath(root) == root


def _joined(root: str, raw: str) -> str:
    """``os.path.normpath(os.path.join(root, raw))`` of a relative ``raw``; a plain concatenation when
    nothing needs normalising (no '.', '..' or empty parts: most references)."""
    if (
        "//" not in raw
        and "/." not in raw
        and not raw.startswith(".")
        and not raw.endswith("/")
        and _is_normal_folder(root)
    ):
        return f"{root}/{raw}"
    return os.path.normpath(os.path.join(root, raw))


def is_inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both normalised, as strings)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _remap_entry(raw: str, options: LoadOptions) -> tuple[str, str] | None:
    """The ``(OLD, NEW)`` of ``path_remap`` that applies to ``raw`` (the longest prefix), or ``None``."""
    for old, new in options.path_remap:
        prefix = old.rstrip("/")
        if raw == prefix or raw.startswith(prefix + "/"):
            return prefix, new
    return None


def _remap(raw: str, options: LoadOptions) -> tuple[str, str] | None:
    entry = _remap_entry(raw, options)
    if entry is None:
        return None
    prefix, root = entry  # LoadOptions made the target absolute
    return os.path.normpath(os.path.join(root, raw[len(prefix) :].lstrip("/"))), root


def _split(path: str) -> tuple[str, str]:
    """``os.path.split`` of an absolute normalised path (one string search on POSIX)."""
    if os.sep != "/":
        return os.path.split(path)
    head, _, tail = path.rpartition("/")
    return head or "/", tail


class FolderEntries:
    """Which names of a folder are files and which are symbolic links: one ``os.scandir`` per folder and
    load (frames share folders), instead of a ``stat`` per image. A name the listing does not hold (a
    folder that cannot be listed, a case-insensitive file system) is asked of the file system itself."""

    def __init__(self) -> None:
        self._folders: dict[str, tuple[frozenset[str], frozenset[str]] | None] = {}

    def _listing(self, folder: str) -> tuple[frozenset[str], frozenset[str]] | None:
        if folder not in self._folders:
            try:
                with os.scandir(folder) as entries:
                    kinds = [(entry.name, entry.is_symlink(), entry.is_file()) for entry in entries]
            except OSError:
                self._folders[folder] = None
            else:
                files = frozenset(name for name, link, file in kinds if file and not link)
                links = frozenset(name for name, link, _ in kinds if link)
                self._folders[folder] = files, links
        return self._folders[folder]

    def regular_files(self, folder: str) -> frozenset[str]:
        """The names of the regular files (not links) in ``folder``; empty if it cannot be listed."""
        listing = self._listing(folder)
        return listing[0] if listing is not None else frozenset()

    def is_file(self, path: str) -> bool:
        """``os.path.isfile(path)`` (``path`` absolute and normalised, like every resolved image)."""
        folder, name = _split(path)
        listing = self._listing(folder)
        if listing is not None and name in listing[0]:
            return True
        return os.path.isfile(path)

    def is_link(self, path: str) -> bool:
        """``os.path.islink(path)`` (``path`` absolute and normalised)."""
        folder, name = _split(path)
        listing = self._listing(folder)
        if listing is not None and (name in listing[0] or name in listing[1]):
            return name in listing[1]
        return os.path.islink(path)


class RealPaths:
    """``os.path.realpath`` with the folders' answers kept for one load (records share frame folders);
    a file that is itself a symbolic link is always resolved in full."""

    def __init__(self, entries: FolderEntries | None = None) -> None:
        self._folders: dict[str, str] = {}
        self._entries = entries

    def folder(self, path: str) -> str:
        if path not in self._folders:
            self._folders[path] = os.path.realpath(path)
        return self._folders[path]

    def __call__(self, path: str) -> str:
        if self._entries.is_link(path) if self._entries is not None else os.path.islink(path):
            return os.path.realpath(path)
        head, tail = _split(path)
        return _joined(self.folder(head), tail)


def resolve_image(
    raw: str, name: str, *, base_dir: str, options: LoadOptions, realpath: RealPaths | None = None
) -> str:
    """Absolute, normalised path of image reference ``raw`` from column ``name`` of a file in ``base_dir``."""
    if "\x00" in raw:
        raise FieldError(name, f"image path {raw!r:.60} contains a NUL byte")
    remapped = _remap(raw, options)
    if remapped is not None:
        path, root = remapped
    elif os.path.isabs(raw):
        path, root = os.path.normpath(raw), options.media_dir
    else:
        root = options.media_dir or base_dir
        path = _joined(root, raw)
    if root is None or options.allow_outside_media:
        return path
    real = realpath or RealPaths()
    if is_inside(real(path), real.folder(root)):  # as written, or through another name of the media folder
        return path
    where = f"{os.path.realpath(path)} (through a symbolic link)" if is_inside(path, root) else path
    raise FieldError(
        name,
        f"image {raw!r} resolves to {where}, outside the media folder {root} "
        "(pass allow_outside_media=True / --allow-outside-media to accept it)",
    )


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def missing_part(raw: str, path: str) -> str:
    """The written prefix of ``raw`` up to its first component that does not exist under ``path``'s root."""
    parts = raw.replace("\\", "/").split("/")
    for count in range(len(parts) - 1, 0, -1):
        candidate = path.rsplit(os.sep, len(parts) - count)[0]
        if os.path.isdir(candidate):
            return "/".join(parts[: count + 1])
    return parts[0] or "/" + parts[1]


def missing_images_problem(
    missing: list[tuple[int, str, str]], root: str | None, name: str, options: LoadOptions
) -> tuple[str, str]:
    """``(field, message)`` for a record's missing images ``(index, written path, path tried)``."""
    index, raw, path = missing[0]
    remap = _remap_entry(raw, options)
    if remap is not None:
        where = f" (path_remap {remap[0]}={remap[1]})"
    else:
        where = f" (media folder {root})" if root else ""
    more = f" and {len(missing) - 1} more of its images" if len(missing) > 1 else ""
    message = f"image not found: {raw!r} -> {path}{where}{more}"
    if _URL.match(raw):
        return f"{name}[{index}]", message + "; images are read from local files, URLs are not fetched"
    folder = os.path.dirname(path)
    if os.path.isdir(folder):
        return f"{name}[{index}]", message
    if remap is not None:
        absent = first_missing(folder)
        found = f"the folder {absent} does not exist" if absent else f"{folder} is not a folder"
        return f"{name}[{index}]", f"{message}; {found}"
    absent = missing_part(raw, path)
    message += (
        f"; '{absent}' does not exist here: if the paths were written on another machine, pass "
        f"path_remap / --path-remap {absent}=LOCAL_FOLDER"
    )
    return f"{name}[{index}]", message


class ImageChecker:
    """Checks each distinct image once: that it exists, and (``check_images=True``) that it decodes.

    ``good[base_dir]`` maps each reference already read without a problem to its path, so a record whose
    references were all seen before costs one lookup per image."""

    def __init__(self) -> None:
        self._verdicts: dict[str, str | None] = {}
        self._exists: dict[str, bool] = {}
        self.entries = FolderEntries()
        self.realpath = RealPaths(self.entries)
        self._resolved: dict[tuple[str, str], str | FieldError] = {}
        self.good: defaultdict[str, dict[str, str]] = defaultdict(dict)
        self._plain_folders: dict[tuple[str, str], tuple] = {}

    def resolve(self, raw: str, base_dir: str, options: LoadOptions) -> str | FieldError:
        """`resolve_image` of ``raw`` (its answer or its error), once per reference and base folder."""
        key = (raw, base_dir)
        if key not in self._resolved:
            try:
                self._resolved[key] = resolve_image(
                    raw, "", base_dir=base_dir, options=options, realpath=self.realpath
                )
            except FieldError as error:
                self._resolved[key] = error
        return self._resolved[key]

    def plain_file(self, raw: str, base_dir: str, options: LoadOptions) -> str | None:
        """The path of ``raw`` when it is the common case: a relative ``folder/name`` with nothing to
        normalise, no ``path_remap``, naming a regular file (not a link) in a folder whose real path is
        inside the media folder; ``None`` for anything else (`resolve` then applies every rule)."""
        if raw[:1] == "/" or os.sep != "/":
            return None
        folder_part, _, name = raw.rpartition("/")
        if not name or name[0] == "." or "\x00" in name:
            return None
        key = (folder_part, base_dir)
        plain = self._plain_folders.get(key)
        if plain is None:
            plain = self._plain_folders[key] = self._plain_folder(folder_part, base_dir, options)
        if plain and name in plain[1]:
            return f"{plain[0]}/{name}"
        return None

    def _plain_folder(
        self, part: str, base_dir: str, options: LoadOptions
    ) -> tuple[str, frozenset[str]] | tuple:
        """``(folder, its regular files)`` for the written folder ``part`` of plain references, or ``()``."""
        root = options.media_dir or base_dir
        if options.path_remap or options.allow_outside_media or not _is_normal_folder(root) or "\x00" in part:
            return ()
        if part and ("//" in part or "/." in part or part.startswith(".") or part.endswith("/")):
            return ()
        folder = f"{root}/{part}" if part else root
        if not is_inside(self.realpath.folder(folder), self.realpath.folder(root)):
            return ()
        return folder, self.entries.regular_files(folder)

    def exists(self, path: str) -> bool:
        if path not in self._exists:
            self._exists[path] = self.entries.is_file(path)
        return self._exists[path]

    def problem(self, path: str) -> str | None:
        """``None`` if ``path`` decodes as an image, else why not."""
        if path not in self._verdicts:
            try:
                decode_image(path)
                self._verdicts[path] = None
            except ImageLoadError as error:
                self._verdicts[path] = str(error).removeprefix(f"{path}: ")
        return self._verdicts[path]


def known_or_plain_path(raw: object, base_dir: str, ctx: ReadContext) -> str | None:
    """The path of image reference ``raw`` when it was read before and is good, or is a plain file
    (`ImageChecker.plain_file`) and images are not decoded (no ``check_images``): what `read_images`
    would find for it; ``None``: let `read_images` decide (and name any problem)."""
    if type(raw) is not str:
        return None
    good = ctx.images.good[base_dir]
    path = good.get(raw)
    if path is None and not ctx.options.check_images and raw.strip():
        path = ctx.images.plain_file(raw, base_dir, ctx.options)
        if path is not None:
            good[raw] = path
    return path


def read_images(
    value: object,
    name: str,
    *,
    base_dir: str,
    ctx: ReadContext,
    report: RecordProblems,
    allow_string: bool = False,
    known: tuple[str, ...] = (),
) -> tuple[str, ...] | None:
    """Resolve a record's image list (``allow_string``: a single path string is a list of one).

    Problems go to ``report``; returns ``None`` when the list itself is unusable. ``known``: the paths of
    ``value[:len(known)]``, already read without a problem in this load (a NaVILA record repeats the
    frame history of the one before it); only the references after them are looked up.
    """
    if allow_string and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        kind = "a path string or a list of paths" if allow_string else "a list of image paths"
        report.add(name, f"expected {kind}, got {type(value).__name__} {value!r:.40}")
        return None
    if not value:
        report.add(name, "no images (a VLN record needs at least the current view)")
        return None
    good = ctx.images.good[base_dir]
    start = len(known)
    rest = value[start:] if start else value
    try:
        paths = list(map(good.get, rest))  # the references seen before (and fine); None for the others
    except TypeError:  # an unhashable reference (a list, an object): no path, its problem comes below
        paths = [good.get(raw) if isinstance(raw, str) else None for raw in rest]
    if not all(paths):  # a path is a non-empty string: all() finds a None sooner than ``None in``
        if start:
            paths[:0] = known
        _check_new_images(value, paths, name, base_dir, ctx, report, good, start)
        return tuple(paths) if all(paths) else None  # ``known`` holds no None
    return known + tuple(paths) if start else tuple(paths)


def _check_new_images(
    value: list,
    paths: list[str | None],
    name: str,
    base_dir: str,
    ctx: ReadContext,
    report: RecordProblems,
    good: dict[str, str],
    start: int = 0,
) -> None:
    """Check the references of ``value`` not seen before (``None`` in ``paths``, from ``start`` on), in
    order: fill in their paths (kept ``None`` where unusable) and report their problems."""
    missing = []
    for index in [i for i in range(start, len(paths)) if paths[i] is None]:
        raw = value[index]
        if not isinstance(raw, str) or not raw.strip():
            report.add(f"{name}[{index}]", f"expected a non-empty path string, got {raw!r:.40}")
            continue
        path = ctx.images.plain_file(raw, base_dir, ctx.options)
        if path is None:  # not the common case: every rule, in order
            path = ctx.images.resolve(raw, base_dir, ctx.options)
            if isinstance(path, FieldError):
                report.add(f"{name}[{index}]", path.message)
                continue
            if not ctx.images.exists(path):
                missing.append((index, raw, path))
                continue
        reason = ctx.images.problem(path) if ctx.options.check_images else None
        if reason is None:
            good[raw] = path
        else:
            report.add(f"{name}[{index}]", f"{path}: {reason}")
        paths[index] = path
    if missing:
        report.add(*missing_images_problem(missing, ctx.options.media_dir or base_dir, name, ctx.options))
