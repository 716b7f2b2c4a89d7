"""`vln-gym evaluate` under misuse: a policy on another env than it trained on, --overwrite, Ctrl-C, failed
runs, a file as --out, and intervals that leave a metric's range."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.eval import evaluate as evaluate_module
from agents.eval.agent import AgentError
from agents.eval.decisions import aggregate_decisions
from agents.eval.evaluate import OUTPUT_NAMES, aggregate_metrics, evaluate, main

TRAINING_ENV = {"action_space": "text", "world_config": "easy", "image_size": [32, 32], "expert_plan": "full"}
ORACLE = ["--agent", "oracle", "--episodes", "2", "--env-kwargs", '{"world_config": "easy"}']


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run dir as `vln-gym train` leaves it: ``latest`` -> checkpoint-000001 with the tiny policy (an
    amount grammar in the easy level's 0.5 m / 45 degree units) and the trainer_state of its config."""
    from agents.policy.grammar import ActionGrammar
    from agents.policy.model import VLMPolicy
    from agents.policy.tiny import ensure_tiny_model

    run = tmp_path_factory.mktemp("run")
    checkpoint = run / "checkpoint-000001"
    grammar = ActionGrammar("amount", 2, 0.5, 45.0)
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), constrained_actions=True, action_grammar=grammar
    )
    policy.save_pretrained(checkpoint / "policy")
    state = {"iteration": 1, "config": {"env_kwargs": {**TRAINING_ENV, "world_episodes": 2000}}}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    (run / "latest").write_text("checkpoint-000001\n")
    return run


# ------------------------------------------------------------------ 1: the policy's own env and units


def test_policy_without_env_kwargs_runs_its_training_env_on_the_held_out_world(trained_run, tmp_path):
    out = tmp_path / "ev"
    result = evaluate("policy", checkpoint=trained_run, num_episodes=1, out_dir=out, plots=False)
    used = json.loads((out / "metrics.json").read_text())["env_kwargs"]
    assert used == {**TRAINING_ENV, "world_seed": 1000, "world_episodes": 100}
    record = result.episodes[0]
    assert "-s1000-" in record["id"]  # the held-out world, not the training one
    assert len(record["outputs"]) <= 12  # the easy level's decision budget, not the default 500
    assert '"world_config": "easy"' in (out / "report.md").read_text()
    assert "trainer_state.json" in result.metrics["env_source"]
    assert "episodes not used" not in result.metrics["env_source"]


def test_a_policy_trained_on_data_files_is_told_its_episodes_are_not_used(trained_run, tmp_path):
    state_file = trained_run / "checkpoint-000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["config"]["env_kwargs"]["data_files"] = "train.jsonl"
    state_file.write_text(json.dumps(state))
    result = evaluate("policy", checkpoint=trained_run, num_episodes=1, plots=False)
    assert "data_files" not in result.metrics["env_kwargs"]
    assert result.metrics["env_source"].endswith("(its episodes not used: --data evaluates on a dataset)")


