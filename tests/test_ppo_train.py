"""agents.ppo_train / agents.train.rollout / agents.train.checkpoint on the tiny model and small hand-made
episodes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agents.ppo_train import PPOConfig, parse_config, ppo_train
from agents.train.batch import ppo_targets
from agents.train.checkpoint import (
    check_compatible,
    list_checkpoints,
    load_rng_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from agents.train.envpool import make_env_pool
from agents.train.rollout import Decision, collect_grpo
from agents.train.runner import EpisodeRunner
from agents.train.update import lr_factor

torch.set_num_threads(1)


# What the mechanics tests run: LoRA, no warm start, a KL reference, 8 new tokens (not the learning defaults).
MECHANICS = {
    "use_lora": True,
    "freeze_vision": True,
    "sft_steps": 0,
    "sft_samples": 64,
    "sft_explore": 0.0,
    "sft_lr": 1e-3,
    "kl_coef": 0.02,
    "lr_schedule": "linear",
    "max_new_tokens": 8,
}


def small_config(tmp_path: Path, env_kwargs: dict, **overrides) -> PPOConfig:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "num_iterations": 2,
        "num_envs": 2,
        "rollout_steps": 3,
        "minibatch_size": 3,
        "grad_accum": 2,
        "group_size": 2,
        "env_kwargs": env_kwargs,
        "progress": False,
        "tensorboard": False,
        "lr": 5e-3,
        **MECHANICS,
    }
    settings.update(overrides)
    return PPOConfig(**settings)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def deterministic_part(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("time/") and k != "tokens_per_s"}


# ---------------------------------------------------------------- config
def test_config_from_flags_and_yaml(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "algo: grpo\nnum_envs: 4\nenv_kwargs:\n  max_steps: 5\n  action_space: text\n  world_config: easy\n"
        "lr: 0.01\n"
    )
    config = parse_config(
        ["--config", str(yaml_file), "--lr", "0.002", "--use_lora", "false", "--value_clip", "0.5"]
    )
    assert (config.algo, config.num_envs, config.lr, config.use_lora, config.value_clip) == (
        "grpo",
        4,
        0.002,
        False,
        0.5,
    )
    assert config.env_kwargs == {"max_steps": 5, "action_space": "text", "world_config": "easy"}
    flags = parse_config(["--env_kwargs", '{"max_steps": 20}', "--kl_estimator", "k3"])
    assert flags.env_kwargs == {"max_steps": 20, "action_space": "text"} and flags.kl_estimator == "k3"


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="env_kwargs: not valid JSON"):
        PPOConfig(env_kwargs="{max_steps: 2")
    with pytest.raises(ValueError, match="num_envs: must be a multiple of group_size"):
        PPOConfig(algo="grpo", num_envs=3, group_size=2)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("learning_rate: 0.1\n")
    with pytest.raises(SystemExit, match="unknown PPOConfig fields: learning_rate"):
        parse_config(["--config", str(bad_yaml)])


def test_lr_factor_schedules():
    assert lr_factor(0, schedule="linear", total=4) == 1.0
    assert lr_factor(1, schedule="linear", total=4) == 0.75
    assert lr_factor(2, schedule="cosine", total=4) == pytest.approx(0.5)
    assert lr_factor(3, schedule="constant", total=4) == 1.0


# ---------------------------------------------------------------- advantages across decisions
def decision(values, reward, *, terminated=False, truncated=False, segment_end=False, bootstrap=0.0):
    values = torch.tensor(values)
    return Decision(
        env_index=0,
        prompt=None,
        response_ids=torch.zeros(len(values), dtype=torch.long),
        logprobs=torch.zeros(len(values)),
        values=values,
        text="",
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        info={},
        bootstrap_value=bootstrap,
        segment_end=segment_end,
    )


def test_ppo_targets_bootstrap_across_decisions():
    config = PPOConfig(gamma=0.5, lam=1.0)
    # env 0: decision A (2 tokens) -> decision B (1 token, terminated). env 1: one truncated decision.
    streams = [
        [decision([0.1, 0.2], 1.0), decision([0.4], 2.0, terminated=True)],
        [decision([0.3], 1.0, truncated=True, bootstrap=0.8)],
    ]
    rewards = [torch.tensor([0.0, 1.0]), torch.tensor([2.0]), torch.tensor([1.0])]
    advantages, returns = ppo_targets(streams, rewards, config)
    # B: 2 - .4 = 1.6. A last token: 1 + .5 * .4 - .2 + .5 * 1.6 = 1.8; A first: 0 + .2 - .1 + 1.8 = 1.9
    assert advantages[0].tolist() == pytest.approx([1.9, 1.8])
    assert advantages[1].tolist() == pytest.approx([1.6])
    assert advantages[2].tolist() == pytest.approx([1.0 + 0.5 * 0.8 - 0.3])  # truncation bootstraps
    assert returns[0].tolist() == pytest.approx([2.0, 2.0])  # A's return = 1 + 0.5 * 2


def test_ppo_targets_segment_end_bootstraps():
    config = PPOConfig(gamma=0.9, lam=0.5)
    streams = [[decision([0.5], 0.0, segment_end=True, bootstrap=1.0)]]
    advantages, _ = ppo_targets(streams, [torch.tensor([0.0])], config)
    assert advantages[0].tolist() == pytest.approx([0.9 * 1.0 - 0.5])


# ---------------------------------------------------------------- checkpoints
class _Saver:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def __call__(self, path: Path) -> None:
        path.mkdir(parents=True)
        (path / "weights.txt").write_text("w")
        if self.fail:
            raise KeyboardInterrupt("killed while saving")


def _save(tmp_path: Path, iteration: int, fail: bool = False, keep_last: int = 2) -> Path:
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return save_checkpoint(
        tmp_path,
        iteration,
        save_policy=_Saver(fail),
        optimizer=optimizer,
        scheduler=scheduler,
        trainer_state={"fingerprint": {"lora_r": 8}},
        rng_states=[rng_state()],
        keep_last=keep_last,
    )


def test_checkpoint_is_atomic_and_rotated(tmp_path):
    first = _save(tmp_path, 1)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, fail=True)
    assert list_checkpoints(tmp_path) == [first]
    assert resolve_checkpoint(tmp_path) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # no half-written leftovers
    _save(tmp_path, 2)
    third = _save(tmp_path, 3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000002", "checkpoint-000003"]
    assert resolve_checkpoint(tmp_path) == third and (third / "policy" / "weights.txt").is_file()
    with pytest.raises(FileNotFoundError, match="no checkpoint here"):
        resolve_checkpoint(tmp_path / "missing")


def test_rng_state_round_trip(tmp_path):
    path = _save(tmp_path, 1)
    expected = (torch.rand(3), np.random.rand(2), __import__("random").random())
    set_rng_state(load_rng_state(path, 0))
    again = (torch.rand(3), np.random.rand(2), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_check_compatible_names_the_difference():
    check_compatible({"lora_r": 8}, {"lora_r": 8}, "ckpt")
    with pytest.raises(ValueError, match=r"lora_r: checkpoint has 8, this run has 4"):
        check_compatible({"lora_r": 8, "use_lora": True}, {"lora_r": 4, "use_lora": True}, "ckpt")


# ---------------------------------------------------------------- training runs (tiny model)
def test_two_iterations_learn_and_checkpoint(tmp_path, env_kwargs):
    config = small_config(tmp_path, env_kwargs, save_every=1, keep_checkpoints=0)
    hooked: list[dict] = []
    result = ppo_train(config, on_iteration=hooked.append)
    rows = read_metrics(tmp_path / "run")
    assert [row["iteration"] for row in rows] == [1, 2]
    assert [row["iteration"] for row in hooked] == [1, 2]  # the per-iteration hook sees each row
    for row, seen in zip(rows, hooked, strict=True):
        assert seen["rollout/generated_tokens"] == row["rollout/generated_tokens"]
        # each of the 6 answers is 2-3 tokens of the action grammar + the end token
        assert 6 * 2 <= row["rollout/generated_tokens"] <= 6 * config.max_new_tokens
    for row in rows:
        for key in ("loss/policy", "loss/value", "loss/entropy", "approx_kl", "grad_norm", "reward/mean"):
            assert math.isfinite(row[key]), key
        assert row["optimizer_steps"] == 2 * 2  # 6 decisions / minibatch 3 = 2 steps, 2 epochs
        assert row["rollout/decisions"] == 6
        assert row["time/generate"] > 0 and row["time/update"] > 0
    first, second = (
        load_file(p / "policy" / "adapter_model.safetensors") for p in list_checkpoints(tmp_path / "run")
    )
    assert set(first) == set(second) and len(first) > 0
    changed = [name for name in first if not torch.equal(first[name], second[name])]
    assert changed == list(first)  # every LoRA tensor moved in iteration 2
    lora_b = [t for name, t in second.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero
    head = [load_file(p / "policy" / "value_head.safetensors") for p in list_checkpoints(tmp_path / "run")]
    assert any(not torch.equal(head[0][k], head[1][k]) for k in head[0])
    assert result["checkpoint"].endswith("checkpoint-000002")


def test_resume_continues_exactly(tmp_path, env_kwargs):
    full = small_config(tmp_path / "full", env_kwargs, num_iterations=4, save_every=0)
    ppo_train(full)
    split_dir = tmp_path / "split"
    ppo_train(small_config(split_dir, env_kwargs, num_iterations=4, save_every=2, keep_checkpoints=0))
    checkpoint_2 = split_dir / "run" / "checkpoint-000002"
    resumed = small_config(
        split_dir, env_kwargs, num_iterations=4, save_every=0, resume_from=str(checkpoint_2)
    )
    (split_dir / "run" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in read_metrics(split_dir / "run")[:3])  # as if killed after it. 3
    )
    ppo_train(resumed)
    full_rows = [deterministic_part(r) for r in read_metrics(tmp_path / "full" / "run")]
    split_rows = [deterministic_part(r) for r in read_metrics(split_dir / "run")]
    assert [r["iteration"] for r in split_rows] == [1, 2, 3, 4]
    assert split_rows == full_rows
    full_weights = load_file(
        tmp_path / "full" / "run" / "checkpoint-000004" / "policy" / "adapter_model.safetensors"
    )
    split_weights = load_file(
        split_dir / "run" / "checkpoint-000004" / "policy" / "adapter_model.safetensors"
    )
    assert all(torch.equal(full_weights[k], split_weights[k]) for k in full_weights)


def test_resume_refuses_another_lora_shape(tmp_path, env_kwargs):
    ppo_train(small_config(tmp_path, env_kwargs, num_iterations=1))
    other = small_config(tmp_path, env_kwargs, num_iterations=2, lora_r=4, resume_from=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="lora_r: checkpoint has 8, this run has 4"):
        ppo_train(other)


def test_grpo_groups_share_start_and_train(tmp_path, env_kwargs):
    from agents.policy.model import VLMPolicy
    from agents.ppo_train import resolve_model_path

    policy = VLMPolicy.from_pretrained(resolve_model_path("tiny"), constrained_actions=True, seed=0)
    pool = make_env_pool("VLN-v0", env_kwargs, 4)
    episodes, stats = collect_grpo(policy, EpisodeRunner(pool), [11, 12], 2, {"max_new_tokens": 8})
    pool.close()
    firsts = [episode[0] for episode in episodes]
    assert [d.group for d in firsts] == [0, 0, 1, 1]
    assert torch.equal(firsts[0].prompt.input_ids, firsts[1].prompt.input_ids)
    assert all(episode[-1].done for episode in episodes)  # complete episodes only
    assert len(stats.episode_returns) == 4

    result = ppo_train(small_config(tmp_path, env_kwargs, algo="grpo", num_iterations=1, num_envs=4))
    assert math.isfinite(result["loss/policy"]) and "loss/value" not in result
    assert result["optimizer_steps"] >= 1


def nan_reward_env(**kwargs):
    """VLN-v0 whose rewards are NaN (the reward composite itself refuses NaN terms)."""
    import gymnasium as gym

    return gym.wrappers.TransformReward(gym.make("VLN-v0", **kwargs), lambda reward: float("nan"))


def test_nan_rewards_skip_then_stop(tmp_path, env_kwargs):
    import gymnasium as gym

    if "NaNRewardVLN-v0" not in gym.registry:
        gym.register("NaNRewardVLN-v0", entry_point=nan_reward_env)
    config = small_config(tmp_path, env_kwargs, env_id="NaNRewardVLN-v0", num_iterations=4, max_nonfinite=2)
    with pytest.raises(FloatingPointError, match=r"first bad: reward \(iteration 1\)"):
        ppo_train(config)
    rows = read_metrics(tmp_path / "run")
    assert [(r["iteration"], r["skip_reason"], r["optimizer_steps"]) for r in rows] == [(1, "reward", 0)]
    assert not list_checkpoints(tmp_path / "run")


def test_nan_loss_skips_steps_and_keeps_weights_finite(tmp_path, env_kwargs, monkeypatch):
    from agents.train import ppo

    monkeypatch.setattr(
        ppo, "clipped_policy_loss", lambda *args: torch.tensor(float("nan"), requires_grad=True)
    )
    result = ppo_train(small_config(tmp_path, env_kwargs, num_iterations=1, max_nonfinite=100))
    assert (result["optimizer_steps"], result["skipped_updates"], result["skip_reason"]) == (
        0,
        4,
        "loss/policy",
    )
    weights = load_file(Path(result["checkpoint"]) / "policy" / "adapter_model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


@pytest.mark.parametrize("name", ["train_ppo.yaml", "train_grpo.yaml"])
def test_shipped_training_yaml_parses(name):
    config = parse_config(["--config", str(Path(__file__).parents[1] / "configs" / name)])
    assert config.algo in name and config.env_kwargs["action_space"] == "text"


def test_shipped_grpo_yaml_is_the_benchmarked_preset():
    from dataclasses import asdict

    from agents import presets

    shipped = asdict(
        parse_config(["--config", str(Path(__file__).parents[1] / "configs" / "train_grpo.yaml")])
    )
    preset = asdict(presets.learning_config(shipped["output_dir"], "grpo"))
    runtime = {"env_kwargs", "save_every", "tensorboard"}  # env kwargs: a level name vs its fields, below
    assert {k: v for k, v in shipped.items() if k not in runtime} == {
        k: v for k, v in preset.items() if k not in runtime
    }
    env = dict(shipped["env_kwargs"])
    assert env.pop("world_config") == "easy"
    assert env == {k: v for k, v in preset["env_kwargs"].items() if k in env}


def test_cli_train_one_iteration(tmp_path, vln_ego_trajectory, capsys):
    from agents.cli import main

    settings = tmp_path / "run.yaml"
    settings.write_text(
        f"output_dir: {tmp_path / 'cli'}\nnum_iterations: 1\nnum_envs: 2\n"
        "rollout_steps: 2\nminibatch_size: 2\nsft_steps: 0\n"
        f"env_kwargs:\n  data_files: {vln_ego_trajectory}\n  format: vln-ego\n  views: trajectory\n"
        "  action_space: text\n  max_steps: 2\n  image_size: [56, 56]\n"
    )
    assert (
        main(["train", "--config", str(settings), "--no_progress", "--no_tensorboard", "--kl_coef", "0"]) == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["iteration"] == 1 and printed["kl/reference"] == 0.0
    # The tiny model is fully fine-tuned by default (use_lora None: full for tiny models, LoRA for real ones).
    assert (tmp_path / "cli" / "checkpoint-000001" / "policy" / "model.safetensors").is_file()


def test_cli_train_bad_input_is_one_line_not_a_traceback(tmp_path, capsys):
    from agents.cli import main

    def error_of(argv: list[str]) -> str:
        assert main(["train", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "PPOConfig.env_kwargs: not valid JSON" in error_of(["--env_kwargs", "{bad"])
    assert error_of(["--num_iterations", "-3"]).endswith("PPOConfig.num_iterations: must be >= 1 (got -3)")
    assert str(tmp_path / "none.yaml") in error_of(["--config", str(tmp_path / "none.yaml")])
    missing_model = str(tmp_path / "no-model")
    assert f"model_name_or_path: {missing_model}: no such directory" in error_of(
        ["--model_name_or_path", missing_model]
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("num_envs: 2\nalgo: [ppo\n")
    with pytest.raises(SystemExit, match=rf"^{re.escape(str(broken))}:3: invalid YAML"):
        main(["train", "--config", str(broken)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(SystemExit, match="expected a mapping of PPOConfig fields, got list"):
        main(["train", "--config", str(listed)])


def test_tensorboard_plots_against_env_steps_and_holds_the_config(tmp_path, env_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ppo_train(small_config(tmp_path, env_kwargs, tensorboard=True, save_every=0))
    rows = read_metrics(tmp_path / "run")
    assert [r["env_steps"] for r in rows] == [6, 12]  # 2 envs x 3 decisions per iteration, cumulative
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"tensors": 0}).Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [6, 12]
    assert [e.value for e in events.Scalars("iteration")] == [1.0, 2.0]
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"rollout_steps": 3' in config_text


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_cli_trains_other_families_with_lora(tmp_path, family, capsys):
    """`vln-gym train --model_name_or_path <tiny family dir>`: two PPO iterations with LoRA, checkpointed."""
    from agents.cli import main
    from agents.policy.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / family, family)
    args = ["train", "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "run")]
    args += ["--num_iterations", "2", "--num_envs", "2", "--rollout_steps", "2", "--minibatch_size", "2"]
    args += ["--no_progress", "--no_tensorboard", "--torch_threads", "1", "--sft_steps", "0"]
    args += [
        "--env_kwargs",
        '{"action_space": "text", "max_steps": 4, "image_size": [32, 32], "world_episodes": 4, '
        '"world_config": "easy"}',
    ]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["iteration"] == 2 and math.isfinite(printed["loss/policy"])
    saved = json.loads(
        (tmp_path / "run" / "checkpoint-000002" / "policy" / "adapter_config.json").read_text()
    )
    assert saved["peft_type"] == "LORA"


def test_policy_settings_from_the_cli_and_yaml_reach_the_checkpoint(tmp_path, env_kwargs):
    """Every PolicyConfig setting a real run needs is a PPOConfig field; the checkpoint's policy keeps it, and
    reloading the checkpoint (what `vln-gym evaluate --agent policy` does) builds the same prompts."""
    from agents.policy.model import PolicyConfig, VLMPolicy

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("system_prompt: You are a careful robot.\nmax_images: 2\nlora_dropout: 0.1\n")
    config = parse_config(
        ["--config", str(yaml_file), "--lora_target_modules", "q_proj,v_proj", "--max_pixels", "3136"]
    )
    assert (config.system_prompt, config.max_images, config.lora_dropout) == (
        "You are a careful robot.",
        2,
        0.1,
    )
    assert config.lora_target_list() == ["q_proj", "v_proj"] and config.max_pixels == 3136
    with pytest.raises(ValueError, match="min_pixels: must be >= 1"):
        PPOConfig(min_pixels=0)
    settings = {k: getattr(config, k) for k in ("system_prompt", "max_images", "lora_dropout", "max_pixels")}
    result = ppo_train(
        small_config(tmp_path, env_kwargs, num_iterations=1, lora_target_modules="q_proj,v_proj", **settings)
    )
    saved = PolicyConfig.load(Path(result["checkpoint"]) / "policy" / "policy_config.json")
    assert saved.system_prompt == "You are a careful robot." and saved.max_images == 2
    assert saved.lora_dropout == 0.1 and saved.max_pixels == 3136
    assert sorted(saved.lora_target_modules) == ["q_proj", "v_proj"]
    policy = VLMPolicy.from_pretrained(str(Path(result["checkpoint"]) / "policy"))
    obs = {
        "frames": np.zeros((2, 56, 56, 3), np.uint8),
        "frame_mask": np.array([1, 1], np.int8),
        "instruction": "go",
    }
    (prompt,) = policy.prepare([obs])
    assert "You are a careful robot." in policy.processor.tokenizer.decode(prompt.input_ids)
    three = {**obs, "frames": np.zeros((3, 56, 56, 3), np.uint8), "frame_mask": np.ones(3, np.int8)}
    with pytest.raises(ValueError, match="3 valid frames exceed max_images=2"):
        policy.prepare([three])


def test_negative_flags_say_what_they_do(capsys):
    """``--no_FIELD`` used to repeat FIELD's own help (``--no_constrained_actions``: "decode only answers
    of the action grammar (default: False)"); the defaults and their effect stay the same."""
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("constrained_actions", "kl_in_reward", "whiten_advantages", "tensorboard", "progress"):
        assert f"--no-{name.replace('_', '-')} same as --{name} false" in text
        assert getattr(parse_config([]), name) is True
        assert getattr(parse_config([f"--no_{name}"]), name) is False
