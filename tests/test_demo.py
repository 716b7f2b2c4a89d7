"""`vln-gym demo`: report from plain data, dependency detection, and the --quick smoke run."""

from __future__ import annotations

import json

import pytest

from agents.demo import DemoSettings, DemoState, _missing_dependency, main, write_demo_report


def _metrics(agent: str, success: float) -> dict:
    keys = ("spl", "oracle_success_rate", "ndtw", "sdtw", "invalid_action_rate")
    return {
        "agent": agent,
        "success_rate": success,
        "navigation_error": 2.5,
        "trajectory_length": 4.0,
        "steps": 20.0,
        "episodes": 10,
        "distance_kind": "geodesic",
        **dict.fromkeys(keys, success),
    }


def test_demo_report_from_plain_state(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"iteration": i, "reward/mean": 0.1 * i, "episode/success_rate": 0.05 * i} for i in range(1, 5)]
    (train / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    state = DemoState(out=tmp_path, settings=DemoSettings.for_mode(quick=True))
    state.results = {"random": _metrics("random", 0.0), "oracle": _metrics("oracle", 1.0)}
    state.train_dir = train
    state.notes = ["SB3 baseline: not built yet (x is missing)"]
    report_md = write_demo_report(state).read_text()
    assert "| random | 0.0% |" in report_md and "| oracle | 100.0% |" in report_md
    assert "![learning curve](learning_curve.png)" in report_md
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert "not built yet (x is missing)" in report_md


def test_missing_dependency_only_for_own_modules():
    own = ModuleNotFoundError("No module named 'vln_gym.world.cli'", name="vln_gym.world.cli")
    assert _missing_dependency(own) == "vln_gym.world.cli is missing"
    assert _missing_dependency(ModuleNotFoundError("x", name="numpy")) is None
    assert "not available yet" in _missing_dependency(RuntimeError("built-in world not available yet"))
    assert _missing_dependency(ValueError("a real bug")) is None
    wrapped = ValueError("cannot build")
    wrapped.__cause__ = NotImplementedError("generate")
    assert _missing_dependency(wrapped) == "not implemented yet (generate)"


@pytest.mark.slow
def test_demo_quick_runs_every_step(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[1/7]" in printed and "[7/7]" in printed
    assert f"report: {out / 'report.md'}" in printed
    assert "not built yet" not in printed and "FAILED" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"random", "oracle", "untrained", "ppo"}
    assert summary["oracle"]["success_rate"] == 1.0
    report_md = (out / "report.md").read_text()
    for label in ("random", "oracle", "ppo"):
        assert f"| {label} |" in report_md
        assert (out / "eval" / label / "trajectories.png").is_file()
    assert (out / "learning_curve.png").is_file()
