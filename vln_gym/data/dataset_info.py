"""LLaMA-Factory ``dataset_info.json``: one named entry -> input files and load options.

An entry gives ``file_name`` (a file or folder relative to the dataset_info folder), ``formatting``
(``sharegpt`` or ``alpaca``, LLaMA-Factory's default ``alpaca``), ``columns`` (sharegpt: messages, images,
system; alpaca: prompt, query, response, history, system, images) and ``tags`` (role_tag, content_tag,
user_tag, assistant_tag, system_tag, observation_tag, function_tag). Images resolve against the
dataset_info folder, as LLaMA-Factory's ``media_dir`` defaults to its ``dataset_dir``. Hub entries
(``hf_hub_url`` ...), ranking data and video columns are refused with the reason: nothing is fetched here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vln_gym.data.fields import ALPACA_DEFAULTS, CHAT_TAGS
from vln_gym.data.jsonio import TOO_DEEP
from vln_gym.data.problems import DataError, Problem
from vln_gym.paths import absolute_path

# LLaMA-Factory column name -> our field name (the field map is ours -> the file's column).
SHAREGPT_COLUMNS = {"messages": "conversations", "images": "images", "system": "system"}
ALPACA_COLUMNS = {
    "prompt": "prompt",
    "query": "query",
    "response": "response",
    "history": "history",
    "system": "system",
    "images": "images",
}
UNSUPPORTED_COLUMNS = ("videos", "audios", "chosen", "rejected", "kto_tag")
REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(frozen=True)
class DatasetEntry:
    """What `load_episodes` needs to read one dataset_info entry."""

    paths: tuple[str, ...]
    format: str
    field_map: dict[str, str]
    chat_tags: dict[str, str]
    media_dir: str


def _problem(path: Path, field: str, message: str) -> DataError:
    return DataError([Problem(str(path), None, field, message)])


def _entry(path: Path, name: str) -> dict[str, Any]:
    try:
        info = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise _problem(path, "file", "file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _problem(path, "json", f"invalid JSON ({error})") from None
    except RecursionError:
        raise _problem(path, "json", TOO_DEEP) from None
    except OSError as error:
        raise _problem(path, "file", f"cannot read file ({error.strerror or error})") from None
    if not isinstance(info, dict):
        raise _problem(path, "file", "expected an object of named dataset entries")
    if name not in info:
        known = ", ".join(sorted(info)[:20])
        raise _problem(path, name, f"no such dataset entry (entries: {known})")
    entry = info[name]
    if not isinstance(entry, dict):
        raise _problem(path, name, f"expected an object, got {type(entry).__name__}")
    return entry


def _string_map(entry: dict, key: str, path: Path, name: str) -> dict[str, str]:
    value = entry.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _problem(path, f"{name}.{key}", "expected an object of strings")
    return value


def read_dataset_info(path: str | Path, name: str) -> DatasetEntry:
    """The inputs and options of entry ``name``; `DataError` naming the file and the entry's field."""
    path = Path(absolute_path(path))
    entry = _entry(path, name)
    remote = [key for key in REMOTE_KEYS if entry.get(key)]
    if remote and not entry.get("file_name"):
        raise _problem(path, f"{name}.{remote[0]}", "hub and remote datasets are not fetched; give file_name")
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        raise _problem(path, f"{name}.file_name", "missing (the data file or folder, relative to this file)")
    if entry.get("ranking"):
        raise _problem(path, f"{name}.ranking", "preference (ranking) data holds no VLN episodes")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("sharegpt", "alpaca"):
        raise _problem(path, f"{name}.formatting", f"expected 'sharegpt' or 'alpaca', got {formatting!r}")
    columns = _string_map(entry, "columns", path, name)
    tags = _string_map(entry, "tags", path, name)
    unknown_tags = sorted(set(tags) - set(CHAT_TAGS))
    if unknown_tags:
        raise _problem(path, f"{name}.tags", f"unknown tag(s) {unknown_tags}; known: {', '.join(CHAT_TAGS)}")
    allowed = SHAREGPT_COLUMNS if formatting == "sharegpt" else ALPACA_COLUMNS
    for column in columns:
        if column in UNSUPPORTED_COLUMNS:
            raise _problem(path, f"{name}.columns.{column}", "not read: VLN frames are given as images")
        if column not in allowed and column != "tools":
            raise _problem(path, f"{name}.columns.{column}", f"unknown {formatting} column")
    defaults = ALPACA_DEFAULTS if formatting == "alpaca" else {}
    field_map = {allowed[key]: value for key, value in {**defaults, **columns}.items() if key in allowed}
    data = Path(absolute_path(path.parent / entry["file_name"]))
    if not data.exists():
        raise _problem(path, f"{name}.file_name", f"{data} does not exist")
    files = sorted(p for p in data.iterdir() if p.is_file()) if data.is_dir() else [data]
    if not files:
        raise _problem(path, f"{name}.file_name", f"{data} is a folder with no files")
    return DatasetEntry(
        paths=tuple(str(file) for file in files),
        format=formatting,
        field_map=field_map,
        chat_tags=tags,
        media_dir=str(path.parent),
    )
