"""Habitat VLN-CE episode files: the real R2R-CE val_seen sample (from ../shared) and bad input."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from pathlib import Path

import pytest

from vln_gym.data import DataError, load_episodes, read_habitat_episodes
from vln_gym.data.habitat import heading_from_quaternion
from vln_gym.data.problems import FieldError
from vln_gym.geometry import MOVE_FORWARD, apply_action


def test_heading_from_quaternion_follows_the_habitat_convention():
    half = math.sqrt(0.5)
    assert heading_from_quaternion([0, 0, 0, 1], "r") == 0.0
    assert heading_from_quaternion([0, half, 0, half], "r") == pytest.approx(math.pi / 2)  # faces -x
    with pytest.raises(FieldError, match="not a rotation about \\+y"):
        heading_from_quaternion([half, 0, 0, half], "r")
    with pytest.raises(FieldError, match="not a unit quaternion"):
        heading_from_quaternion([0, 2, 0, 0], "r")


def test_real_split_reads_every_episode_with_gt(r2r_ce_split: Path):
    episodes = read_habitat_episodes(r2r_ce_split / "val_seen.json.gz")
    assert len(episodes) == 778
    episode = episodes["1"]
    assert episode.scene_id == "mp3d/s8pcmisQ38h/s8pcmisQ38h.glb"
    assert episode.trajectory_id == "37"
    assert episode.instruction.startswith("Walk down the stairs")
    assert episode.goal_radius == 3.0 and episode.geodesic_distance == pytest.approx(10.39185905456543)
    assert episode.actions[-1] == 0 and episode.locations[0] == pytest.approx(episode.start_position)
    # The split folder is accepted too.
    assert read_habitat_episodes(r2r_ce_split).keys() == episodes.keys()


def test_integrating_gt_actions_reproduces_gt_locations_except_wall_slides(r2r_ce_split: Path):
    """Our heading convention, applied from start_rotation, predicts Habitat's forward steps; the few
    it does not are Habitat sliding along walls (shorter or bent steps), which is why the reader takes
    positions from ``locations``."""
    episodes = read_habitat_episodes(r2r_ce_split)
    forward = predicted = short = 0
    for episode in episodes.values():
        heading, located = episode.start_heading, 0
        for action in episode.actions:
            if action == MOVE_FORWARD:
                before, after = episode.locations[located], episode.locations[located + 1]
                expected, _ = apply_action(before, heading, action)
                forward += 1
                predicted += math.hypot(expected[0] - after[0], expected[2] - after[2]) < 1e-3
                short += math.hypot(after[0] - before[0], after[2] - before[2]) < 0.25 - 1e-3
                located += 1
            else:
                _, heading = apply_action((0.0, 0.0, 0.0), heading, action)
    assert forward == 30156
    assert predicted / forward > 0.97  # measured: 97.7% within 1 mm
    assert 0 < short / forward < 0.01  # measured: 21 of 30,156 steps are shorter than 0.25 m


def test_poses_take_positions_from_locations_and_end_near_the_goal(r2r_ce_split: Path):
    episodes = read_habitat_episodes(r2r_ce_split)
    for episode in episodes.values():
        poses = episode.poses(episode.actions, turn_angle=15.0)
        assert poses.source == "habitat-gt"
        assert poses.positions[0] == episode.start_position
        assert set(poses.positions) <= set(episode.locations)
        assert math.dist(poses.positions[-1], episode.goal_position) <= 3.0
    other = episodes["1"].poses((1, 1, 0), turn_angle=15.0)  # not the gt path: integrated from the start
    assert other.source == "habitat-start" and other.positions[0] == episodes["1"].start_position
    assert math.dist(other.positions[2], other.positions[0]) == pytest.approx(0.5)


def _write(path: Path, value) -> Path:
    with gzip.open(path, "wt") as handle:
        json.dump(value, handle)
    return path


def _episode(**changes) -> dict:
    episode = {
        "episode_id": 7,
        "trajectory_id": 3,
        "scene_id": "mp3d/x/x.glb",
        "start_position": [0.0, 0.0, 0.0],
        "start_rotation": [0.0, 0.0, 0.0, 1.0],
        "info": {"geodesic_distance": 0.5},
        "goals": [{"position": [0.0, 0.0, -0.5], "radius": 3.0}],
        "instruction": {"instruction_text": "go ahead"},
        "reference_path": [[0.0, 0.0, 0.0], [0.0, 0.0, -0.5]],
    }
    episode.update(changes)
    return episode


def test_bad_episode_files_name_the_file_and_field(tmp_path: Path):
    path = _write(
        tmp_path / "s.json.gz",
        {"episodes": [_episode(start_rotation=[1, 0, 0, 0]), _episode(episode_id=8, goals=[])]},
    )
    with pytest.raises(DataError) as caught:
        read_habitat_episodes(path)
    lines = [str(problem) for problem in caught.value.problems]
    assert lines == [
        f"{path}: episodes[0].start_rotation: [1, 0, 0, 0] is not a rotation about +y (x and z must be 0)",
        f"{path}: episodes[1].goals: expected a non-empty list of {{position, radius}}",
    ]
    broken = tmp_path / "b.json.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_habitat_episodes(broken)


def test_gt_locations_must_match_the_forward_steps(tmp_path: Path):
    path = _write(tmp_path / "s.json.gz", {"episodes": [_episode()]})
    _write(tmp_path / "s_gt.json.gz", {"7": {"actions": [1, 1, 0], "locations": [[0, 0, 0], [0, 0, -0.25]]}})
    with pytest.raises(DataError) as caught:
        read_habitat_episodes(path)
    assert str(caught.value) == (
        f"{tmp_path / 's_gt.json.gz'}: 7.locations: 2 locations for 2 MOVE_FORWARD actions "
        "(expected the start plus one per forward step)"
    )
    _write(
        tmp_path / "s_gt.json.gz",
        {"7": {"actions": [1, 1, 0], "locations": [[0, 0, 0], [0, 0, -0.25], [0, 0, -0.5]]}},
    )
    assert read_habitat_episodes(path)["7"].actions == (1, 1, 0)


def test_a_pose_source_that_no_record_reads_is_reported(tmp_path: Path, caplog):
    """Records that carry their own poses ignore a pose source: said once, on the data logger."""
    from test_data_helpers import make_png, own_record, write_lines
    from test_data_navila import write_navila

    source = _write(tmp_path / "val.json.gz", {"episodes": [_episode(episode_id=914)]})
    make_png(tmp_path / "a.png")
    own = write_lines(tmp_path / "own.jsonl", [own_record("ep-1", ["a.png"])])
    with caplog.at_level(logging.WARNING, logger="vln_gym.data"):
        assert len(load_episodes(own, pose_source=source)) == 1
    assert f"pose_source {source} was not used" in caplog.text
    caplog.clear()
    navila = write_navila(tmp_path / "navila", video="914")
    with caplog.at_level(logging.WARNING, logger="vln_gym.data"):
        joined = load_episodes(navila, pose_source=source)
        load_episodes(own, pose_source=source, on_error="skip", format="sharegpt")  # no good record
    assert {e.extra["pose_source"] for e in joined} == {"habitat-start"}
    assert "was not used" not in caplog.text


def test_a_pose_source_that_cannot_be_read_fails_the_load_once(tmp_path: Path, capsys):
    """It was a traceback for NaVILA (even with on_error='skip'), once per trajectory for VLN-Ego, and
    passed unread (exit 0) for records with their own poses."""
    from test_data_helpers import make_png, own_record, write_lines
    from test_data_navila import write_navila

    from agents.cli import main

    broken = tmp_path / "fake.json.gz"
    broken.write_bytes(b"no gzip here")
    missing = tmp_path / "nope.json.gz"
    navila = write_navila(tmp_path / "navila", video="914")
    make_png(tmp_path / "a.png")
    own = write_lines(tmp_path / "own.jsonl", [own_record("ep-1", ["a.png"])])
    for data, source in ((navila, broken), (own, missing)):
        with pytest.raises(DataError, match=re.escape(str(source))):
            load_episodes(data, pose_source=source, on_error="skip")
        assert main(["validate", str(data), "--pose-source", str(source)]) == 1
        out, err = capsys.readouterr()
        assert out.splitlines()[0].startswith(f"{source}: file: ") and len(out.splitlines()) == 1
        assert "the pose source cannot be read; no record was read" in err


def test_ids_scene_and_reference_path_of_the_wrong_kind_are_problems(tmp_path: Path):
    bad = [
        _episode(episode_id=[1]),
        _episode(episode_id=1.0),
        _episode(episode_id=True),
        _episode(episode_id=11, trajectory_id={"a": 1}),
        _episode(episode_id=12, scene_id=5),
        _episode(episode_id=13, reference_path=[]),
    ]
    path = _write(tmp_path / "s.json.gz", {"episodes": bad})
    with pytest.raises(DataError) as caught:
        read_habitat_episodes(path)
    assert [(p.field, p.message) for p in caught.value.problems] == [
        ("episodes[0].episode_id", "expected a non-empty string or an integer, got [1]"),
        ("episodes[1].episode_id", "expected a non-empty string or an integer, got 1.0"),
        ("episodes[2].episode_id", "expected a non-empty string or an integer, got True"),
        ("episodes[3].trajectory_id", "expected a non-empty string or an integer (or null), got {'a': 1}"),
        ("episodes[4].scene_id", "expected a scene path string (or null), got 5"),
        ("episodes[5].reference_path", "expected a non-empty list of positions, got []"),
    ]
    good = [_episode(episode_id="a", trajectory_id=None, scene_id=None, reference_path=None), _episode()]
    del good[1]["reference_path"], good[1]["trajectory_id"], good[1]["scene_id"]
    episodes = read_habitat_episodes(_write(tmp_path / "g.json.gz", {"episodes": good}))
    for episode in episodes.values():  # null and absent mean the same
        assert episode.reference_path == ((0.0, 0.0, 0.0),)
        assert episode.trajectory_id is None and episode.scene_id is None


GT = {"7": {"actions": [1, 0], "locations": [[0, 0, 0], [0, 0, -0.25]]}}


@pytest.mark.parametrize("gt_name", ["s_gt.json", "s_gt.json.gz"])
def test_a_decompressed_episode_file_reads_with_its_gt_file(tmp_path: Path, gt_name: str):
    path = tmp_path / "s" / "s.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"episodes": [_episode()]}, indent=2))
    gt = tmp_path / "s" / gt_name
    if gt_name.endswith(".gz"):
        _write(gt, GT)
    else:
        gt.write_text(json.dumps(GT))
    for source in (path, path.parent):  # the file, or its split folder
        episode = read_habitat_episodes(source)["7"]
        assert episode.actions == (1, 0) and episode.locations == ((0, 0, 0), (0, 0, -0.25))
    # The gt file found beside it is the one read.
    gt.write_bytes(gzip.compress(b"{") if gt_name.endswith(".gz") else b"{")
    with pytest.raises(DataError, match=re.escape(f"{gt_name}:1: json: truncated JSON")):
        read_habitat_episodes(path)


def test_gt_file_of_the_same_kind_wins_and_a_gzip_named_json_is_refused(tmp_path: Path):
    path = _write(tmp_path / "s.json.gz", {"episodes": [_episode()]})
    _write(tmp_path / "s_gt.json.gz", GT)
    (tmp_path / "s_gt.json").write_text("not read")
    assert read_habitat_episodes(path)["7"].actions == (1, 0)
    misnamed = tmp_path / "m.json"
    misnamed.write_bytes(path.read_bytes())
    with pytest.raises(DataError, match=r"m\.json: file: is gzip-compressed: name it \*\.json\.gz"):
        read_habitat_episodes(misnamed)
    with pytest.raises(DataError, match=r"folder has no empty\.json\.gz or empty\.json"):
        read_habitat_episodes((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_truncated_episode_files_say_truncated(tmp_path: Path):
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(b'{"episodes": ['))
    with pytest.raises(DataError) as caught:
        read_habitat_episodes(path)
    assert str(caught.value) == f"{path}:1: json: truncated JSON (Expecting value at column 15)"
    path.write_bytes(gzip.compress(json.dumps({"episodes": [_episode()]}).encode())[:-12])
    with pytest.raises(DataError, match=r"t\.json\.gz: file: truncated gzip file"):
        read_habitat_episodes(path)
    plain = tmp_path / "p.json"
    plain.write_text('{"episodes": [\n  {"episode_id": 1,')
    with pytest.raises(DataError, match=r"p\.json:2: json: truncated JSON"):
        read_habitat_episodes(plain)
