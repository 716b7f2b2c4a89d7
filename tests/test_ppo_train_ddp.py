"""Data-parallel training on CPU: two processes (gloo DDP) end with identical policy parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_keeps_parameters_identical(tmp_path, vln_ego_trajectory):
    env_kwargs = {
        "data_files": str(vln_ego_trajectory),
        "format": "vln-ego",
        "views": "trajectory",
        "action_space": "text",
        "max_steps": 3,
        "image_size": [56, 56],
    }
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate_ddp_cpu.yaml"),
        "-m",
        "agents.ppo_train",
        "--output_dir",
        str(tmp_path / "run"),
        "--num_iterations",
        "1",
        "--num_envs",
        "2",
        "--rollout_steps",
        "2",
        "--minibatch_size",
        "2",
        "--grad_accum",
        "2",
        "--no_tensorboard",
        "--no_progress",
        "--sft_steps",
        "0",
        "--env_kwargs",
        json.dumps(env_kwargs),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint-000001" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2
    first, second = state["parameter_digests"]
    assert first == second  # different env shards per process, yet DDP kept the weights equal
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["rollout/decisions"] == 2 * 2 * 2  # processes x envs x steps, summed over processes
    assert rows[0]["optimizer_steps"] == 2 * 2  # 4 local decisions / minibatch 2, 2 epochs


ROLLOUT_METRICS_SCRIPT = """
import json, sys, types
import torch
from accelerate import Accelerator
from agents.train.rollout import RolloutStats
from agents.train.runlog import rollout_metrics

accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
# Only process 0 finished an episode and met a collision: metric and term names differ by process.
terms = {"progress": 0.1, **({"collision": -0.1} if rank == 0 else {})}
decision = types.SimpleNamespace(
    reward=1.0 + rank, info={"reward_terms": terms}, response_ids=torch.zeros(2), done=rank == 0
)
stats = RolloutStats()
if rank == 0:
    stats.episode_returns, stats.episode_lengths = [1.0], [3]
    stats.episode_metrics = [{"success": 1.0, "spl": 0.5, "ndtw": 0.75}]
metrics = rollout_metrics(accelerator, [decision], stats)
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as handle:  # two processes' stdout may interleave
    json.dump(metrics, handle)
accelerator.end_training()  # the process group down before exit (else gloo may abort at exit)
"""


@pytest.mark.slow
def test_rollout_metrics_do_not_hang_when_processes_saw_different_names(tmp_path):
    """Before: an episode metric or reward term seen by one process only left the other out of that
    reduction, and both waited forever (the README's DDP example with 2 envs x 2 steps hung)."""
    script = tmp_path / "metrics_script.py"
    script.write_text(ROLLOUT_METRICS_SCRIPT)
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate_ddp_cpu.yaml"),
        str(script),
        str(tmp_path),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert rows[0] == rows[1]
    assert rows[0]["episode/spl"] == 0.5 and rows[0]["reward_terms/collision"] == -0.1
    assert rows[0]["episode/count"] == 1 and rows[0]["reward/mean"] == 1.5
