"""Paths through ``..`` and symbolic links name what the file system names, at every place a user gives one.

The layout: ``tmp/elsewhere/data`` holds the data, ``tmp/link`` links to ``tmp/elsewhere/deeper``, so
``link/../data`` is ``elsewhere/data`` to the file system and ``tmp/data`` (absent) as folded text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

from agents.eval.evaluate import _claimed_output
from vln_gym.data import DataError, load_episodes
from vln_gym.data.fields import LoadOptions
from vln_gym.data.ownjsonl import episode_record
from vln_gym.paths import absolute_path
from vln_gym.safe_files import atomic_write_text


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    data = tmp_path / "elsewhere" / "data"
    make_png(data / "frames" / "x.png")
    (tmp_path / "elsewhere" / "deeper").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deeper")
    return tmp_path


def test_absolute_path_resolves_dot_dot_as_the_file_system_does_and_keeps_the_rest(tree, monkeypatch):
    data = tree / "elsewhere" / "data"
    assert absolute_path(tree / "link" / ".." / "data") == str(data)
    assert absolute_path(tree / "link" / "..") == str(tree / "elsewhere")
    assert absolute_path(f"{tree}/link/../data/./frames/") == str(data / "frames")
    (data / "alias").symlink_to(data / "frames")
    # Only the part up to the last '..' is resolved: a link after it keeps its name.
    assert absolute_path(tree / "link" / ".." / "data" / "alias") == str(data / "alias")
    assert absolute_path(tree / "link" / "x.png") == str(tree / "link" / "x.png")  # no '..': as written
    monkeypatch.chdir(tree / "link")
    assert absolute_path("../data") == str(data)
    assert absolute_path("x") == str(tree / "elsewhere" / "deeper" / "x")  # the cwd is the real folder


def test_media_dir_and_path_remap_through_dot_dot_find_the_images(tree):
    write_lines(tree / "d.jsonl", [sharegpt_record(["frames/x.png"])])
    via_link = tree / "link" / ".." / "data"
    expected = (str(tree / "elsewhere" / "data" / "frames" / "x.png"),)
    assert load_episodes(tree / "d.jsonl", media_dir=via_link)[0].images == expected
    write_lines(tree / "r.jsonl", [sharegpt_record(["/old/machine/frames/x.png"])])
    remap = {"/old/machine": str(via_link)}
    assert load_episodes(tree / "r.jsonl", path_remap=remap)[0].images == expected


def test_dataset_info_through_dot_dot_reads_its_files(tree):
    data = tree / "elsewhere" / "data"
    write_lines(data / "d.jsonl", [sharegpt_record(["frames/x.png"])])
    entry = {"vln": {"file_name": "d.jsonl", "formatting": "sharegpt"}}
    (data / "dataset_info.json").write_text(json.dumps(entry))
    info = tree / "link" / ".." / "data" / "dataset_info.json"
    (episode,) = load_episodes(dataset_info=info, dataset="vln")
    assert episode.images == (str(data / "frames" / "x.png"),)


def test_pose_source_dot_dot_names_the_real_folder(tree, monkeypatch):
    monkeypatch.chdir(tree / "link")
    assert LoadOptions.create(pose_source="..").pose_source == (str(tree / "elsewhere"),)
    assert LoadOptions.create(pose_source="../data/x.json").pose_source == (
        str(tree / "elsewhere" / "data" / "x.json"),
    )


def test_an_absolute_image_path_by_the_real_name_of_a_linked_media_folder_is_inside_it(tree):
    (tree / "media").symlink_to(tree / "elsewhere" / "data")
    real = tree / "elsewhere" / "data" / "frames" / "x.png"
    write_lines(tree / "d.jsonl", [sharegpt_record([str(real)])])
    assert load_episodes(tree / "d.jsonl", media_dir=tree / "media")[0].images == (str(real),)
    make_png(tree / "outside.png")
    write_lines(tree / "o.jsonl", [sharegpt_record([str(tree / "outside.png")])])
    with pytest.raises(DataError, match="outside the media folder"):
        load_episodes(tree / "o.jsonl", media_dir=tree / "media")


def test_converted_image_paths_are_relative_when_the_output_folder_is_the_images_by_another_name(tree):
    (tree / "media").symlink_to(tree / "elsewhere" / "data")
    write_lines(tree / "media" / "d.jsonl", [own_record("e1", ["frames/x.png"])])
    (episode,) = load_episodes(tree / "media" / "d.jsonl")
    assert episode.images[0].startswith(str(tree / "media"))
    assert episode_record(episode, media_dir=tree / "elsewhere" / "data")["images"] == ["frames/x.png"]
    assert episode_record(episode, media_dir=tree / "link" / ".." / "data")["images"] == ["frames/x.png"]
    assert episode_record(episode, media_dir=tree / "elsewhere")["images"] == ["data/frames/x.png"]
    assert episode_record(episode, media_dir=tree / "link")["images"] == [episode.images[0]]  # outside


def test_a_missing_image_after_a_remap_names_the_remap_and_the_folder_that_is_missing(tree):
    write_lines(tree / "d.jsonl", [sharegpt_record(["/old/root/a/b/x.png"])])
    with pytest.raises(DataError) as caught:
        load_episodes(tree / "d.jsonl", path_remap={"/old/root": str(tree / "new")})
    message = str(caught.value)
    assert f"-> {tree / 'new' / 'a' / 'b' / 'x.png'} (path_remap /old/root={tree / 'new'})" in message
    assert f"the folder {tree / 'new'} does not exist" in message
    assert "--path-remap /old" not in message  # the remap given is not suggested again


def test_atomic_write_through_dot_dot_writes_where_the_file_system_puts_it(tree):
    target = tree / "link" / ".." / "out" / "metrics.json"
    atomic_write_text(target, "{}\n")
    assert (tree / "elsewhere" / "out" / "metrics.json").read_text() == "{}\n"
    assert not (tree / "out").exists()
    assert os.listdir(tree / "elsewhere" / "out") == ["metrics.json"]  # no temporary left


def test_a_failed_evaluation_removes_the_folder_it_created_through_dot_dot(tree):
    out = tree / "link" / ".." / "ev1"
    with pytest.raises(ValueError, match="broke"), _claimed_output(out):
        os.makedirs(out)
        assert (tree / "elsewhere" / "ev1").is_dir()
        raise ValueError("broke")
    assert not (tree / "elsewhere" / "ev1").exists()


def test_train_config_saves_data_paths_absolute_and_resumes_an_older_relative_one(tree, monkeypatch):
    from agents.train.config import PPOConfig

    monkeypatch.chdir(tree / "elsewhere")
    env = {"data_files": "data/d.jsonl", "media_dir": "data", "data_options": {"pose_source": "../x"}}
    config = PPOConfig(env_kwargs=json.dumps(env))
    assert config.env_kwargs["data_files"] == str(tree / "elsewhere" / "data" / "d.jsonl")
    assert config.env_kwargs["media_dir"] == str(tree / "elsewhere" / "data")
    assert config.env_kwargs["data_options"] == {"pose_source": str(tree / "x")}
    same = PPOConfig(env_kwargs=json.dumps({**env, "data_files": "./data/../data/d.jsonl"}))
    assert same.env_kwargs == config.env_kwargs  # another spelling of the same file is the same env
    saved = json.loads(json.dumps(PPOConfig(env_kwargs=json.dumps(env)).__dict__, default=repr))
    assert config.resume_differences({**saved, "env_kwargs": {**env, "action_space": "text"}}) == []
    other = {**env, "data_files": "data/other.jsonl", "action_space": "text"}
    assert config.resume_differences({**saved, "env_kwargs": other})  # a real change is still refused


def test_resume_from_dot_inside_a_checkpoint_continues_in_its_run_folder(tree, monkeypatch):
    from agents.train.checkpoint import STATE_FILE
    from agents.train.config import parse_config

    checkpoint = tree / "run" / "checkpoint-000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / STATE_FILE).write_text(json.dumps({"config": {"output_dir": "somewhere/else"}}))
    monkeypatch.chdir(checkpoint)
    assert parse_config(["--resume_from", "."]).output_dir == str(tree / "run")


def test_a_model_path_with_a_tilde_is_the_home_folder_s(monkeypatch, tmp_path):
    from agents.train.config import PPOConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    assert PPOConfig(model_name_or_path="~/models/qwen").model_name_or_path == str(tmp_path / "models/qwen")
