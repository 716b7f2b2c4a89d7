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
