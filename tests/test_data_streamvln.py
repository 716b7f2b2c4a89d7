"""StreamVLN / InternNav trajectories: writer-faithful fixtures (tiny JPEGs), poses from the real R2R-CE
episodes in ../shared, round trip, env replay, and bad input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import gymnasium as gym
import pytest
from test_data_helpers import make_png

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.eval.evaluate import evaluate
from vln_gym.data import DataError, load_episodes, validate_files
from vln_gym.data.cli import convert_main


def write_trajectory(root: Path, video: str, actions: list[int], instructions: list[str], entry_id=0) -> dict:
    """One entry as StreamVLN's writer makes it: actions [-1, a1..aN] (no final STOP), frames 001..N+1."""
    folder = root / video / "rgb"
    for k in range(len(actions) + 1):
        make_png(folder / f"{k + 1:03d}.jpg", (k * 7 % 255, 90, 30), size=(8, 6))
    return {"id": entry_id, "video": video, "instructions": instructions, "actions": [-1, *actions]}


def write_annotations(root: Path, entries: list[dict]) -> Path:
    path = root / "annotations.json"
    path.write_text(json.dumps(entries, indent=2))
    return path


def test_reads_every_frame_as_a_decision_with_the_implicit_stop(tmp_path: Path):
    entry = write_trajectory(
        tmp_path, "images/scan1_r2r_000007", [1, 2, 1], ["go ahead and left.", "other words"]
    )
    path = write_annotations(tmp_path, [entry])
    episodes = load_episodes(path)
    assert len(episodes) == 8  # 4 frames x 2 instructions
    first, *_, last = episodes[:4]
    assert first.episode_id == "0/i0/step_0" and first.trajectory_id == "0/i0"
    assert first.images == (str(tmp_path / "images/scan1_r2r_000007/rgb/001.jpg"),)
    assert first.expert_actions == (1, 2, 1, 0) and last.expert_actions == (0,)
    assert len(last.images) == 4 and last.distance_to_goal == pytest.approx(0.0)
    assert episodes[4].instruction == "other words" and episodes[4].trajectory_id == "0/i1"
    assert first.extra["pose_source"] == "vln-ego-actions"
    env = gym.make("VLN-v0", data_files=path, views="trajectory", max_steps=10, image_size=(8, 8))
    env.reset(options={"episode_index": 0})
    for action in (1, 2, 1, 0):
        _, _, terminated, _, info = env.step(action)
    assert terminated and info["success"]


def test_round_trip_through_convert(tmp_path: Path):
    entry = write_trajectory(tmp_path, "images/scan1_r2r_000007", [1, 3, 0], ["go"])  # an explicit STOP
    path = write_annotations(tmp_path, [entry])
    episodes = load_episodes(path)
    assert len(episodes) == 3 and episodes[-1].expert_actions == (0,)  # the frame after STOP is no decision
    out = tmp_path / "own.jsonl"
    assert convert_main([str(path), "--out", str(out)]) == 0
    assert load_episodes(out) == episodes


def test_bad_entries_name_file_line_and_field(tmp_path: Path):
    good = write_trajectory(tmp_path, "images/a_r2r_000001", [1, 1], ["go"])
    short = write_trajectory(tmp_path, "images/b_r2r_000002", [1, 1], ["go"], entry_id=1)
    (tmp_path / "images/b_r2r_000002/rgb/003.jpg").unlink()
    entries = [good, short, {"id": 2, "video": "images/c", "instructions": ["go"], "actions": [1, 1]}]
    entries.append({"id": 3, "video": "images/a_r2r_000001", "instructions": [], "actions": [-1, 7]})
    path = write_annotations(tmp_path, entries)
    report = validate_files(path)
    assert report.num_ok == 3  # the good entry's three decisions
    assert [str(p) for p in report.problems] == [
        f"{path}:14: [1].video: {tmp_path}/images/b_r2r_000002/rgb holds 2 frames for 3 action entries "
        "(one frame each)",
        f"{path}:26: [2].actions[0]: is 1; StreamVLN starts with -1 (the initial frame)",
        f"{path}:37: [3].actions[1]: expected an action id 0-3 (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT), "
        "got 7",
        f"{path}:37: [3].instructions: expected a non-empty list of instruction strings",
    ]


def _gt_fixture(root: Path, split: Path, count: int = 3) -> tuple[Path, list[dict]]:
    """StreamVLN-layout trajectories for the first ``count`` real val_seen episodes, with their gt actions."""
    with gzip.open(split / "val_seen.json.gz", "rt") as handle:
        episodes = json.load(handle)["episodes"][:count]
    with gzip.open(split / "val_seen_gt.json.gz", "rt") as handle:
        gt = json.load(handle)
    entries = []
    for index, episode in enumerate(episodes):
        scan = episode["scene_id"].split("/")[-2]
        video = f"images/{scan}_r2r_{episode['episode_id']:06d}"
        actions = gt[str(episode["episode_id"])]["actions"][:-1]  # the writer stores no STOP
        text = episode["instruction"]["instruction_text"]
        entries.append(write_trajectory(root, video, actions, [text], entry_id=index))
    return write_annotations(root, entries), episodes


