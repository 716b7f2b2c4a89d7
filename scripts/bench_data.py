"""Benchmark of the data layer: load / validate / convert 10k-record inputs in every format, side by side
with the plain JSON parse of the same file (prints figures; last line JSON).

.venv/bin/python scripts/bench_data.py [--records 10000] [--collect-between]

Every format gets ``--records`` decisions (episodes); image files exist (the loader checks them), tiny JPEGs
shared as real datasets share frames between records. ``*_over_json`` = load time / plain ``json.loads`` time
of the same file (the standard library: the baseline of issue 16); the loader parses with msgspec where it
can, so ``*_over_msgspec`` = load time / plain msgspec parse time of the same file is printed beside it.
A load pauses the cyclic garbage collector (`vln_gym.data.loader.gc_paused`), a plain ``json.loads`` loop
does not: ``*_over_json_paused`` is the load against ``json.loads`` with the collector paused too (like
for like: what is left is the readers' own work).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from PIL import Image

from vln_gym.data import episodes_dataset, load_episodes, validate_files, write_episodes_jsonl
from vln_gym.data.loader import gc_paused

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "vln-ego-sample"
R2R_CE = ROOT.parent / "shared" / "data" / "r2r-ce-sample" / "val_seen"
FRAMES_PER_TRAJECTORY = 100
HISTORY = 17


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (90, 40, 20)).save(buffer, "JPEG")
    return buffer.getvalue()


def _frames(folder: Path, names: list[str]) -> None:
    data = _jpeg()
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _trajectories(count: int) -> int:
    return max(1, count // FRAMES_PER_TRAJECTORY)


def _sharegpt_records(count: int) -> list[dict]:
    records = []
    for index in range(count):
        trajectory, step = divmod(index, FRAMES_PER_TRAJECTORY)
        images = [f"frames/ep_{trajectory}/step_{max(0, step - k)}.jpg" for k in range(HISTORY - 1, -1, -1)]
        prompt = (
            f"Your instruction is 'walk past the sofa and stop at door {index}'.\n" + "<image> " * HISTORY
        )
        records.append(
            {
                "id": f"r{index}",
                "conversations": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": "A. Move forward"},
                ],
                "images": images,
                "agent_position": [index * 0.01, 0.0, -1.0],
                "agent_heading": 0.3,
                "goal_position": [2.0, 0.0, 3.0],
                "expert_actions": [1, 1, 2, 1, 0],
            }
        )
    return records


def _streamvln(root: Path, count: int) -> Path:
    entries, names = [], []
    for trajectory in range(_trajectories(count)):
        video = f"images/scan{trajectory % 7}_r2r_{trajectory:06d}"
        actions = [-1] + [1 + (k % 3) for k in range(FRAMES_PER_TRAJECTORY - 1)]
        names += [f"{video}/rgb/{k + 1:03d}.jpg" for k in range(len(actions))]
        entries.append(
            {"id": trajectory, "video": video, "instructions": ["walk to the door"], "actions": actions}
        )
    _frames(root, names)
    path = root / "annotations.json"
    path.write_text(json.dumps(entries))
    return path


def _navila(root: Path, count: int) -> Path:
    records, names = [], []
    for trajectory in range(_trajectories(count)):
        for step in range(FRAMES_PER_TRAJECTORY):
            frames = [f"{trajectory}/frame_{k}.jpg" for k in range(step + 1)]
            answer = (
                "I think I should stop because I have finished the instruction."
                if step == FRAMES_PER_TRAJECTORY - 1
                else "The next action is move forward 25 cm."
            )
            records.append(
                {"video_id": f"{trajectory}-{step}", "q": "walk to the door", "a": answer, "frames": frames}
            )
        names += frames
    _frames(root, names)
    path = root / "navila.json"
    path.write_text(json.dumps(records))
    return path


COLLECT_BETWEEN = {"on": False}  # --collect-between


def _timed(function, repeat: int = 3) -> tuple[float, object]:
    """Best of ``repeat`` runs; with ``--collect-between`` each starts from a collected heap
    (``gc.collect()`` first, outside the timing, so that no run pays for the garbage or the young objects
    of the one before; the collector stays on while it runs)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if COLLECT_BETWEEN["on"]:
            result = None
            gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def _plain_parse(path: Path, loads: Callable[[bytes], Any], paused: bool = False) -> float:
    """Seconds of the plain parse with ``loads``: per line (jsonl) or of the whole file; ``paused``: with the
    cyclic garbage collector paused for the whole parse, as `load_episodes` pauses it for a whole load."""

    def parse() -> Any:
        if path.suffix == ".jsonl":
            return [loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        return loads(path.read_bytes())

    if not paused:
        return _timed(parse)[0]

    def paused_parse() -> Any:
        with gc_paused():
            return parse()

    return _timed(paused_parse)[0]


def _measure(figures: dict, name: str, path: Path, records: int, **options) -> list:
    seconds, episodes = _timed(lambda: load_episodes(path, **options))
    assert len(episodes) == records, (name, len(episodes), records)
    figures[f"{name}_load_s"] = seconds
    figures[f"{name}_over_json"] = seconds / _plain_parse(path, json.loads)
    figures[f"{name}_over_json_paused"] = seconds / _plain_parse(path, json.loads, paused=True)
    figures[f"{name}_over_msgspec"] = seconds / _plain_parse(path, msgspec.json.Decoder().decode)
    return episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument(
        "--collect-between",
        action="store_true",
        help="gc.collect() before every timed run (json.loads and the loads alike): figures that do not "
        "depend on what the run before left to the garbage collector",
    )
    args = parser.parse_args(argv)
    COLLECT_BETWEEN["on"] = args.collect_between
    count = _trajectories(args.records) * FRAMES_PER_TRAJECTORY
    figures: dict[str, Any] = {"records": count, "collect_between": args.collect_between}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        records = _sharegpt_records(count)
        _frames(root, sorted({image for record in records for image in record["images"]}))
        sharegpt = root / "sharegpt.jsonl"
        sharegpt.write_text("\n".join(json.dumps(r) for r in records) + "\n")
        episodes = _measure(figures, "sharegpt", sharegpt, count)
        figures["sharegpt_validate_s"], _ = _timed(lambda: validate_files(sharegpt))
        vlm_r1 = root / "vlm_r1.jsonl"
        vlm_r1.write_text("\n".join(json.dumps({**r, "image": r.pop("images")}) for r in records) + "\n")
        _measure(figures, "vlm_r1", vlm_r1, count, format="vlm-r1")
        info = root / "dataset_info.json"
        info.write_text(json.dumps({"vln": {"file_name": "sharegpt.jsonl", "formatting": "sharegpt"}}))
        figures["dataset_info_load_s"], _ = _timed(lambda: load_episodes(dataset_info=info, dataset="vln"))
        own = root / "own.jsonl"
        figures["own_write_s"], _ = _timed(
            lambda: write_episodes_jsonl(episodes, own, media_dir=root), repeat=1
        )
        _measure(figures, "own", own, count)
        cache = root / "cache"
        figures["dataset_cold_s"], _ = _timed(lambda: episodes_dataset(own, cache_dir=cache), repeat=1)
        figures["dataset_warm_s"], dataset = _timed(lambda: episodes_dataset(own, cache_dir=cache))
        parquet = root / "own.parquet"
        dataset.to_parquet(parquet)
        figures["parquet_load_s"], _ = _timed(lambda: load_episodes(parquet))
        _measure(figures, "streamvln", _streamvln(root / "streamvln", count), count)
        _measure(figures, "navila", _navila(root / "navila", count), count)
        if R2R_CE.is_dir():
            from vln_gym.data import read_habitat_episodes

            figures["habitat_778_episodes_read_s"], _ = _timed(lambda: read_habitat_episodes(R2R_CE))

        lf = json.loads((SAMPLE / "r2r_16_images_4act_debug.json").read_text())
        copies = max(1, count // len(lf))
        export = root / "lf.json"
        export.write_text(json.dumps(lf * copies))
        remap = {"VLN-Ego/data/r2r_training_rgb": str(SAMPLE / "rgb_images_r2r_debug")}
        figures["llama_factory_records"] = len(lf) * copies
        figures["llama_factory_rebuild_load_s"], _ = _timed(lambda: load_episodes(export, path_remap=remap))
    for name, value in figures.items():
        print(f"{name:32s} {value:.3f}" if isinstance(value, float) else f"{name:32s} {value}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
