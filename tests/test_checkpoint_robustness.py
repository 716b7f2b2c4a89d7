"""A resume checks every checkpoint file before loading anything: a missing, truncated or corrupt one is
refused with one line naming it, PPO's episodes in flight are never dropped, and ``latest`` never misleads
quietly."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_ppo_train import small_config

from agents.policy.model import PolicyFileError, VLMPolicy, check_saved_policy
from agents.ppo_train import main, ppo_train
from agents.train.checkpoint import (
    CheckpointError,
    check_checkpoint_files,
    load_runner_state,
    load_trainer_state,
    resolve_checkpoint,
    resume_point,
)

torch.set_num_threads(1)

TINY_RUN = {
    "num_iterations": 1,
    "rollout_steps": 2,
    "minibatch_size": 2,
    "grad_accum": 1,
    "save_every": 1,
    "lr_schedule": "constant",  # a resume may extend the run
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env_kwargs) -> dict[str, Path]:
    """One-iteration PPO runs, LoRA and full fine-tuning (copied by the tests that damage them)."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, use_lora in (("lora", True), ("full", False)):
        settings = {**TINY_RUN, "use_lora": use_lora, "freeze_vision": use_lora}
        ppo_train(small_config(root / name, env_kwargs, **settings))
        made[name] = root / name / "run"
    return made


@pytest.fixture
def copy_run(runs, tmp_path):
    """``copy_run(kind)``: a fresh copy of a run and its one checkpoint."""

    def copy(kind: str) -> tuple[Path, Path]:
        run = tmp_path / f"copy-{kind}"
        shutil.copytree(runs[kind], run)
        return run, run / "checkpoint-000001"

    return copy


@pytest.fixture
def refused(tmp_path, env_kwargs, monkeypatch):
    """``refused(run, kind, message)``: resuming ``run`` is refused by the pre-flight check with ``message``,
    before a policy is loaded, and leaves no output dir behind."""

    def check(run: Path, kind: str, message: str) -> None:
        use_lora = kind == "lora"
        settings = {**TINY_RUN, "num_iterations": 2, "use_lora": use_lora, "freeze_vision": use_lora}
        out = tmp_path / "out"
        config = small_config(tmp_path, env_kwargs, **settings, resume_from=str(run), output_dir=str(out))
        with pytest.raises(CheckpointError, match=message):
            resume_point(config, 1)

        def load(*args, **kwargs):
            raise AssertionError("a policy was loaded before the checkpoint was checked")

        monkeypatch.setattr(VLMPolicy, "from_pretrained", load)
        with pytest.raises(CheckpointError, match=message):
            ppo_train(config)
        monkeypatch.undo()
        assert not out.exists()

    return check


# ---------------------------------------------------------------- 1. truncated or corrupt files
@pytest.mark.parametrize(
    ("kind", "name", "size"),
    [
        ("full", "policy/model.safetensors", 1000),
        ("lora", "policy/adapter_model.safetensors", 1000),
        ("full", "policy/value_head.safetensors", 10),
        ("full", "policy/model.safetensors", -100),  # header whole, tensor data cut short
        ("lora", "policy/tokenizer.json", 100),
    ],
)
def test_a_truncated_policy_file_is_refused_naming_it(copy_run, refused, kind, name, size):
    run, checkpoint = copy_run(kind)
    target = checkpoint / name
    os.truncate(target, size if size > 0 else target.stat().st_size + size)
    message = rf"^{re.escape(str(target))}: corrupt or truncated \(.+\); resume from an earlier checkpoint$"
    refused(run, kind, message)


def test_truncated_episodes_in_flight_are_refused_naming_the_file(copy_run, refused):
    run, checkpoint = copy_run("lora")
    frames = checkpoint / "envs-rank0.npz"
    os.truncate(frames, 100)
    refused(run, "lora", rf"^{re.escape(str(frames))}: corrupt or truncated")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(frames))}: episodes in flight unreadable"):
        load_runner_state(checkpoint, 0)  # the loader itself reports a bad archive too