def test_r2r_ce_episodes_give_the_poses_and_the_expert_replay_succeeds(tmp_path: Path, r2r_ce_split: Path):
    path, habitat = _gt_fixture(tmp_path, r2r_ce_split)
    episodes = load_episodes(path, pose_source=r2r_ce_split / "val_seen.json.gz")
    by_trajectory: dict[str, list] = {}
    for episode in episodes:
        by_trajectory.setdefault(episode.trajectory_id, []).append(episode)
    for raw, steps in zip(habitat, by_trajectory.values(), strict=True):
        start = steps[0]
        assert start.extra["pose_source"] == "habitat-gt"
        assert start.agent_position == pytest.approx(raw["start_position"])
        assert start.goal_position == pytest.approx(raw["goals"][0]["position"])
        assert start.geodesic_distance == pytest.approx(raw["info"]["geodesic_distance"])
        assert start.reference_path[0] == pytest.approx(raw["reference_path"][0])
        assert start.success_distance == 3.0 and start.scene_id == raw["scene_id"]
        q = raw["start_rotation"]
        assert start.agent_heading == pytest.approx(2 * math.atan2(q[1], q[3]))
    # The expert's replay in trajectory mode reaches the goal on every joined trajectory.
    starts = [i for i, e in enumerate(episodes) if e.step_index == 0]
    result = evaluate(
        "expert",
        env_kwargs={"episodes": episodes, "views": "trajectory", "max_steps": 500, "image_size": [8, 8]},
        episode_indices=starts,
    )
    assert [r["metrics"]["success"] for r in result.episodes] == [1.0] * len(starts)


def test_pose_source_without_the_episode_says_so(tmp_path: Path, r2r_ce_split: Path):
    entry = write_trajectory(tmp_path, "images/x_r2r_999999", [1], ["go"])
    path = write_annotations(tmp_path, [entry])
    with pytest.raises(DataError) as caught:
        load_episodes(path, pose_source=r2r_ce_split)
    assert str(caught.value) == (
        f"{path}:2: [0].video: episode id '999999' is not in the pose source {r2r_ce_split}"
    )


def _navila_answers(actions: list[int]) -> list[str]:
    """NaVILA's merged steps: runs of one primitive, at most three, as its answer sentences."""
    answers, index = [], 0
    words = {1: ("move forward", 25, "cm"), 2: ("turn left", 15, "degree"), 3: ("turn right", 15, "degree")}
    while index < len(actions):
        action = actions[index]
        if action == 0:
            answers.append("I think I should stop because I have finished the instruction.")
            break
        run = 1
        while run < 3 and index + run < len(actions) and actions[index + run] == action:
            run += 1
        what, unit_amount, unit = words[action]
        answers.append(f"The next action is {what} {unit_amount * run} {unit}.")
        index += run
    return answers


def test_r2r_ce_poses_join_navila_and_vln_ego_layouts(tmp_path: Path, r2r_ce_split: Path):
    from test_data_navila import write_navila

    with gzip.open(r2r_ce_split / "val_seen_gt.json.gz", "rt") as handle:
        gt = json.load(handle)["1"]
    navila = write_navila(tmp_path / "navila", video="1", answers=_navila_answers(gt["actions"]), repeat=None)
    joined = load_episodes(navila, pose_source=r2r_ce_split)
    assert {e.extra["pose_source"] for e in joined} == {"habitat-gt"}
    assert joined[0].expert_actions == tuple(gt["actions"])
    assert all(tuple(e.agent_position) in {tuple(p) for p in gt["locations"]} for e in joined)
    folder = tmp_path / "ego" / "ep_1" / "traj_37"
    for step in range(len(gt["actions"])):
        make_png(folder / f"step_{step}.jpg", size=(8, 6))
    (folder / "action_list.json").write_text(json.dumps(gt["actions"]))
    (folder / "instruction.txt").write_text("walk down the stairs")
    ego = load_episodes(tmp_path / "ego", pose_source=r2r_ce_split)
    forwards = [gt["actions"][:step].count(1) for step in range(len(gt["actions"]))]
    assert [e.agent_position for e in ego] == [tuple(gt["locations"][n]) for n in forwards]
    assert {e.extra["pose_source"] for e in ego} == {"habitat-gt"}


def test_an_id_that_is_not_a_string_or_integer_is_a_problem(tmp_path: Path):
    entries = [
        write_trajectory(tmp_path, "images/a_r2r_000001", [1], ["go"], entry_id=bad)
        for bad in (None, [1, 2], True, "")
    ]
    named = write_trajectory(tmp_path, "images/a_r2r_000001", [1], ["go"], entry_id="traj-9")
    unnamed = write_trajectory(tmp_path, "images/a_r2r_000001", [1], ["go"])
    del unnamed["id"]
    path = write_annotations(tmp_path, [*entries, named])
    report = validate_files(path)
    assert [(p.field, p.message) for p in report.problems] == [
        ("[0].id", "expected a non-empty string or an integer, got None"),
        ("[1].id", "expected a non-empty string or an integer, got [1, 2]"),
        ("[2].id", "expected a non-empty string or an integer, got True"),
        ("[3].id", "expected a non-empty string or an integer, got ''"),
    ]
    assert report.num_ok == 2  # the named entry's two decisions
    assert load_episodes(write_annotations(tmp_path, [named]))[0].episode_id == "traj-9/step_0"
    # No id at all: the Habitat episode id at the end of the video folder.
    assert load_episodes(write_annotations(tmp_path, [unnamed]))[0].episode_id == "1/step_0"


def test_a_stop_before_the_last_action_is_a_problem(tmp_path: Path):
    entry = write_trajectory(tmp_path, "images/a_r2r_000001", [0, 1, 0], ["go"])
    path = write_annotations(tmp_path, [entry])
    report = validate_files(path)
    assert [str(p) for p in report.problems] == [
        f"{path}:2: [0].actions: STOP at index 1 before the end (STOP ends the episode)"
    ]
    assert report.num_ok == 0
