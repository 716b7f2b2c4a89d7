"""A training run owns its output dir and checkpoints are checked before anything is touched: no run can
destroy another's data, and corrupt or incompatible checkpoints are refused with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_ppo_train import read_metrics, small_config

from agents.ppo_train import PPOConfig, main, ppo_train
from agents.train.checkpoint import CheckpointError, list_checkpoints, resolve_checkpoint
from agents.train.rundir import LOCK_NAME, RunDirError, acquire, release

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, env_kwargs) -> Path:
    """A finished 2-iteration run with checkpoints at 1 and 2 (copied by tests that damage it)."""
    root = tmp_path_factory.mktemp("finished")
    ppo_train(small_config(root, env_kwargs, save_every=1, keep_checkpoints=0))
    return root / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# ---------------------------------------------------------------- ownership of the run dir
def test_second_writer_is_refused_while_the_owner_lives(tmp_path):
    lock, _ = acquire(tmp_path, resume=False, overwrite=False)
    try:
        with pytest.raises(RunDirError, match=rf"in use by another trainer \(pid {os.getpid()} on"):
            acquire(tmp_path, resume=False, overwrite=False)
    finally:
        release(lock)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_dead_owners_lock_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    owner = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(owner))
    lock, _ = acquire(tmp_path, resume=False, overwrite=False)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release(lock)


def test_fresh_run_on_an_old_one_is_refused_then_overwritten(tmp_path, env_kwargs, finished_run, capsys):
    run = _copy(finished_run, tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    settings = {"output_dir": str(run), "num_iterations": 1, "save_every": 0}
    with pytest.raises(RunDirError, match=r"already holds a run .*--resume_from .*--overwrite_output_dir"):
        ppo_train(small_config(tmp_path, env_kwargs, **settings))
    assert (run / "metrics.jsonl").read_bytes() == before  # nothing touched
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001", "checkpoint-000002"]
    assert not (run / LOCK_NAME).exists()
    ppo_train(small_config(tmp_path, env_kwargs, overwrite_output_dir=True, **settings))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]  # the old run is gone, whole
    assert [r["iteration"] for r in read_metrics(run)] == [1]
    assert resolve_checkpoint(run).name == "checkpoint-000001"


def test_rotation_deletes_only_this_runs_checkpoints(tmp_path):
    """A run resumed into a dir that holds another run's checkpoints rotates only its own."""
    from agents.train.checkpoint import rng_state, save_checkpoint

    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def save(iteration: int, run_id: str) -> None:
        save_checkpoint(
            tmp_path,
            iteration,
            save_policy=lambda path: path.mkdir(parents=True),
            optimizer=optimizer,
            scheduler=scheduler,
            trainer_state={"fingerprint": {}, "run_id": run_id},
            rng_states=[rng_state()],
            keep_last=1,
        )

    save(7, "other")
    for iteration in (1, 2, 3):
        save(iteration, "ours")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000003", "checkpoint-000007"]


def test_leftovers_of_a_killed_run_are_removed_and_a_cut_metrics_line_dropped(
    tmp_path, env_kwargs, finished_run
):
    run = _copy(finished_run, tmp_path)
    (run / ".tmp-checkpoint-000003-abc").mkdir()
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"iteration": 3, "reward/me')  # killed mid-line
    ppo_train(
        small_config(tmp_path, env_kwargs, num_iterations=2, resume_from=str(run / "checkpoint-000001"))
    )
    assert not list(run.glob(".tmp-checkpoint-*"))
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2]


# ---------------------------------------------------------------- checkpoints checked before use
def test_trainer_state_outside_the_run_is_refused_before_anything(tmp_path, env_kwargs, finished_run):
    run = _copy(finished_run, tmp_path)
    state_file = run / "checkpoint-000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    metrics = (run / "metrics.jsonl").read_bytes()
    for bad, message in (
        (99, "iteration 99 is past this run's num_iterations=2"),
        (-1, "iteration: must be"),
    ):
        state_file.write_text(json.dumps({**state, "iteration": bad}))
        with pytest.raises((ValueError, CheckpointError), match=message):
            ppo_train(small_config(tmp_path, env_kwargs, resume_from=str(run)))
        assert (run / "metrics.jsonl").read_bytes() == metrics
    state_file.write_text('{"iteration": 2, "fingerp')
    with pytest.raises(CheckpointError, match=r"trainer_state.json: unreadable or corrupt JSON"):
        ppo_train(small_config(tmp_path, env_kwargs, resume_from=str(run)))