def test_the_train_cli_reports_a_truncated_checkpoint_in_one_line(copy_run, tmp_path, capsys):
    run, checkpoint = copy_run("full")
    os.truncate(checkpoint / "policy" / "value_head.safetensors", 10)
    argv = ["--resume_from", str(run), "--output_dir", str(tmp_path / "out"), "--num_iterations", "2"]
    assert main([*argv, "--torch_threads", "1", "--no_progress", "--no_tensorboard"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "value_head.safetensors: corrupt or truncated" in error[0]
    assert not (tmp_path / "out").exists()


def test_evaluating_a_truncated_policy_names_the_file(copy_run):
    from agents.eval.scripted import AgentError, make_agent

    _, checkpoint = copy_run("full")
    weights = checkpoint / "policy" / "model.safetensors"
    os.truncate(weights, 1000)
    with pytest.raises(PolicyFileError, match=rf"^{re.escape(str(weights))}: corrupt or truncated"):
        VLMPolicy.from_pretrained(str(checkpoint / "policy"))
    with pytest.raises(AgentError, match=rf"{re.escape(str(weights))}: corrupt or truncated") as raised:
        make_agent("policy", checkpoint=checkpoint / "policy")
    assert "\n" not in str(raised.value)


# ---------------------------------------------------------------- 2. PPO's episodes in flight
@pytest.mark.parametrize("name", ["envs-rank0.json", "envs-rank0.npz"])
def test_ppo_refuses_a_checkpoint_without_its_episodes_in_flight(copy_run, refused, name):
    run, checkpoint = copy_run("lora")
    (checkpoint / name).unlink()
    refused(run, "lora", rf"^{re.escape(str(checkpoint / name))}: missing")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(checkpoint))}/envs-rank0\.(json|npz)"):
        load_runner_state(checkpoint, 0)  # never None for a PPO checkpoint


def test_a_grpo_checkpoint_holds_no_episodes_and_needs_none(copy_run):
    _, checkpoint = copy_run("lora")
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["config"]["algo"] = "grpo"
    state_file.write_text(json.dumps(state))
    for name in ("envs-rank0.json", "envs-rank0.npz"):
        (checkpoint / name).unlink()
    check_checkpoint_files(checkpoint, load_trainer_state(checkpoint), 1)  # passes
    assert load_runner_state(checkpoint, 0) is None


# ---------------------------------------------------------------- 3. missing pieces
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("lora", "policy"),
        ("lora", "policy/policy_config.json"),
        ("lora", "policy/tokenizer.json"),
        ("lora", "policy/chat_template.jinja"),
        ("lora", "policy/adapter_config.json"),
        ("full", "policy/config.json"),
        ("full", "policy/model.safetensors"),
        ("lora", "scheduler.pt"),
    ],
)
def test_a_missing_checkpoint_file_is_named_before_loading(copy_run, refused, kind, name):
    run, checkpoint = copy_run(kind)
    target = checkpoint / name
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    refused(run, kind, rf"^{re.escape(str(target))}: missing")


# ---------------------------------------------------------------- 4. latest
def test_latest_naming_a_missing_checkpoint_warns_naming_both(copy_run, caplog):
    run, checkpoint = copy_run("lora")
    (run / "latest").write_text("checkpoint-000007\n")
    with caplog.at_level(logging.WARNING, logger="agents.train"):
        assert resolve_checkpoint(run) == checkpoint
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "agents.train"]
    assert str(run / "checkpoint-000007") in warning and str(checkpoint) in warning
    shutil.rmtree(checkpoint)
    with pytest.raises(FileNotFoundError, match=r"latest: names .*checkpoint-000007, which is missing"):
        resolve_checkpoint(run)


def test_sharded_weights_need_every_shard_their_index_lists(copy_run):
    _, checkpoint = copy_run("full")
    policy = checkpoint / "policy"
    shard = policy / "model-00001-of-00001.safetensors"
    (policy / "model.safetensors").rename(shard)
    index = {"weight_map": {"lm_head.weight": shard.name}}
    (policy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert check_saved_policy(policy).use_lora is False  # a sharded save is whole
    shard.unlink()
    with pytest.raises(PolicyFileError, match=rf"^{re.escape(str(shard))}: missing$"):
        check_saved_policy(policy)
