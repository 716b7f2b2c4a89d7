"""Fully sharded training on CPU: two gloo processes under FSDP2 (configs/accelerate_fsdp_cpu.yaml) train the
tiny model with full fine-tuning (vision tower included, a KL reference) to the weights one process reaches on
the same samples and resume exactly from their checkpoints; with LoRA (adapters initialised per process, a
frozen vision tower) they reach the weights DDP reaches on per-process samples.

Run as a script (``accelerate launch ... tests/test_ppo_train_fsdp.py FLAGS``) it trains with every process
collecting process 0's samples (`SameSamplesOnEveryProcess`): FSDP's averaged gradient is then exactly one
process's gradient, which is what makes a single-process run comparable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.policy.tiny import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FSDP_CPU = ROOT / "configs" / "accelerate_fsdp_cpu.yaml"
DDP_CPU = ROOT / "configs" / "accelerate_ddp_cpu.yaml"
LORA = ("--use_lora", "true", "--freeze_vision", "true")


class SameSamplesOnEveryProcess:
    """The accelerator as `agents.ppo_train.train` sees it when every process plays process 0 for its env
    seeds, sampling RNG and minibatch order; everything else (collectives, main process) is the real one."""

    process_index = 0

    def __init__(self, accelerator) -> None:
        self._accelerator = accelerator

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)


def train_same_samples(argv: list[str]) -> None:
    from agents.ppo_train import parse_config, train
    from agents.train.rundir import claim_output_dir, release
    from agents.train.sharding import make_accelerator

    config = parse_config(argv)
    accelerator = make_accelerator(config.grad_accum)
    lock = claim_output_dir(config, accelerator)
    try:
        train(config, SameSamplesOnEveryProcess(accelerator))
    finally:
        release(lock)
        accelerator.end_training()


# ---------------------------------------------------------------- helpers of the tests
def flags(output_dir: Path, trajectory: Path, iterations: int, *extra: str) -> list[str]:
    env_kwargs = {
        "data_files": str(trajectory),
        "format": "vln-ego",
        "views": "trajectory",
        "action_space": "text",
        "max_steps": 3,
        "image_size": [56, 56],
    }
    return [
        "--output_dir", str(output_dir), "--num_iterations", str(iterations), "--save_every", "1",
        "--keep_checkpoints", "0", "--num_envs", "2", "--rollout_steps", "2", "--minibatch_size", "2",
        "--grad_accum", "2", "--use_lora", "false", "--freeze_vision", "false", "--kl_coef", "0.05",
        "--no_tensorboard", "--no_progress", "--sft_steps", "0", "--env_kwargs", json.dumps(env_kwargs),
        *extra,
    ]  # fmt: skip


def run(command: list[str], cpu: bool = True) -> None:
    """Run ``command`` in the repo; ``cpu``: ACCELERATE_USE_CPU=1 (gloo DDP / FSDP; not for DeepSpeed)."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


def launch(config_file: Path, target: list[str], run_flags: list[str], cpu: bool = True) -> None:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    run([accelerate, "launch", "--config_file", str(config_file), *target, *run_flags], cpu=cpu)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's policy (full model or adapter, and value head), keyed file:name."""
    found: dict[str, torch.Tensor] = {}
    for path in sorted((checkpoint / "policy").glob("*.safetensors")):
        found.update({f"{path.name}:{k}": v for k, v in load_file(path).items()})
    assert found, f"no weights in {checkpoint / 'policy'}"
    return found


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


# ---------------------------------------------------------------- the tests
@pytest.mark.slow
def test_fsdp_one_iteration_equals_one_process_on_the_same_samples(tmp_path, vln_ego_trajectory):
    sharded, single = tmp_path / "fsdp", tmp_path / "single"
    launch(FSDP_CPU, [str(Path(__file__))], flags(sharded, vln_ego_trajectory, 1))
    run([sys.executable, "-m", "agents.ppo_train", *flags(single, vln_ego_trajectory, 1)])
    checkpoint = sharded / "checkpoint-000001"
    state = trainer_state(checkpoint)
    assert state["num_processes"] == 2
    assert state["parameter_digests"][0] == state["parameter_digests"][1]  # one copy of the weights
    assert_same_weights(checkpoint, single / "checkpoint-000001")
    (sharded_row,), (single_row,) = metrics(sharded), metrics(single)
    assert sharded_row["rollout/decisions"] == 2 * single_row["rollout/decisions"] == 2 * 2 * 2
    for key in ("reward/mean", "response_length", "loss/policy", "loss/value", "grad_norm", "kl/reference"):
        assert sharded_row[key] == pytest.approx(single_row[key], rel=1e-4, abs=1e-7), key
    start = load_file(ensure_tiny_model() / "model.safetensors")
    trained = weights(checkpoint)
    moved = [k for k, v in start.items() if not torch.equal(v, trained[f"model.safetensors:{k}"])]
    assert len(moved) > 0.9 * len(start)  # full fine-tuning: (nearly) every tensor moved


@pytest.mark.slow
def test_fsdp_lora_matches_ddp_on_per_process_samples(tmp_path, vln_ego_trajectory):
    sharded, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    launch(FSDP_CPU, ["-m", "agents.ppo_train"], flags(sharded, vln_ego_trajectory, 1, *LORA))
    launch(DDP_CPU, ["-m", "agents.ppo_train"], flags(ddp, vln_ego_trajectory, 1, *LORA))
    assert (sharded / "checkpoint-000001" / "policy" / "adapter_model.safetensors").is_file()
    assert_same_weights(sharded / "checkpoint-000001", ddp / "checkpoint-000001")
    (sharded_row,), (ddp_row,) = metrics(sharded), metrics(ddp)
    assert sharded_row["rollout/decisions"] == ddp_row["rollout/decisions"] == 2 * 2 * 2
    assert sharded_row["reward/mean"] == ddp_row["reward/mean"]  # the same per-process samples


@pytest.mark.slow
def test_fsdp_resume_continues_exactly(tmp_path, vln_ego_trajectory):
    full, split = tmp_path / "full", tmp_path / "split"  # 2 iterations straight; 1 + resume + 1
    launch(FSDP_CPU, ["-m", "agents.ppo_train"], flags(full, vln_ego_trajectory, 2))
    shutil.copytree(full, split)
    shutil.rmtree(split / "checkpoint-000002")
    rows = metrics(full)
    (split / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (split / "latest").write_text("checkpoint-000001\n")
    resume = ["--resume_from", str(split / "checkpoint-000001")]
    launch(FSDP_CPU, ["-m", "agents.ppo_train"], flags(split, vln_ego_trajectory, 2, *resume))
    assert_same_weights(split / "checkpoint-000002", full / "checkpoint-000002")
    resumed = metrics(split)[1]
    for key in ("reward/mean", "loss/policy", "loss/value", "grad_norm"):
        assert resumed[key] == pytest.approx(rows[1][key], rel=1e-4, abs=1e-7), key


if __name__ == "__main__":
    train_same_samples(sys.argv[1:])
