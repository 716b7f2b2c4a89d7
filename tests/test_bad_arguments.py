"""Bad arguments are one ValueError line naming the argument, at the call: not a numpy error, a wrong
shape or a failure at the first reset (``image_size="56"`` once gave frames of shape (5, 6))."""

from __future__ import annotations

import math
import re

import gymnasium as gym
import numpy as np
import pytest

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.cli import main
from agents.train.config import PPOConfig
from agents.train.envpool import make_env
from vln_gym.arguments import real_number, size_pair, whole_number
from vln_gym.data import load_episodes, validate_files
from vln_gym.safe_files import OutputExistsError, check_replaceable, writable_folder


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": "56"}, r"image_size must be \(height, width\)"),
        ({"image_size": (56,)}, r"image_size must be \(height, width\)"),
        ({"image_size": (56, 0)}, r"image_size\[1\] must be an integer >= 1"),
        ({"render_size": (2.5, 8)}, r"render_size\[0\] must be an integer"),
        ({"turn_angle": math.nan}, r"turn_angle must be a finite number in \(0, 180\]"),
        ({"turn_angle": 720}, r"turn_angle must be a finite number in \(0, 180\]"),
        ({"forward_step": "0.25"}, "forward_step must be a finite number"),
        ({"forward_step": 1e-9}, "forward_step must be a finite number >= 0.01"),
        ({"success_distance": math.nan}, "success_distance must be a finite number >= 0"),
        ({"heading_weight": -1.0}, "heading_weight must be a finite number >= 0"),
        ({"history_frames": 0}, "history_frames must be an integer >= 1"),
        ({"history_frames": True}, "history_frames must be an integer >= 1"),
        ({"max_steps": 2.5}, "max_steps must be an integer >= 1"),
        ({"world_seed": "a"}, "world_seed must be an integer >= 0"),
        ({"world_episodes": 0}, "world_episodes must be an integer >= 1"),
    ],
)
def test_env_arguments_are_checked_at_make(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("VLN-v0", **{"image_size": (16, 16), "world_episodes": 2, **kwargs})


def test_good_arguments_of_other_types_still_work():
    env = gym.make("VLN-v0", image_size=np.array([16, 24]), history_frames=np.int64(1), world_episodes=2)
    observation, _ = env.reset(seed=0)
    assert observation["frames"].shape == (1, 16, 24, 3)
    assert env.unwrapped.forward_step == 0.25 and isinstance(env.unwrapped.image_size[0], int)


def test_argument_helpers():
    assert real_number("x", 3, low=0.0) == 3.0 and isinstance(real_number("x", 3, low=0.0), float)
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0"):
        real_number("x", 0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match="got True"):
        real_number("x", True, low=0.0)
    assert whole_number("n", np.int32(4), low=1) == 4
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 4\.0"):
        whole_number("n", 4.0, low=1)
    assert size_pair("s", [3, 4]) == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 2.7}, "num_envs: must be an integer"),
        ({"num_envs": None}, "num_envs: must be set"),
        ({"lr": math.nan}, "lr: must be a finite number"),
        ({"lr": -1.0}, "lr: must be > 0"),
        ({"gamma": 2.0}, r"gamma: must be in \[0, 1\]"),
        ({"lam": math.nan}, "lam: must be a finite number"),
        ({"clip_range": -0.1}, "clip_range: must be > 0"),
        ({"sft_samples": 0}, r"sft_samples: must be >= 1 \(got 0\)"),
        ({"seed": 2**64}, r"seed: must be in 0\.\.2\*\*63-1"),
        ({"env_kwargs": {"max_steps": -1}}, "env_kwargs: max_steps must be an integer >= 1, got -1"),
        (
            {"env_kwargs": {"forward_step": 0}},
            "env_kwargs: forward_step must be a finite number of metres > 0",
        ),
        ({"save_every": -1}, "save_every: must be >= 0"),
        ({"temperature": 0.0}, "temperature: must be > 0"),
        ({"keep_checkpoints": -1}, "keep_checkpoints: must be >= 0"),
        ({"target_kl": -1.0}, "target_kl: must be > 0"),
        ({"use_lora": "maybe"}, "use_lora: must be true or false"),
        ({"output_dir": 5}, "output_dir: must be a string"),
        ({"min_pixels": 100, "max_pixels": 10}, "min_pixels: must be <= max_pixels"),
        ({"seed": -5}, r"seed: must be in 0\.\.2\*\*63-1"),
    ],
)
def test_ppo_config_refuses_wrong_types_and_ranges(kwargs, message):
    with pytest.raises(ValueError, match=f"PPOConfig.{message}"):
        PPOConfig(**kwargs)


