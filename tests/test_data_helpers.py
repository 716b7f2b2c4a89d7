"""Small builders shared by the data-layer tests: tiny PNGs, jsonl files, chat and own-format records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


def make_png(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (4, 3)) -> Path:
    """Write a tiny RGB PNG (``size`` = width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_lines(path: Path, records: list[Any], newline: str = "\n", bom: bool = False) -> Path:
    """jsonl file: dicts are JSON-encoded, strings are written as raw lines."""
    lines = [
        record if isinstance(record, str) else json.dumps(record, ensure_ascii=False) for record in records
    ]
    data = (newline.join(lines) + newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


POSE = {"agent_position": [1.0, 0.0, 2.0], "agent_heading": 0.5, "goal_position": [4.0, 0.0, 6.0]}


def sharegpt_record(images: list[str], instruction: str = "walk to the sofa", **fields: Any) -> dict:
    """A ShareGPT record with one ``<image>`` per image, a VLN-R1 style quoted instruction and a pose."""
    tags = " ".join(["<image>"] * len(images))
    prompt = f"Your instruction is '{instruction}'.\nObservations: {tags}\nWhat next?"
    record = {
        "conversations": [
            {"from": "human", "value": prompt},
            {"from": "gpt", "value": "A. Move forward 25 cm"},
        ],
        "images": images,
        **POSE,
    }
    record.update(fields)
    return record


def own_record(episode_id: str, images: list[str], **fields: Any) -> dict:
    """An own-format (vln-gym/1) record with a pose."""
    return {
        "format": "vln-gym/1",
        "id": episode_id,
        "instruction": "go to the door",
        "images": images,
        **POSE,
        **fields,
    }
