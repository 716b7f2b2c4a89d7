"""Benchmark: text-action parsing rate (cached and uncached), reward composite and episode metrics.

Run ``python -m scripts.bench_actions``; the last output line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from rewards.composite import make_reward
from rewards.transition import Transition
from vln_gym import actions
from vln_gym.metrics import episode_metrics

TEXTS = [
    "move forward",
    "turn left 30 degrees",
    "<think>The door is ahead.</think><answer>move forward 75 cm</answer>",
    "C. Turn right 30 degrees, C. Turn right 30 degrees, A. Move forward 25 cm, A. Move forward 25 cm",
    "↑↑←STOP",
    "fly to the moon",
]


def _rate(function: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return repeats / (time.perf_counter() - start)


def main() -> None:
    uncached = actions._parse_cached.__wrapped__  # the parser without its LRU cache

    def parse_uncached() -> None:
        for text in TEXTS:
            uncached(text, 0.25, 15.0, None, 32)

    def parse_public() -> None:
        for text in TEXTS:
            actions.parse_action(text)

    figures = {
        "parse_uncached_per_s": round(_rate(parse_uncached, 5000) * len(TEXTS)),
        "parse_cached_per_s": round(_rate(parse_public, 20000) * len(TEXTS)),
    }
    reward = make_reward()
    step = Transition((0, 0, 0), 0.0, (0, 0, -0.25), 0.0, (0, 0, -5), 5.0, 4.75, actions=(1,), text="forward")
    figures["reward_calls_per_s"] = round(_rate(lambda: reward(step), 50000))
    path = [(0.0, 0.0, -0.25 * (i // 2)) for i in range(500)]  # 500 steps, half of them turns
    reference = [(0.0, 0.0, -0.5 * i) for i in range(60)]
    figures["episode_metrics_ms_500x60"] = round(
        1000.0 / _rate(lambda: episode_metrics(path, reference, (0, 0, -30), True, 30.0), 20), 2
    )
    for name, value in figures.items():
        print(f"{name:>28}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options
    main()
