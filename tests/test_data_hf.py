"""`episodes_dataset`: the same episodes through a cached Arrow `datasets.Dataset`."""

from __future__ import annotations

import os

import pytest
from test_data_helpers import make_png, own_record, write_lines

from vln_gym.data import DataError, episode_from_row, episodes_dataset, load_episodes


def test_dataset_rows_round_trip_to_equal_episodes(vln_ego_trajectory, tmp_path):
    dataset = episodes_dataset(vln_ego_trajectory, cache_dir=tmp_path / "cache")
    episodes = load_episodes(vln_ego_trajectory)
    assert dataset.num_rows == 65
    rebuilt = [episode_from_row(row) for row in dataset]
    assert rebuilt == episodes
    assert rebuilt[5].extra == {"pose_source": "vln-ego-actions"}


def test_cache_is_reused_until_an_input_changes(tmp_path):
    make_png(tmp_path / "a.png")
    path = write_lines(tmp_path / "d.jsonl", [own_record("x", ["a.png"])])
    first = episodes_dataset(path, cache_dir=tmp_path / "cache")
    again = episodes_dataset(path, cache_dir=tmp_path / "cache")
    assert again.cache_files == first.cache_files
    write_lines(path, [own_record("y", ["a.png"])])
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock resolution
    changed = episodes_dataset(path, cache_dir=tmp_path / "cache")
    assert changed.cache_files != first.cache_files
    assert changed[0]["id"] == "y"


def test_bad_record_raises_data_error_or_is_skipped(tmp_path):
    make_png(tmp_path / "a.png")
    path = write_lines(tmp_path / "d.jsonl", [own_record("x", ["a.png"]), '{"id": "z", "instr'])
    with pytest.raises(DataError, match=r"d\.jsonl:2: json: truncated JSON"):
        episodes_dataset(path, cache_dir=tmp_path / "cache")
    kept = episodes_dataset(path, cache_dir=tmp_path / "cache2", on_error="skip")
    assert kept["id"] == ["x"]
