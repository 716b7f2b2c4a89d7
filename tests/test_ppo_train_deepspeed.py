"""DeepSpeed ZeRO-2 on CPU (configs/deepspeed_zero2_cpu.yaml, gloo): two processes that collect the same
samples end one PPO iteration of full fine-tuning with the weights one process reaches; what DeepSpeed leaves
``auto`` is filled from the training config, and ZeRO-3 is refused in one line.

The 2-process test needs deepspeed installed (it is not a vln-gym dependency) and skips without it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_ppo_train_fsdp import assert_same_weights, flags, launch, metrics, run, trainer_state

from agents.train.sharding import configure_deepspeed

ROOT = Path(__file__).resolve().parents[1]
ZERO2_CPU = ROOT / "configs" / "deepspeed_zero2_cpu.yaml"
SAME_SAMPLES = ROOT / "tests" / "test_ppo_train_fsdp.py"  # run as a script: every process plays process 0
NO_CLIPPING = ("--max_grad_norm", "1e6")  # DeepSpeed clips all gradients together, the trainer per group


def fake_accelerator(ds_config: dict | None) -> SimpleNamespace:
    plugin = None if ds_config is None else SimpleNamespace(deepspeed_config=ds_config)
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))


def test_configure_deepspeed_fills_auto_values_only():
    ds_config = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}
    configure_deepspeed(fake_accelerator(ds_config), micro_batch_size=4, max_grad_norm=0.5)
    assert ds_config["train_micro_batch_size_per_gpu"] == 4
    assert ds_config["gradient_clipping"] == 0.5
    given = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 2.0}
    configure_deepspeed(fake_accelerator(given), micro_batch_size=4, max_grad_norm=0.5)
    assert given == {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 2.0}
    configure_deepspeed(fake_accelerator(None), micro_batch_size=4, max_grad_norm=0.5)  # not DeepSpeed


def test_configure_deepspeed_refuses_zero3():
    with pytest.raises(ValueError, match=r"ZeRO-3 is not supported.*FSDP"):
        configure_deepspeed(fake_accelerator({"zero_optimization": {"stage": 3}}), 4, 1.0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_zero2_one_iteration_equals_one_process_on_the_same_samples(tmp_path, vln_ego_trajectory):
    sharded, single = tmp_path / "zero2", tmp_path / "single"
    launch(ZERO2_CPU, [str(SAME_SAMPLES)], flags(sharded, vln_ego_trajectory, 1, *NO_CLIPPING), cpu=False)
    run([sys.executable, "-m", "agents.ppo_train", *flags(single, vln_ego_trajectory, 1, *NO_CLIPPING)])
    checkpoint = sharded / "checkpoint-000001"
    state = trainer_state(checkpoint)
    assert state["num_processes"] == 2
    assert state["parameter_digests"][0] == state["parameter_digests"][1]
    assert_same_weights(checkpoint, single / "checkpoint-000001")
    (sharded_row,), (single_row,) = metrics(sharded), metrics(single)
    assert sharded_row["rollout/decisions"] == 2 * single_row["rollout/decisions"]
    for key in ("reward/mean", "loss/policy", "loss/value", "kl/reference"):
        assert sharded_row[key] == pytest.approx(single_row[key], rel=1e-4, abs=1e-7), key