def test_corrupt_weights_are_refused_by_their_digest(tmp_path, env_kwargs, finished_run):
    run = _copy(finished_run, tmp_path)
    weights = run / "checkpoint-000001" / "policy" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    for k in range(64):  # flip bytes in the tensor data (after the header)
        data[-1 - 7 * k] ^= 0xFF
    weights.write_bytes(bytes(data))
    config = small_config(tmp_path, env_kwargs, resume_from=str(run / "checkpoint-000001"))
    with pytest.raises(CheckpointError, match="do not match the digest"):
        ppo_train(config)
    (run / "checkpoint-000001" / "optimizer.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="do not match the digest"):  # weights are checked first
        ppo_train(config)
    good = small_config(tmp_path, env_kwargs, resume_from=str(run / "checkpoint-000002"))
    (run / "checkpoint-000002" / "optimizer.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"optimizer.pt: corrupt"):
        ppo_train(good)


def test_latest_must_name_a_checkpoint_of_the_run(tmp_path, finished_run):
    run = _copy(finished_run, tmp_path)
    (run / "latest").write_text(str(tmp_path / "elsewhere" / "checkpoint-000009"))
    with pytest.raises(CheckpointError, match="latest: must name a checkpoint-\\* folder of this run dir"):
        resolve_checkpoint(run)


def test_resume_refuses_changed_settings_and_extends_only_a_constant_schedule(
    tmp_path, env_kwargs, finished_run
):
    run = _copy(finished_run, tmp_path)
    for change, name in (
        ({"seed": 5}, "seed"),
        ({"lr": 1e-2}, "lr"),
        ({"num_iterations": 4}, "num_iterations"),
    ):
        config = small_config(tmp_path, env_kwargs, resume_from=str(run), **change)
        with pytest.raises(ValueError, match=rf"a resume cannot change {name}: checkpoint has"):
            ppo_train(config)
    # constant schedule: 2 + resume to 4 equals 4 straight
    straight = small_config(tmp_path / "straight", env_kwargs, num_iterations=4, lr_schedule="constant")
    ppo_train(straight)
    short = small_config(tmp_path / "short", env_kwargs, num_iterations=2, lr_schedule="constant")
    ppo_train(short)
    ppo_train(
        small_config(
            tmp_path / "short",
            env_kwargs,
            num_iterations=4,
            lr_schedule="constant",
            resume_from=str(tmp_path / "short" / "run"),
        )
    )

    def rows(path):
        return [
            {k: v for k, v in r.items() if not k.startswith("time/") and k != "tokens_per_s"}
            for r in read_metrics(path)
        ]

    assert rows(tmp_path / "short" / "run") == rows(tmp_path / "straight" / "run")


# ---------------------------------------------------------------- the command line
def test_cli_refusals_are_one_line(tmp_path, env_kwargs, finished_run, capsys):
    run = _copy(finished_run, tmp_path)
    assert main(["--output_dir", str(run), "--num_iterations", "1", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0]
    with pytest.raises(ValueError, match="env_id: must be a registered gymnasium id"):
        PPOConfig(env_id="os:system")


def test_sigint_prints_one_line_and_leaves_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    script = (  # Ctrl-C as in a terminal: a pytest-xdist worker may pass SIGINT on ignored or blocked
        "import signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from agents.ppo_train import main; sys.exit(main(sys.argv[1:]))"
    )
    args = [
        "--output_dir",
        str(run),
        "--num_iterations",
        "100000",  # never done before the signal (200 tiny iterations could finish while a loaded CI waits)
        "--save_every",
        "1",
        "--num_envs",
        "1",
        "--rollout_steps",
        "2",
        "--minibatch_size",
        "2",
        "--no_progress",
        "--no_tensorboard",
        "--torch_threads",
        "1",
        "--sft_steps",
        "0",
        "--env_kwargs",
        '{"action_space": "text", "max_steps": 4, "image_size": [16, 16], "world_episodes": 4, '
        '"world_config": "easy"}',
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    import time

    deadline = time.time() + 240
    while time.time() < deadline and not list_checkpoints(run):
        time.sleep(0.5)
    assert list_checkpoints(run), "no checkpoint was written"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in err.strip().splitlines() if "vln-gym train" in line]
    assert lines and "interrupted" in lines[-1] and "Traceback" not in err
    assert not (run / LOCK_NAME).exists()
    last = resolve_checkpoint(run)
    assert json.loads((last / "trainer_state.json").read_text())["iteration"] >= 1


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(
    tmp_path, monkeypatch, capsys, finished_run
):
    """A Ctrl-C during the warm start leaves no checkpoint: the line says so, and the next fresh run in
    that dir is told to start over, not to resume (which would fail: no checkpoint here)."""
    import agents.ppo_train as ppo_module

    run = tmp_path / "run"

    def interrupted_warm_start(config):
        Path(config.output_dir, "sft.json").write_text("{}")  # what the warm start had written
        raise KeyboardInterrupt

    monkeypatch.setattr(ppo_module, "ppo_train", interrupted_warm_start)
    run.mkdir()
    assert main(["--output_dir", str(run), "--no_progress"]) == 130
    line = capsys.readouterr().err.strip()
    assert line == (
        f"vln-gym train: interrupted before the first checkpoint; nothing to resume in {run} "
        "(start over with --overwrite_output_dir)"
    )
    with pytest.raises(
        RunDirError, match=r"saved no checkpoint .*nothing to resume: pass --overwrite_output_dir"
    ):
        acquire(run, resume=False, overwrite=False)
    assert ppo_module._interrupted(str(finished_run)).endswith(
        f"(continue with --resume_from {finished_run})"
    )
    assert ppo_module._interrupted(str(tmp_path / "removed")).endswith(
        "nothing was kept (run the same command again)"
    )


def test_a_refused_run_removes_only_the_empty_dir_it_created(tmp_path):
    created = tmp_path / "new" / "run"
    lock, _ = acquire(created, resume=False, overwrite=False)
    release(lock)  # refused after the claim: nothing written
    assert not created.exists() and created.parent.is_dir()
    lock, _ = acquire(created, resume=False, overwrite=False)
    (created / "metrics.jsonl").write_text("")  # failed before its first iteration: nothing logged
    (created / "tb").mkdir()
    (created / "tb" / "events.out").write_text("header")
    release(lock)
    assert not created.exists()  # else the same command's rerun is refused ("saved no checkpoint")
    lock, _ = acquire(created, resume=False, overwrite=False)
    (created / "metrics.jsonl").write_text('{"iteration": 1}\n')
    release(lock)
    assert (created / "metrics.jsonl").is_file()  # a run's logged files stay
    lock, _ = acquire(created, resume=True, overwrite=True)
    (created / "metrics.jsonl").write_text("")
    (created / "sft.json").write_text("{}")
    release(lock)
    assert (created / "sft.json").is_file()  # a warm start's results stay
    existing = tmp_path / "mine"
    existing.mkdir()
    lock, _ = acquire(existing, resume=False, overwrite=False)
    release(lock)
    assert existing.is_dir()  # the user's own (empty) folder stays


def test_a_resume_on_the_command_line_takes_the_checkpoints_settings(tmp_path, finished_run):
    """``vln-gym train --resume_from DIR`` alone continues the run DIR holds: every field the flags (or a
    YAML) do not give is the checkpoint's, so the resume check finds nothing changed."""
    from agents.ppo_train import parse_config

    saved = json.loads((resolve_checkpoint(finished_run) / "trainer_state.json").read_text())["config"]
    resumed = parse_config(["--resume_from", str(finished_run)])
    assert resumed.resume_from == str(finished_run)
    assert resumed.resume_differences(saved) == []
    assert (resumed.num_envs, resumed.rollout_steps, resumed.sft_steps) == (
        saved["num_envs"],
        saved["rollout_steps"],
        saved["sft_steps"],
    )
    assert parse_config(["--resume-from", str(finished_run), "--seed", "5"]).seed == 5  # flags still win
    config = tmp_path / "c.yaml"
    config.write_text(f"resume_from: {finished_run}\nlr: 0.25\n")
    from_yaml = parse_config(["--config", str(config)])
    assert from_yaml.lr == 0.25 and from_yaml.num_envs == saved["num_envs"]
    assert parse_config(["--resume_from", str(tmp_path / "none")]).num_envs == PPOConfig().num_envs


def test_a_copied_run_resumes_in_its_own_dir_and_a_finished_one_is_refused(
    tmp_path, env_kwargs, finished_run
):
    """The checkpoint's saved output_dir is the original run's: a resume of a copy wrote into the
    original, rotated its checkpoints and rewrote its metrics."""
    from agents.ppo_train import parse_config

    copy = _copy(finished_run, tmp_path)
    assert parse_config(["--resume_from", str(copy)]).output_dir == str(copy)
    checkpoint = resolve_checkpoint(copy)
    assert parse_config(["--resume_from", str(checkpoint)]).output_dir == str(copy)
    assert parse_config(["--resume_from", str(copy), "--output_dir", "elsewhere"]).output_dir == "elsewhere"
    before = sorted(p.name for p in finished_run.iterdir())
    config = small_config(tmp_path, env_kwargs, resume_from=str(copy), output_dir=str(copy))
    with pytest.raises(ValueError, match=r"already at iteration 2 of num_iterations 2: nothing to train"):
        ppo_train(config)
    assert sorted(p.name for p in finished_run.iterdir()) == before


def test_config_files_name_the_file_and_line_of_a_bad_value(tmp_path):
    from agents.ppo_train import parse_config

    good = tmp_path / "good.yaml"
    good.write_text("num_iterations: 7\nalgo: grpo\nlr: 1e-4\n")
    for argv in (["--config", str(good)], [f"--config={good}"]):
        config = parse_config(argv)
        assert (config.num_iterations, config.algo, config.lr) == (7, "grpo", 1e-4)
    for text, message in (
        ('algo: ppo\nnum_envs: "four"\n', r"bad\.yaml:2: num_envs: must be an integer \(got 'four'\)"),
        ("num_envs: 2.5\n", r"bad\.yaml:1: num_envs: must be an integer \(got 2\.5\)"),
        ('use_lora: "maybe"\n', r"bad\.yaml:1: use_lora: must be true or false"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            parse_config(["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        parse_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit, match="--config needs a YAML file path"):
        parse_config(["--config"])
