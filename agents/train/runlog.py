"""What a run writes about itself: metrics.jsonl and TensorBoard (`RunLogger`), the NaN/inf guard, and the
per-iteration rollout statistics reduced over processes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.train.rollout import Decision, RolloutStats
from vln_gym.safe_files import atomic_write_text


class RunLogger:
    """metrics.jsonl (one object per iteration; NaN/inf written as null) + TensorBoard scalars.

    Every row gets ``env_steps``: decisions taken so far by all processes (continued across a resume).
    TensorBoard plots each scalar against ``env_steps`` (the x axis RL curves are compared on), with
    ``iteration`` as one more scalar, and holds the run's config as text."""

    def __init__(
        self,
        output_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        keep_until: int | None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        self.env_steps = 0
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if keep_until is not None and self.path.exists():  # resume: drop rows after the checkpoint
            rows = self.path.read_text(encoding="utf-8").splitlines()
            kept = [row for row in rows if _row_until(row, keep_until)]
            atomic_write_text(self.path, "".join(row + "\n" for row in kept))
            self.env_steps = int(json.loads(kept[-1]).get("env_steps") or 0) if kept else 0
        elif keep_until is None:
            atomic_write_text(self.path, "")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tb"))
            if config is not None:
                text = json.dumps(dict(config), indent=1, default=repr)
                self.writer.add_text("config", f"```\n{text}\n```", global_step=self.env_steps)

    def log(self, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.env_steps += int(metrics.get("rollout/decisions") or 0)
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        clean["env_steps"] = self.env_steps
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if isinstance(value, int | float) and key != "env_steps":
                    self.writer.add_scalar(key, value, self.env_steps)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _row_until(row: str, iteration: int) -> bool:
    """A metrics row of an iteration up to ``iteration`` (a line cut by a kill is dropped)."""
    try:
        value = json.loads(row)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and isinstance(value.get("iteration"), int)
        and value["iteration"] <= iteration
    )


class NonFiniteGuard:
    """Counts consecutive NaN/inf events; raises once ``limit`` is reached, naming the first bad quantity."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.first = limit, 0, None

    def bad(self, what: str, iteration: int) -> None:
        self.first = self.first or f"{what} (iteration {iteration})"
        self.streak += 1
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"training stopped after {self.streak} consecutive NaN/inf events; first bad: {self.first}"
            )

    def good(self) -> None:
        self.streak, self.first = 0, None


def global_sum(accelerator, values: Sequence[float]) -> list[float]:
    """Sum of each entry across processes (identity on one process)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        tensor = accelerator.reduce(tensor, reduction="sum")
    return tensor.cpu().tolist()


def global_max(accelerator, values: Sequence[float]) -> float:
    """Largest value over all processes (-inf when there are none)."""
    tensor = torch.tensor(
        [max(values, default=float("-inf"))], dtype=torch.float64, device=accelerator.device
    )
    if accelerator.num_processes > 1:
        tensor = accelerator.gather(tensor).max()
    return float(tensor.cpu().max())


def global_mean_std(accelerator, values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) std over all processes' values; NaN when there are none."""
    array = np.asarray(values, dtype=np.float64)
    total, total_sq, count = global_sum(accelerator, [array.sum(), (array**2).sum(), array.size])
    if count == 0:
        return float("nan"), float("nan")
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


def global_names(accelerator, names: set[str]) -> list[str]:
    """The union of every process's ``names``, sorted: the metrics that each process then reduces, in the
    same order everywhere (a name only one process has seen, e.g. an episode metric where only it finished
    an episode, would otherwise leave the others out of that collective and hang them all)."""
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        names = set().union(*gather_object([sorted(names)]))
    return sorted(names)


def rollout_metrics(accelerator, decisions: Sequence[Decision], stats: RolloutStats) -> dict[str, float]:
    """Reward / episode / validity statistics of one rollout, averaged over processes."""
    metrics: dict[str, float] = {}
    metrics["reward/mean"], metrics["reward/std"] = global_mean_std(
        accelerator, [d.reward for d in decisions]
    )
    term_names = global_names(
        accelerator, {name for d in decisions for name in d.info.get("reward_terms", {})}
    )
    for name in term_names:
        values = [
            d.info["reward_terms"][name]
            for d in decisions
            if d.info.get("reward_terms", {}).get(name) is not None
        ]
        metrics[f"reward_terms/{name}"] = global_mean_std(accelerator, values)[0]
    invalid = [float(bool(d.info.get("invalid_action", False))) for d in decisions]
    metrics["invalid_action_rate"] = global_mean_std(accelerator, invalid)[0]
    metrics["response_length"] = global_mean_std(accelerator, [len(d.response_ids) for d in decisions])[0]
    metrics["episode/return"] = global_mean_std(accelerator, stats.episode_returns)[0]
    metrics["episode/length"] = global_mean_std(accelerator, stats.episode_lengths)[0]
    metrics["episode/count"] = global_sum(accelerator, [len(stats.episode_lengths)])[0]
    metrics["episode/max_length"] = max(global_max(accelerator, stats.episode_lengths), 0.0)
    metrics["episode/carried_over"] = global_sum(accelerator, [stats.carried_over])[0]
    success = [float(d.info.get("success", False)) for d in decisions if d.done]
    metrics["episode/success_rate"] = global_mean_std(accelerator, success)[0]
    metric_names = global_names(accelerator, {k for m in stats.episode_metrics for k in m} - {"success"})
    for name in metric_names:
        values = [m[name] for m in stats.episode_metrics if name in m]
        metrics[f"episode/{name}"] = global_mean_std(accelerator, values)[0]
    return metrics
