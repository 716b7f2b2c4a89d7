"""Benchmark of the data layer: load / validate / convert 10k-record files (prints figures; last line JSON).

.venv/bin/python scripts/bench_data.py [--records 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vln_gym.data import episodes_dataset, load_episodes, validate_files, write_episodes_jsonl

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vln-ego-sample"


def _sharegpt_records(count: int) -> list[dict]:
    records = []
    for index in range(count):
        images = [f"frames/ep_{index % 500}/step_{k}.jpg" for k in range(17)]
        prompt = f"Your instruction is 'walk past the sofa and stop at door {index}'.\n" + "<image> " * 17
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


def _timed(function, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args(argv)
    figures: dict[str, float] = {"records": args.records}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sharegpt = root / "sharegpt.jsonl"
        sharegpt.write_text("\n".join(json.dumps(r) for r in _sharegpt_records(args.records)) + "\n")
        seconds, episodes = _timed(lambda: load_episodes(sharegpt))
        figures["sharegpt_load_s"] = seconds
        figures["sharegpt_validate_s"], _ = _timed(lambda: validate_files(sharegpt))
        own = root / "own.jsonl"
        figures["own_write_s"], _ = _timed(
            lambda: write_episodes_jsonl(episodes, own, media_dir=root), repeat=1
        )
        figures["own_load_s"], _ = _timed(lambda: load_episodes(own))
        cache = root / "cache"
        figures["dataset_cold_s"], _ = _timed(lambda: episodes_dataset(own, cache_dir=cache), repeat=1)
        figures["dataset_warm_s"], dataset = _timed(lambda: episodes_dataset(own, cache_dir=cache))
        assert dataset.num_rows == args.records

        lf = json.loads((SAMPLE / "r2r_16_images_4act_debug.json").read_text())
        copies = max(1, args.records // len(lf))
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