def test_ppo_config_takes_ints_for_floats_and_none_where_allowed():
    config = PPOConfig(lr=1, max_new_tokens=None, torch_threads=None, resume_from=None, target_kl=None)
    assert config.lr == 1


def test_yaml_values_of_the_wrong_type_are_one_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("num_envs: 2.7\n")
    assert main(["train", "--config", str(config), "--output_dir", str(tmp_path / "run")]) == 2
    assert f"{config}:1: num_envs: must be an integer (got 2.7)" in capsys.readouterr().err


def test_make_env_names_an_unknown_id_or_keyword():
    with pytest.raises(ValueError, match="env_id 'Nope-v0'"):
        make_env("Nope-v0", {})
    with pytest.raises(
        ValueError, match=r"env_kwargs: cannot make VLN-v0: .*unexpected keyword argument 'bogus'"
    ):
        make_env("VLN-v0", {"bogus": 1})


def test_writable_folder_and_check_replaceable(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(OutputExistsError, match=r"--out .*f: is a file, not a folder"):
        writable_folder(blocker)
    with pytest.raises(OutputExistsError, match="cannot write there"):
        writable_folder(blocker / "sub", "--output_dir")
    assert writable_folder(tmp_path / "a" / "b").is_dir()
    owned = tmp_path / "owned"
    owned.mkdir()
    (owned / "episodes.jsonl").write_text("")
    check_replaceable(owned, {"episodes.jsonl"}, "make-world")
    check_replaceable(tmp_path / "missing", {"episodes.jsonl"}, "make-world")
    (owned / ".hidden").write_text("")
    with pytest.raises(OutputExistsError, match=r"holds \.hidden, which make-world did not write"):
        check_replaceable(owned, {"episodes.jsonl"}, "make-world")
    with pytest.raises(OutputExistsError, match=r"f: is a file, not a folder make-world wrote"):
        check_replaceable(blocker, {"episodes.jsonl"}, "make-world")


def test_make_world_overwrite_never_replaces_a_file(tmp_path, capsys):
    precious = tmp_path / "mw_file"
    precious.write_text("precious\n")
    argv = ["make-world", "--out", str(precious), "--episodes", "1", "--size", "16", "--overwrite"]
    assert main(argv) == 2
    assert "is a file, not a folder make-world wrote" in capsys.readouterr().err
    assert precious.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["make-world", "--episodes", "1", "--size", "16", "--forward-step", "inf"],
            "--forward-step must be",
        ),
        (["make-world", "--episodes", "1", "--size", "16", "--turn-angle", "nan"], "--turn-angle must be"),
        (["make-world", "--episodes", "1", "--size", "16", "--turn-angle", "400"], "--turn-angle must be"),
        (
            ["evaluate", "--agent", "oracle", "--episodes", "1", "--seed", "-1"],
            "--seed: must be >= 0, got -1",
        ),
        (["evaluate", "--agent", "oracle", "--episodes", "1", "--all"], "--all: not allowed with argument"),
        (["evaluate", "--agent", "oracle", "--video", "-1"], "--video: must be >= 0"),
        (["evaluate", "--agent", "oracle", "--threads", "0"], "--threads: must be >= 1"),
        (["serve", "--port", "70000"], "--port must be in 0..65535"),
        (["train", "--lr", "nan"], "PPOConfig.lr: must be a finite number"),
    ],
)
def test_cli_bad_numbers_are_one_line(tmp_path, capsys, argv, message):
    out = ["--out", str(tmp_path / "out")] if argv[0] in ("make-world", "evaluate") else []
    out = ["--output_dir", str(tmp_path / "out")] if argv[0] == "train" else out
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or argv[0] == "train"


