"""NaVILA per-step annotations: a writer-faithful fixture (tiny JPEGs), poses, round trip, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from test_data_helpers import make_png

import vln_gym  # noqa: F401  (registers VLN-v0)
from vln_gym.data import DataError, load_episodes, validate_files
from vln_gym.data.cli import convert_main
from vln_gym.data.navila import answer_actions
from vln_gym.data.problems import FieldError

FORWARD_75 = "The next action is move forward 75 cm."
LEFT_30 = "The next action is turn left 30 degree."
STOP = "I think I should stop because I have finished the instruction."


def write_navila(
    root: Path, video: str = "914", answers=(LEFT_30, FORWARD_75, STOP), repeat: int | None = 1
) -> Path:
    """annotations.json in NaVILA's layout: one record per merged step, frames = the whole history."""
    primitives = [len(answer_actions(a, 0.25, 15.0)) for a in answers]
    records, done = [], 0
    for step, answer in enumerate(answers):
        frames = [f"{video}/frame_{i}.jpg" for i in range(done + 1)]
        records.append(
            {
                "video_id": f"{video}-{step}",
                "q": "walk to the kitchen. stop by the sink.",
                "a": answer,
                "frames": frames,
            }
        )
        done += primitives[step]
    for i in range(done + 1):
        make_png(root / video / f"frame_{i}.jpg", (10 * i % 255, 80, 120), size=(8, 6))
    if repeat is not None:
        records.append(dict(records[repeat]))  # NaVILA oversamples: the same step twice
    path = root / "annotations.json"
    path.write_text(json.dumps(records))
    return path


def test_answer_sentences_by_hand():
    assert answer_actions(FORWARD_75, 0.25, 15.0) == (1, 1, 1)
    assert answer_actions("The next action is turn right 45 degree.", 0.25, 15.0) == (3, 3, 3)
    assert answer_actions(LEFT_30, 0.25, 30.0) == (2,)
    assert answer_actions(STOP, 0.25, 15.0) == (0,)
    assert answer_actions("The next action is move forward 1000 cm.", 0.25, 15.0) == (1,) * 40
    with pytest.raises(FieldError, match=r"2500000000 cm.*100000000 primitive steps.*at most 40"):
        answer_actions("The next action is move forward 2500000000 cm.", 0.25, 15.0)


def test_reads_steps_as_one_trajectory_with_integrated_poses(tmp_path: Path):
    path = write_navila(tmp_path)
    episodes = load_episodes(path)
    assert [e.episode_id for e in episodes] == ["914-0", "914-1", "914-2", "914-1#2"]
    first, second, last, repeat = episodes
    assert first.images == (str(tmp_path / "914/frame_0.jpg"),)
    assert len(second.images) == 3 and len(last.images) == 6  # 1 + 2 turns, + 3 forwards
    assert first.expert_actions == (2, 2, 1, 1, 1, 0) and second.expert_actions == (1, 1, 1, 0)
    assert last.distance_to_goal == pytest.approx(0.0) and second.distance_to_goal == pytest.approx(0.75)
    assert first.trajectory_id == "914" and second.step_index == 2
    assert repeat.images == second.images and repeat.expert_response == FORWARD_75
    assert first.extra["pose_source"] == "vln-ego-actions"
    # The env's text parser executes NaVILA's sentences, its stop included, as the data means them.
    env = gym.make(
        "VLN-v0", data_files=path, views="trajectory", action_space="text", max_steps=4, image_size=(8, 8)
    )
    env.reset(options={"episode_index": 0})
    for answer in (LEFT_30, FORWARD_75, STOP):
        _, _, terminated, _, info = env.step(answer)
    assert terminated and info["success"] and not info["invalid_action"]


def test_round_trip_through_convert(tmp_path: Path):
    path = write_navila(tmp_path)
    out = tmp_path / "out.jsonl"
    assert convert_main([str(path), "--out", str(out)]) == 0
    assert load_episodes(out) == load_episodes(path)


def test_bad_records_name_file_line_and_field(tmp_path: Path):
    path = write_navila(tmp_path, repeat=None)
    records = json.loads(path.read_text())
    records[1]["a"] = "The next action is fly up 25 cm."
    records.append({"video_id": "x", "q": 3, "a": STOP})
    path.write_text(json.dumps(records, indent=1))
    problems = [str(p) for p in validate_files(path).problems]
    assert problems == [
        f"{path}:10: [1].a: unknown NaVILA answer sentence 'The next action is fly up 25 cm.'",
        f"{path}:33: [3].frames: missing (a NaVILA record has video_id, q, a, frames)",
        f"{path}:20: [2].video_id: step 1 of video 914 is missing or bad; the 2 records of video 914 are "
        "left out (poses need the whole trajectory)",
    ]
    # Frame counts that do not follow the answers break the video, said once, nothing silently dropped.
    path = write_navila(tmp_path, repeat=None)
    records = json.loads(path.read_text())
    records[2]["frames"] = records[2]["frames"][:-1]
    path.write_text(json.dumps(records))
    report = validate_files(path)
    assert report.num_records == 3 and report.num_ok == 0
    assert [str(p) for p in report.problems] == [
        f"{path}:1: [2].frames: 5 frames at step 2, expected 6 (1 + the 5 primitive actions of the steps "
        "before); the 3 records of video 914 are left out (poses need the whole trajectory)"
    ]
    with pytest.raises(DataError, match="not a multiple of the 25 cm step"):
        answer_actions_error = "The next action is move forward 30 cm."
        records = [{"video_id": "9-0", "q": "go", "a": answer_actions_error, "frames": ["914/frame_0.jpg"]}]
        path.write_text(json.dumps(records))
        load_episodes(path)


def test_a_step_number_in_other_digits_is_a_problem_not_a_crash(tmp_path: Path):
    """``"²".isdigit()`` holds but ``int("²")`` fails: such an id was an uncaught ValueError (both paths)."""
    path = write_navila(tmp_path, repeat=None)
    records = json.loads(path.read_text())
    records[1]["video_id"] = "914-²"
    records[2]["video_id"] = "914-١"  # an Arabic-Indic 1: NaVILA's ids are ASCII
    path.write_text(json.dumps(records))
    problems = [str(p) for p in validate_files(path).problems]
    assert f"{path}:1: [1].video_id: '914-²' is not '<episode id>-<step>'" in problems
    assert f"{path}:1: [2].video_id: '914-١' is not '<episode id>-<step>'" in problems


def test_a_stop_before_the_last_step_breaks_the_video(tmp_path: Path):
    path = write_navila(tmp_path, answers=(LEFT_30, STOP, FORWARD_75), repeat=None)
    report = validate_files(path)
    assert (report.num_records, report.num_ok) == (3, 0)
    assert [str(p) for p in report.problems] == [
        f"{path}:1: [1].a: stop at step 1 of video 914, but step 2 follows; the 3 records of video 914 are "
        "left out (poses need the whole trajectory)"
    ]
