"""Benchmark scripts: the formulas and helpers they report with, and smoke runs in tiny configurations."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_test_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script: str, *argv: str, timeout: int = 600) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_update_flops_hand_computed():
    bench_gpu = _load("bench_gpu")
    text = SimpleNamespace(
        hidden_size=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=8,
        num_hidden_layers=1,
        vocab_size=10,
        head_dim=None,
    )
    # head_dim 2: q 4x4, k 4x2, v 4x2, o 4x4 = 48; MLP 3 * 4 * 8 = 96.
    assert bench_gpu.linear_params_per_layer(text) == 144
    flops = bench_gpu.update_flops(text, sequence_lengths=[3], response_tokens=1)
    # dense 2*144*3 = 864, attention 2*4*3^2 = 72, lm_head 2*4*10*1 = 80.
    assert flops["forward"] == 864 + 72 + 80
    assert flops["lora"] == 2 * 1016
    assert flops["full_ft"] == 3 * 1016


def test_qwen2_vl_2b_config_dimensions():
    bench_gpu = _load("bench_gpu")
    tiny = SimpleNamespace(
        text_config=SimpleNamespace(bos_token_id=1, eos_token_id=2, pad_token_id=1),
        image_token_id=7,
        video_token_id=8,
        vision_start_token_id=5,
        vision_end_token_id=6,
    )
    config = bench_gpu.qwen2_vl_2b_config(tiny)
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (1536, 28, 12)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (2, 8960, 151936)
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    vision = config.vision_config
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size) == (32, 1280, 16, 1536)
    assert (vision.patch_size, vision.spatial_merge_size) == (14, 2)
    assert config.image_token_id == 7 and config.vision_end_token_id == 6


def test_peak_flops_override_and_cpu():
    import torch

    bench_gpu = _load("bench_gpu")
    assert bench_gpu.peak_flops(torch.device("cpu"), None)[0] is None
    assert bench_gpu.peak_flops(torch.device("cpu"), 100.0) == (100e12, "--peak-tflops")


def test_variant_figures_medians_and_split():
    bench_train = _load("bench_train")
    reports = [
        {"samples": 8, "generated_tokens": 40, "wall_s": wall, "split": {"generation": g, "env": 0.1}}
        for wall, g in ((2.0, 1.0), (1.0, 0.5), (4.0, 2.0))
    ]
    figures = bench_train.variant_figures(reports)
    assert figures["iteration_s"] == {"median": 2.0, "min": 1.0, "max": 4.0}
    assert figures["samples_per_s"] == 4.0  # median of 4, 8, 2
    assert figures["generated_tokens_per_s"] == 20.0
    assert figures["split_s"]["generation"] == 1.0
    assert figures["split_s"]["other"] == pytest.approx(2.0 - 1.0 - 0.1)
    assert figures["split_share"]["env"] == pytest.approx(0.05)


def test_bench_dataset_keeps_two_frame_records(tmp_path):
    bench_train = _load("bench_train")
    path = bench_train.bench_dataset(tmp_path, records=6, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6
    assert all(len(row["images"]) == 2 for row in rows)
    assert len({row["id"] for row in rows}) == 6
    assert all((path.parent / image).is_file() for row in rows for image in row["images"])


def test_bench_gpu_runs_tiny_on_cpu():
    result = _run(
        "bench_gpu.py",
        *("--device", "cpu", "--tiny", "--batch", "2", "--minibatch", "1", "--max-new-tokens", "3"),
        *("--rollout-reps", "1", "--update-reps", "1", "--threads", "1"),
    )
    assert result["benchmark"] == "bench_gpu" and result["device"] == "cpu"
    assert result["batch"] == 2 and result["frames"] == 2
    assert 1 <= result["response_tokens_max"] <= 3
    assert result["rollout_tokens_per_s"] > 0 and result["update_samples_per_s"] > 0
    assert result["update_model_flops_lora"] > 0
    assert result["update_model_flops_full_ft"] == pytest.approx(1.5 * result["update_model_flops_lora"])
    assert result["update_mfu"] is None and result["peak_gpu_gib"] is None
    assert result["peak_rss_mb"] > 0


@pytest.mark.slow
def test_bench_train_quick_runs_all_variants():
    result = _run("bench_train.py", "--quick")
    assert result["benchmark"] == "bench_train"
    assert set(result["variants"]) == {"grpo", "ppo", "trl"}
    for figures in result["variants"].values():
        assert figures["samples_per_iteration"] == 4  # 2 prompts x 2 generations
        assert 0 < figures["generated_tokens_per_iteration"] <= 4 * 4
        assert figures["samples_per_s"] > 0 and figures["peak_rss_mb"] > 0
        assert min(figures["split_s"].values()) >= 0
    expected = result["variants"]["grpo"]["samples_per_s"] / result["variants"]["trl"]["samples_per_s"]
    assert result["ratio_grpo_over_trl"] == pytest.approx(expected)
    assert 0 <= result["env_share_grpo"] < 1


def test_bench_data_loads_every_format():
    result = _run("bench_data.py", "--records", "200")
    assert result["records"] == 200
    for name in ("sharegpt", "vlm_r1", "own", "streamvln", "navila"):
        assert result[f"{name}_load_s"] > 0 and result[f"{name}_over_json"] > 0
    assert result["parquet_load_s"] > 0 and result["dataset_info_load_s"] > 0


def test_perception_probe_plans_in_the_env_kinematics():
    from agents.policy.grammar import ActionGrammar
    from vln_gym.geometry import MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, apply_action

    probe = _load("probe_perception")
    grammar = ActionGrammar("amount", 8, 0.5, 45.0)
    start, heading = (1.0, 0.0, 2.0), 0.3
    for turn in (TURN_LEFT, TURN_RIGHT):
        position, facing = apply_action(start, heading, turn, 0.5, 90.0)
        for _ in range(3):
            position, facing = apply_action(position, facing, MOVE_FORWARD, 0.5, 90.0)
        info = {"agent_position": start, "agent_heading": heading, "goal_position": position}
        left, forward = probe.goal_in_agent_frame(info)
        assert abs(abs(left) - 1.5) < 1e-9 and abs(forward) < 1e-9 and (left > 0) == (turn == TURN_LEFT)
        side = "left" if turn == TURN_LEFT else "right"
        answer = f"turn {side} 90 degrees, move forward 150 cm, stop"
        assert probe.plan_towards(left, forward, grammar) == answer
    assert probe.plan_towards(0.1, 6.0, grammar).count("stop") == 0  # 12 steps: the answer holds 8


def test_perception_probe_runs_and_the_true_goal_plan_succeeds():
    result = _run("probe_perception.py", "--pairs", "64", "--steps", "3", "--eval-episodes", "10")
    assert result["true_goal_success"] >= 0.6 and result["true_goal_rms_error_m"] == 0.0
    for name in ("vision", "blind"):
        assert 0.0 <= result[f"{name}_success"] <= 1.0 and result[f"{name}_rms_error_m"] > 0.0
    assert result["pairs"] == 64 and result["world_episodes"] == 2000
