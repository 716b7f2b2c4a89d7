"""`vln-gym demo`: report from plain data (table, learning curve, honest summary), dependency detection,
and the --quick smoke run."""

from __future__ import annotations

import json
import math

import pytest

from agents.demo import DemoSettings, DemoState, explain, main, write_demo_report


def _metrics(agent: str, success: float, episodes: int = 200) -> dict:
    keys = ("spl", "oracle_success_rate", "ndtw", "sdtw", "invalid_action_rate")
    half = 1.96 * math.sqrt(success * (1 - success) / episodes)
    return {
        "agent": agent,
        "success_rate": success,
        "navigation_error": 2.5,
        "trajectory_length": 4.0,
        "steps": 20.0,
        "reward": -1.5,
        "episodes": episodes,
        "distance_kind": "geodesic",
        "ci95": {"success_rate": [success - half, success + half]},
        **dict.fromkeys(keys, success),
    }


def _state(tmp_path, algo: str = "grpo", **success: float) -> DemoState:
    state = DemoState(out=tmp_path, settings=DemoSettings.for_mode(quick=False, algo=algo))
    state.results = {label.replace("_", "+"): _metrics(label, value) for label, value in success.items()}
    return state


def test_demo_report_from_plain_state(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"iteration": 1, "episode/return": None, "episode/success_rate": None}]  # no episode finished
    rows += [
        {"iteration": i, "episode/return": 0.5 * i, "episode/success_rate": 0.05 * i} for i in range(2, 6)
    ]
    (train / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    state = _state(tmp_path, random=0.0, oracle=1.0)
    state.train_dir = train
    state.heldout_curve = [
        (0, _metrics("sft", 0.1)),
        (10, _metrics("x", 0.2)),
        (20, _metrics("sft+grpo", 0.3)),
    ]
    state.notes = ["Train: skipped (no held-out episodes)"]
    report_md = write_demo_report(state).read_text()
    assert "| agent | SR | SPL | NE (m) | nDTW | reward | steps |" in report_md
    assert "| random | 0.0% | 0.0% | 2.50 | 0.0% | -1.50 | 20.00 |" in report_md
    assert "| oracle | 100.0% |" in report_md
    assert "![learning curve](learning_curve.png)" in report_md
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert "![held-out learning curve](heldout_curve.png)" in report_md
    assert "after GRPO iteration 0, 10, 20 (0 is the imitation-only policy" in report_md
    assert "the last one is `sft+grpo`" in report_md
    assert (tmp_path / "heldout_curve.png").stat().st_size > 1000
    assert "Train: skipped (no held-out episodes)" in report_md
    assert "95% confidence intervals of SR: random 0%-0%, oracle 100%-100%." in report_md


def test_explain_reports_gains_against_the_noise(tmp_path):
    # noise of a difference = 1.96 sqrt(p1 (1 - p1) / 200 + p2 (1 - p2) / 200):
    # 2% vs 13%: 0.050 (5 points); 13% vs 24%: 0.075 (8 points); 13% vs 15%: 0.068 (7 points)
    text = explain(_state(tmp_path, random=0.01, oracle=0.97, untrained=0.02, sft=0.13, sft_grpo=0.24))
    assert "Imitation (SFT) raised success by 11 points (2% -> 13%; noise about +-5 points)" in text
    assert "GRPO on top of it raised success by 11 points (13% -> 24%; noise about +-8 points)" in text
    assert "the random agent: 1%" in text and "far below the oracle (97%)" in text
    assert "The oracle misses 6 of 200 episodes" in text
    flat = explain(_state(tmp_path, "ppo", untrained=0.02, sft=0.13, sft_ppo=0.15))
    assert "PPO on top of it changed success by +2 points, within the noise of 200 episodes" in flat
    assert "(about +-7 points)" in flat
    worse = explain(_state(tmp_path, untrained=0.02, sft=0.30, sft_grpo=0.10))
    assert "GRPO on top of it lowered success by 20 points (30% -> 10%" in worse
    ppo_only = explain(
        _state(tmp_path, untrained=0.02, sft=0.13, sft_ppo=0.30)
    )  # not the run's RL: no finding
    assert "on top of it" not in ppo_only


def test_demo_settings_refuse_an_unknown_algo():
    with pytest.raises(ValueError, match="demo algo must be one of grpo, ppo, got 'dqn'"):
        DemoSettings.for_mode(quick=False, algo="dqn")


@pytest.mark.slow
def test_demo_quick_runs_every_step(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[1/7]" in printed and "[7/7]" in printed
    assert f"{out / 'report.md'}" in printed
    assert "skipped" not in printed and "FAILED" not in printed
    assert "GRPO iteration   1/1: episode reward" in printed  # whole episodes even in the quick run
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["random", "oracle", "untrained", "sft", "sft+grpo"]
    assert summary["oracle"]["success_rate"] == 1.0
    assert summary["random"]["episodes"] == 8
    report_md = (out / "report.md").read_text()
    for label, directory in [
        ("random", "random"),
        ("oracle", "oracle"),
        ("sft", "sft"),
        ("sft+grpo", "sft_grpo"),
    ]:
        assert f"| {label} |" in report_md
        assert (out / "eval" / directory / "maps.png").is_file()
    assert (out / "learning_curve.png").is_file()
    assert (out / "grpo" / "sft_policy").is_dir()
    assert "This is a `--quick` run" in report_md