def test_evaluate_api_refuses_a_negative_seed_before_any_env():
    from agents.eval.evaluate import EvaluationError, evaluate

    with pytest.raises(EvaluationError, match="seed must be an integer >= 0, got -1"):
        evaluate("oracle", seed=-1, num_episodes=1)


def test_training_env_speaks_text():
    """The policy answers in words: env_kwargs without an action space get ``text``; ``discrete`` is one
    line naming the field (it used to fail at the first step with 'a discrete action is an int')."""
    assert PPOConfig(env_kwargs={"world_config": "easy"}).env_kwargs["action_space"] == "text"
    with pytest.raises(ValueError, match=r"PPOConfig\.env_kwargs: action_space must be 'text'"):
        PPOConfig(env_kwargs={"world_config": "easy", "action_space": "discrete"})


def test_a_yaml_key_given_twice_is_refused_with_its_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.001\nnum_envs: 2\nlr: 0.1\n")
    with pytest.raises(
        SystemExit, match=rf"^{re.escape(str(config))}:3: invalid YAML \(duplicate key 'lr'\)"
    ):
        main(["train", "--config", str(config), "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_data_given_twice(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    argv = ["evaluate", "--agent", "oracle", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*argv, "--env-kwargs", '{"data_files": "x.jsonl"}']) == 2
    assert "give the data once" in capsys.readouterr().err


@pytest.mark.parametrize("paths", [5, [5], b"data.jsonl", {"file": "data.jsonl"}, ["a.jsonl", None]])
def test_load_episodes_names_paths_that_are_not_paths(paths):
    with pytest.raises(ValueError, match="paths must be a path or a list of paths"):
        load_episodes(paths)
    with pytest.raises(ValueError, match="paths must be a path or a list of paths"):
        validate_files(paths)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"require_pose": "false"}, "require_pose must be True or False; got 'false'"),
        ({"check_images": "no"}, "check_images must be True or False; got 'no'"),
        ({"allow_outside_media": 1}, "allow_outside_media must be True or False; got 1"),
        ({"forward_step": True}, "forward_step must be a positive number of metres; got True"),
        ({"forward_step": "0.25"}, "forward_step must be a positive number of metres; got '0.25'"),
        ({"turn_angle": None}, "turn_angle must be a positive number of degrees; got None"),
        ({"media_dir": 5}, "media_dir must be a folder path; got 5"),
        ({"media_dir": "/nonexistent/media"}, "media_dir /nonexistent/media: does not exist"),
        ({"media_dir": __file__}, "test_bad_arguments.py: is not a folder"),
        ({"path_remap": [("a", "b")]}, r"path_remap must be a mapping of OLD to NEW"),
        ({"field_map": "id=x"}, r"field_map must be a mapping of OURS to THEIRS, both strings; got 'id=x'"),
        ({"field_map": {"id": 5}}, r"field_map must be a mapping"),
        ({"pose_source": 5}, "pose_source must be a file path or a list of them; got 5"),
        ({"pose_source": ["a.json.gz", 5]}, "pose_source must be a file path or a list of them; got 5"),
    ],
)
def test_load_options_of_the_wrong_type_are_one_line_each(tmp_path, options, message):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    with pytest.raises(ValueError, match=message):
        load_episodes(data, **options)


def test_load_options_accept_paths_and_numpy_values(tmp_path):
    from vln_gym.data.fields import LoadOptions

    options = LoadOptions.create(
        media_dir=tmp_path, path_remap={"old": tmp_path}, forward_step=np.float32(0.5), require_pose=np.True_
    )
    assert options.path_remap == (("old", str(tmp_path)),) and options.forward_step == 0.5


def test_an_input_given_twice_or_inside_another_is_refused(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match=r"d\.jsonl is given twice \(also as .*d\.jsonl\): give it once"):
        load_episodes([data, tmp_path / "sub" / ".." / "d.jsonl"])
    with pytest.raises(ValueError, match=r"d\.jsonl is inside the input folder .*: give one of them"):
        validate_files([tmp_path, data])
    assert main(["validate", str(data), str(data)]) == 2
    assert "is given twice" in capsys.readouterr().err
