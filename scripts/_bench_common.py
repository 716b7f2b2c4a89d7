"""Helpers shared by the training / GPU benchmarks: thread limits, peak memory, synthetic observations."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

INSTRUCTIONS = (
    "Walk past the red pillar, turn left into the blue room and stop by the door.",
    "Go straight down the corridor and wait next to the green box.",
    "Turn right, exit the kitchen and stop in front of the yellow wall.",
    "Head forward towards the plant, then turn left and stop near the table.",
)


def limit_threads(threads: int) -> None:
    """Pin BLAS / OpenMP / torch intra-op threads to ``threads`` (call before heavy work starts)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_observations(
    count: int, *, frames: int = 2, size: tuple[int, int] = (224, 224), seed: int = 0
) -> list[dict[str, Any]]:
    """``count`` env-shaped observations with ``frames`` valid random frames each (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    observations = []
    for index in range(count):
        observations.append(
            {
                "frames": rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8),
                "frame_mask": np.ones(frames, dtype=np.int8),
                "instruction": INSTRUCTIONS[index % len(INSTRUCTIONS)],
            }
        )
    return observations


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements (the median is the figure to quote)."""
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def print_result(result: Mapping[str, Any]) -> None:
    """The benchmark contract: the last output line is one JSON object."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False), flush=True)
