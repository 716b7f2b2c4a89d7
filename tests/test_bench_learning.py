"""scripts/bench_learning.py: its options, pooled intervals, the medium preset, and a quick end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from agents import presets
from vln_gym.world.levels import LEVELS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learning"] = module  # spawned workers pickle run_seed by module name
    spec.loader.exec_module(module)
    return module


def test_overrides_are_read_as_json_where_they_parse(bench):
    assert bench.parse_overrides(["lr=3e-4", "ppo_epochs=4", "grpo_start=reset", "use_lora=false"]) == {
        "lr": 3e-4,
        "ppo_epochs": 4,
        "grpo_start": "reset",
        "use_lora": False,
    }
    with pytest.raises(SystemExit, match="key=value"):
        bench.parse_overrides(["lr"])


def test_repeated_seeds_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0", "0"])


def test_pooled_success_interval_covers_every_seed_episode(bench):
    rows = [
        {"sft": {"success": [1.0, 0.0, 0.0, 0.0], "spl": [0.8, 0, 0, 0], "reward": [1, 0, 0, 0]}},
        {"sft": {"success": [1.0, 1.0, 0.0, 0.0], "spl": [0.5, 0.5, 0, 0], "reward": [1, 1, 0, 0]}},
    ]
    row = bench.pooled(rows, "sft")
    assert row["episodes"] == 8 and row["success"] == pytest.approx(3 / 8)
    assert row["per_seed_success"] == [0.25, 0.5]
    lo, hi = row["success_ci"]
    assert 0.0 < lo < 3 / 8 < hi < 1.0
    spl_lo, spl_hi = row["spl_ci"]
    assert row["spl"] == pytest.approx(1.8 / 8) and spl_lo < row["spl"] < spl_hi
    rare = bench.pooled(
        [{"sft": {"success": [1.0] + [0.0] * 99, "spl": [1.0] + [0.0] * 99, "reward": [0] * 100}}], "sft"
    )
    assert rare["spl_ci"][0] == 0.0  # clipped: mean - 1.96 sem is below 0, SPL cannot be


def test_medium_preset_uses_the_medium_level():
    kwargs = presets.level_env_kwargs("medium")
    medium = LEVELS["medium"]
    assert kwargs["max_steps"] == medium.max_steps and kwargs["forward_step"] == medium.forward_step
    assert kwargs["world_config"] == medium.world and kwargs["history_frames"] <= 16
    held = presets.heldout_env_kwargs(2, level="medium")
    assert [e.episode_id for e in held["episodes"]] == [
        f"world-s{presets.HELDOUT_WORLD_SEED}-e{i}" for i in range(2)
    ]
    assert presets.heldout_env_kwargs(2)["max_steps"] == presets.MAX_STEPS  # easy stays the default
    grpo = presets.learning_config("unused", "grpo", level="medium")
    assert grpo.grpo_start == "expert_prefix" and grpo.grpo_turn_budget is not None
    with pytest.raises(ValueError, match="unknown benchmark level 'hard'; levels: easy, medium"):
        presets.level_env_kwargs("hard")


@pytest.mark.slow
def test_quick_run_prints_every_agent_with_intervals(bench, tmp_path, capsys):
    argv = ["--quick", "--seeds", "0", "--eval-episodes", "3", "--heldout-pairs", "8"]
    argv += ["--out", str(tmp_path / "bench"), "--set", "sft_samples=32", "sft_steps=2"]
    assert bench.main([*argv, "--grpo-iterations", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    agents = ("random", "oracle", "instruction-only script", "untrained", "sft", "sft, no frames")
    agents += ("sft, no instruction",)
    for agent in (*agents, "sft+ppo", "sft+grpo"):
        assert summary[f"{agent}/episodes"] == 3
        lo, hi = summary[f"{agent}/success_ci"]
        assert 0.0 <= lo <= summary[f"{agent}/success"] <= hi <= 1.0
    assert summary["sft_steps"] == 2 and summary["overrides"]["sft_samples"] == 32
    assert summary["rl_iterations"] == 1 and summary["grpo_iterations"] == 2
    assert set(summary["cpu_seconds"]) == {"sft", "ppo", "grpo"}


def test_instruction_only_script_turns_as_the_opening_clause_says(bench):
    script = bench.OpeningTurnScript()
    frames = {"frames": None, "frame_mask": None}
    expected = {
        "Turn left, then go forward and stop by the cyan pillar.": [2, 2, 1, 1, 1, 1, 0],
        "Turn to your right and stop in front of the door.": [3, 3, 1, 1, 1, 1, 0],
        "Turn around, then walk forward. Take a left at the red door.": [2, 2, 2, 1, 1, 1, 1, 0],
        "Go forward and wait in the centre of the blue room. Then turn left.": [1, 1, 1, 1, 0],
    }
    for instruction, plan in expected.items():
        script.reset()
        assert [script.act({**frames, "instruction": instruction}, {}) for _ in plan] == plan, instruction


def test_grpo_runs_start_where_the_preset_does_unless_told(bench, tmp_path):
    def runs(*argv):
        args = bench.parse_args(list(argv))
        overrides = {"seed": 0, **({"num_iterations": args.iterations} if args.iterations else {})}
        return [
            (name, config.grpo_start, config.num_iterations, Path(config.output_dir).name)
            for name, config in bench.grpo_configs(args, tmp_path, overrides, str(tmp_path / "sft"))
        ]

    easy = presets.GRPO_ITERATIONS[False]
    assert runs() == [("sft+grpo", "reset", easy, "grpo")]  # easy: whole short episodes per group
    assert runs("--level", "medium") == [("sft+grpo", "expert_prefix", easy, "grpo")]
    assert runs("--grpo-starts", "expert_prefix", "reset", "--iterations", "7") == [
        ("sft+grpo(expert_prefix)", "expert_prefix", 7, "grpo_expert_prefix"),
        ("sft+grpo(reset)", "reset", 7, "grpo_reset"),
    ]
    assert runs("--iterations", "7", "--grpo-iterations", "3")[0][2] == 3
