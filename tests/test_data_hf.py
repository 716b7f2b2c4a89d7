"""`episodes_dataset`: the same episodes through a cached Arrow `datasets.Dataset`."""

from __future__ import annotations

import os

import pytest
from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

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
    bad = write_lines(tmp_path / "bad.jsonl", ['{"id": "z", "instr'])
    with pytest.raises(ValueError, match=r"no good record in .*bad\.jsonl \(on_error='skip' left every"):
        episodes_dataset(bad, cache_dir=tmp_path / "cache3", on_error="skip")


def test_env_runs_a_datasets_dataset_and_its_parquet_export(tmp_path):
    """`gym.make("VLN-v0", episodes=ds)` used to fail with AttributeError on the dict rows."""
    import gymnasium as gym

    import vln_gym  # noqa: F401  (registers VLN-v0)
    from vln_gym.data import load_episodes

    media = tmp_path / "media"
    make_png(media / "a.png")
    path = write_lines(
        tmp_path / "d.jsonl", [sharegpt_record(["a.png"], id="x"), sharegpt_record(["a.png"], id="y")]
    )
    reference = load_episodes(path, media_dir=media)
    dataset = episodes_dataset(path, media_dir=media, cache_dir=tmp_path / "cache")
    env = gym.make("VLN-v0", episodes=dataset, image_size=(8, 8))
    _, info = env.reset(seed=0, options={"episode_index": 1})
    assert tuple(info["agent_position"]) == reference[1].agent_position
    assert env.unwrapped.episodes == reference
    parquet = tmp_path / "d.parquet"
    dataset.to_parquet(parquet)
    assert load_episodes(parquet) == reference
    env = gym.make("VLN-v0", data_files=parquet, image_size=(8, 8))
    assert env.unwrapped.episodes == reference
    # Rows in a chat format (not only episodes_dataset rows), relative images against media_dir.
    rows = [sharegpt_record(["a.png"], id="z")]
    (episode,) = gym.make("VLN-v0", episodes=rows, media_dir=media, image_size=(8, 8)).unwrapped.episodes
    assert episode.images == (str(media / "a.png"),)


def test_bad_parquet_rows_name_the_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vln_gym.data import validate_files

    media = tmp_path / "media"
    make_png(media / "a.png")
    rows = [sharegpt_record(["a.png"], id="ok"), sharegpt_record(["a.png"], id="bad", agent_heading="north")]
    rows[1]["agent_heading"] = None
    table = pa.Table.from_pylist([{**row, "agent_heading": row["agent_heading"]} for row in rows])
    pq.write_table(table, tmp_path / "d.parquet")
    report = validate_files(tmp_path / "d.parquet", media_dir=media)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'd.parquet'}: [1].agent_heading: null (required privileged field)"
    ]
    # Parquet fills a row's missing keys with null: a row with no pose at all is a pose-less record.
    for key in ("agent_position", "goal_position"):
        rows[1][key] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert validate_files(tmp_path / "d.parquet", media_dir=media).problems  # required by default
    loaded = load_episodes(tmp_path / "d.parquet", media_dir=media, require_pose=False)
    assert loaded[1].extra["pose_source"] == "missing" and loaded[0].extra["pose_source"] == "record"