def test_policy_on_env_kwargs_with_other_units_is_refused_naming_both(trained_run, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["--agent", "policy", "--checkpoint", str(trained_run), "--out", str(out), "--episodes", "1"]
    assert main([*argv, "--env-kwargs", '{"action_space": "text"}']) == 2
    line = _one_line(capsys)
    assert "steps of 0.5 m and turns of 45 degrees" in line
    assert "forward_step is 0.25 and turn_angle 15" in line
    assert not out.exists()
    with pytest.raises(AgentError, match="would mean other distances"):
        evaluate("policy", checkpoint=trained_run, env_kwargs={"world_config": "medium"}, num_episodes=1)


def test_metrics_record_the_env_kwargs_of_a_scripted_agent(tmp_path):
    result = evaluate("oracle", num_episodes=1, out_dir=tmp_path / "ev", plots=False)
    assert result.metrics["env_kwargs"] == {
        "world_seed": 1000,
        "world_episodes": 100,
        "action_space": "discrete",
    }
    assert "held-out built-in world's defaults" in (tmp_path / "ev" / "report.md").read_text()


# ------------------------------------------------------------------ 2: --overwrite replaces the whole set


def test_overwrite_removes_the_earlier_outputs_it_does_not_rewrite(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main([*ORACLE, "--out", str(out)]) == 0
    assert (out / "maps.png").is_file() and (out / "frames.png").is_file()
    assert main([*ORACLE, "--out", str(out), "--no-plots", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["episodes.jsonl", "metrics.json", "report.md"]


def test_overwrite_onto_a_new_folder_writes_it(tmp_path, capsys):
    out = tmp_path / "new" / "ev"
    assert main([*ORACLE, "--out", str(out), "--no-plots", "--overwrite"]) == 0
    assert (out / "report.md").is_file()


def test_overwrite_refuses_a_folder_holding_a_users_file(tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("old")
    assert main([*ORACLE, "--out", str(out), "--overwrite"]) == 2
    assert "holds notes.txt" in _one_line(capsys)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").read_text() == "old"


# ------------------------------------------------------------------ 3: Ctrl-C


def _main(argv: list[str]) -> int:
    """``main(argv)``; a KeyboardInterrupt escaping it fails the test (instead of stopping pytest)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped vln-gym evaluate")


def _interrupt_while_writing(monkeypatch) -> None:
    """Ctrl-C once metrics.json and episodes.jsonl are written, as the report is being written."""

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module.report, "write_markdown", interrupted)


def test_ctrl_c_while_writing_leaves_nothing_and_a_rerun_works(tmp_path, capsys, monkeypatch):
    out = tmp_path / "new" / "ev"
    _interrupt_while_writing(monkeypatch)
    assert _main([*ORACLE, "--out", str(out), "--no-plots"]) == 130
    assert _one_line(capsys) == f"vln-gym evaluate: interrupted; nothing written to {out}"
    assert not (tmp_path / "new").exists()  # the folders this run created are gone
    monkeypatch.undo()
    assert main([*ORACLE, "--out", str(out), "--no-plots"]) == 0


def test_ctrl_c_with_overwrite_keeps_the_earlier_results_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    assert main([*ORACLE, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _interrupt_while_writing(monkeypatch)
    assert _main([*ORACLE, "--out", str(out), "--seed", "3", "--overwrite"]) == 130
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_ctrl_c_during_the_swap_is_held_until_the_set_is_complete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    real_replace = os.replace

    def replace_then_interrupt(source, target):  # a Ctrl-C in the middle of moving the files in
        real_replace(source, target)
        if Path(target).parent == out:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(evaluate_module.os, "replace", replace_then_interrupt)
    assert _main([*ORACLE, "--out", str(out), "--no-plots"]) == 130
    assert _one_line(capsys) == f"vln-gym evaluate: interrupted; the results are complete in {out}"
    assert sorted(p.name for p in out.iterdir()) == ["episodes.jsonl", "metrics.json", "report.md"]


def test_sigint_to_a_running_evaluate_exits_130_with_one_line(tmp_path):
    out = tmp_path / "ev"
    argv = [sys.executable, "-c", "import sys; from agents.eval.evaluate import main; sys.exit(main())"]
    argv += ["--agent", "random", "--all", "--no-plots", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the folder appears once the episodes load, before the first one runs
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # a no-op once it has exited
    assert process.returncode == 130, err
    assert err.strip() == f"vln-gym evaluate: interrupted; nothing written to {out}"
    assert not out.exists()


# ------------------------------------------------------------------ 4: failed runs leave no folder


@pytest.mark.parametrize(
    "argv",
    [["--agent", "foo"], ["--agent", "policy"], ["--agent", "sb3", "--checkpoint", "NOTZIP"]],
    ids=["unknown-agent", "policy-without-checkpoint", "sb3-not-a-zip"],
)
def test_a_failed_run_removes_the_out_folder_it_created(argv, tmp_path, capsys):
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    argv = [str(not_zip) if a == "NOTZIP" else a for a in argv]
    out = tmp_path / "a" / "ev"
    assert main([*argv, "--episodes", "1", "--out", str(out)]) == 2
    _one_line(capsys)
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)  # a user's own empty folder stays
    assert main([*argv, "--episodes", "1", "--out", str(out)]) == 2
    capsys.readouterr()
    assert out.is_dir()


# ------------------------------------------------------------------ 5: a file as --out


@pytest.mark.parametrize("extra", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_out_that_is_a_file_is_named_as_one(extra, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep")
    assert main([*ORACLE, "--out", str(target), *extra]) == 2
    assert _one_line(capsys).endswith(f"--out {target}: is a file, not a folder")
    assert target.read_text() == "keep"


# ------------------------------------------------------------------ 6: intervals inside each metric's range


def test_intervals_stay_inside_the_metrics_ranges():
    def episode(success: float, ne: float, length: float, steps: int) -> dict:
        metrics = {"success": success, "spl": success, "oracle_success": success, "navigation_error": ne}
        metrics.update(trajectory_length=length, ndtw=success, sdtw=success, steps=steps)
        return {**metrics, "invalid_action_rate": 0.0, "reward": -1.0, "distance_kind": "euclidean"}

    result = aggregate_metrics(
        [episode(1.0, 0.0, 0.0, 1), episode(0.0, 0.2, 2.5, 9), episode(1.0, 0.0, 0.0, 1)]
    )
    for key in ("trajectory_length", "navigation_error", "steps"):
        assert result["ci95"][key][0] == 0.0, key  # the normal approximation alone goes below 0
    for key in ("spl", "ndtw", "sdtw"):
        assert result["ci95"][key][0] >= 0.0 and result["ci95"][key][1] == 1.0, key
    decisions = [
        {"invalid_answer": False, "progress": -0.5, "first_action_accuracy": v, "sequence_accuracy": v}
        | {"time_decayed_match": v}
        for v in (1.0, 0.0, 1.0)
    ]
    assert aggregate_decisions(decisions)["ci95"]["time_decayed_match"][1] == 1.0


def test_report_states_the_interval_method(tmp_path):
    evaluate("oracle", num_episodes=2, out_dir=tmp_path / "ev", plots=False)
    assert "clipped at each metric's natural bounds" in (tmp_path / "ev" / "report.md").read_text()


def test_output_names_cover_every_file_evaluate_writes(tmp_path):
    evaluate("oracle", num_episodes=2, out_dir=tmp_path / "ev")
    assert {p.name for p in (tmp_path / "ev").iterdir()} <= set(OUTPUT_NAMES)
