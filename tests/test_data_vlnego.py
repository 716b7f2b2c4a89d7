"""VLN-Ego folders: pose integration by hand, the real sample, and its LLaMA-Factory export."""

from __future__ import annotations

import json
import math

import pytest
from test_data_helpers import make_png

from vln_gym.data import DataError, integrate_actions, load_episodes, validate_files
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

REMAP_KEY = "VLN-Ego/data/r2r_training_rgb"


def make_trajectory(folder, actions, instruction="go left then stop", frames=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "action_list.json").write_text(json.dumps(actions, indent=4))
    (folder / "instruction.txt").write_text(instruction)
    for step in range(len(actions)) if frames is None else frames:
        make_png(folder / f"step_{step}.png", (step * 20 % 255, 0, 0))
    return folder


def test_integrate_actions_by_hand():
    actions = (MOVE_FORWARD, TURN_LEFT, MOVE_FORWARD, TURN_RIGHT, MOVE_FORWARD, STOP)
    positions, headings = integrate_actions(actions, forward_step=0.25, turn_angle=90.0)
    expected = [
        (0, 0, 0),
        (0, 0, -0.25),
        (0, 0, -0.25),
        (-0.25, 0, -0.25),
        (-0.25, 0, -0.25),
        (-0.25, 0, -0.5),
    ]
    assert len(positions) == len(headings) == len(actions) + 1
    for got, want in zip(positions[:-1], expected, strict=True):
        assert got == pytest.approx(want, abs=1e-12)
    assert positions[-1] == pytest.approx((-0.25, 0, -0.5), abs=1e-12)  # STOP does not move
    assert headings[:4] == pytest.approx([0.0, 0.0, math.pi / 2, math.pi / 2])
    assert headings[4] == pytest.approx(0.0, abs=1e-12)


def test_small_trajectory_folder(tmp_path):
    actions = [MOVE_FORWARD, TURN_LEFT, MOVE_FORWARD, STOP]
    folder = make_trajectory(tmp_path / "ep_1" / "traj_2", actions)
    episodes = load_episodes(tmp_path, turn_angle=90.0)
    assert [e.episode_id for e in episodes] == [f"ep_1/traj_2/step_{n}" for n in range(4)]
    step2 = episodes[2]
    assert step2.agent_position == pytest.approx((0, 0, -0.25))
    assert step2.agent_heading == pytest.approx(math.pi / 2)
    assert step2.goal_position == pytest.approx((-0.25, 0, -0.25))
    assert step2.distance_to_goal == pytest.approx(0.25)
    assert step2.expert_actions == (MOVE_FORWARD, STOP)
    assert step2.images == tuple(str(folder / f"step_{n}.png") for n in range(3))
    flat_path = [c for point in step2.reference_path for c in point]  # the turn in place is merged
    assert flat_path == pytest.approx([0, 0, 0, 0, 0, -0.25, -0.25, 0, -0.25])
    assert step2.instruction == "go left then stop"
    assert step2.source == f"{folder / 'action_list.json'}:4"  # the line of action 2 in the indented list
    assert episodes[-1].distance_to_goal == 0.0


def test_missing_frame_and_bad_action_are_reported(tmp_path):
    make_trajectory(tmp_path / "ep_1" / "traj_1", [1, 1, 0], frames=[0, 2])
    bad = make_trajectory(tmp_path / "ep_2" / "traj_1", [1, 7, 0])
    report = validate_files(tmp_path)
    lines = [str(problem) for problem in report.problems]
    assert any("ep_1/traj_1: images: missing frame(s) step_1" in line for line in lines)
    assert f"{bad / 'action_list.json'}:3: [1].action: expected an action id 0-3" in "\n".join(lines)
    assert report.num_ok == 0
    # The 3 steps of the trajectory with a missing frame are 3 bad records; the unreadable action list,
    # whose steps cannot be counted, is one.
    assert (report.num_records, len(report.problems)) == (4, 2)


def test_a_missing_instruction_counts_every_step_of_its_trajectory(tmp_path):
    folder = make_trajectory(tmp_path / "ep_1" / "traj_1", [1, 1, 2, 0])
    (folder / "instruction.txt").unlink()
    report = validate_files(tmp_path)
    assert (report.num_records, report.num_ok) == (4, 0)
    assert [str(p) for p in report.problems] == [
        f"{folder / 'instruction.txt'}: instruction: missing instruction.txt"
    ]


def test_folder_without_trajectories(tmp_path):
    with pytest.raises(DataError, match="no VLN-Ego trajectory folders"):
        load_episodes(tmp_path)


def test_real_vln_ego_sample(vln_ego_sample, vln_ego_trajectory):
    episodes = load_episodes(vln_ego_sample / "rgb_images_r2r_debug")
    actions = json.loads((vln_ego_trajectory / "action_list.json").read_text())
    assert len(episodes) == len(actions) == 65
    first, step12, last = episodes[0], episodes[12], episodes[-1]
    assert step12.episode_id == "ep_2849/traj_1871/step_12"
    assert step12.trajectory_id == "ep_2849/traj_1871" and step12.step_index == 12
    assert step12.images == tuple(str(vln_ego_trajectory / f"step_{n}.jpg") for n in range(13))
    assert step12.expert_actions == tuple(actions[12:])
    # 11 right turns of 15 degrees then one step: heading -165 deg at steps 11..
    assert step12.agent_heading == pytest.approx(math.radians(-165))
    # ... then one MOVE_FORWARD of 0.25 m along (-sin h, -cos h) with h = -165 deg
    h = math.radians(-165)
    assert step12.agent_position == pytest.approx((-0.25 * math.sin(h), 0, -0.25 * math.cos(h)))
    assert first.agent_position == (0.0, 0.0, 0.0) and first.agent_heading == 0.0
    assert first.instruction.startswith("Leave the room, go right")
    assert actions[-1] == STOP and last.distance_to_goal == 0.0 and last.agent_position == last.goal_position
    assert first.reference_path[0] == (0.0, 0.0, 0.0) and first.reference_path[-1] == first.goal_position
    assert all(e.goal_position == first.goal_position for e in episodes)


def test_turn_angle_changes_the_rebuilt_goal(vln_ego_trajectory):
    goal15 = load_episodes(vln_ego_trajectory)[0].goal_position
    goal30 = load_episodes(vln_ego_trajectory, turn_angle=30.0)[0].goal_position
    assert goal15 != pytest.approx(goal30)


def test_real_llama_factory_export_with_path_remap(vln_ego_sample, vln_ego_trajectory):
    path = vln_ego_sample / "r2r_16_images_4act_debug.json"
    remap = {REMAP_KEY: str(vln_ego_sample / "rgb_images_r2r_debug")}
    episodes = load_episodes(path, path_remap=remap, check_images=True)
    folder_episodes = load_episodes(vln_ego_trajectory)
    assert len(episodes) == 65
    for index in (0, 12, 64):
        episode, reference = episodes[index], folder_episodes[index]
        assert episode.extra["pose_source"] == "vln-ego-actions"
        assert episode.images[-1] == reference.images[-1]
        assert episode.agent_position == reference.agent_position
        assert episode.agent_heading == reference.agent_heading
        assert episode.goal_position == reference.goal_position
        assert episode.expert_actions == reference.expert_actions
        assert episode.instruction == reference.instruction  # the quoted instruction of the VLN-R1 prompt
    assert len(episodes[64].images) == 17  # 16 sampled history frames + the current one
    assert episodes[64].distance_to_goal == 0.0
    assert episodes[12].expert_response.startswith("A. Move forward 25 cm")
    assert episodes[12].episode_id == "r2r_16_images_4act_debug[12]"


def test_llama_factory_export_without_remap_names_the_missing_images(vln_ego_sample):
    """Its 969 image references do not exist here: one line per record says so and names the remap,
    whatever the pose options (validate used to say "65 ok" with --no-require-pose)."""
    path = vln_ego_sample / "r2r_16_images_4act_debug.json"
    for require_pose in (True, False):
        report = validate_files(path, require_pose=require_pose)
        assert (report.num_records, report.num_ok, len(report.problems)) == (65, 0, 65)
        first = str(report.problems[0])
        assert first.startswith(
            f"{path}:2: [0].images[0]: image not found: "
            "'VLN-Ego/data/r2r_training_rgb/ep_2849/traj_1871/step_0.jpg'"
        )
        assert first.endswith("--path-remap VLN-Ego=LOCAL_FOLDER")


def test_rebuild_refuses_a_step_beyond_the_action_list(tmp_path):
    folder = make_trajectory(tmp_path / "ep_1" / "traj_1", [1, 0], frames=[0, 1, 2])
    record = {
        "conversations": [{"from": "human", "value": "<image> go"}],
        "images": [str(folder / "step_2.png")],
    }
    path = tmp_path / "lf.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError) as caught:
        load_episodes(path)
    assert f"{path}:1: [0].images: cannot rebuild the pose: step_2.png is step 2" in str(caught.value)


def test_broken_frame_fails_its_step_and_the_later_ones(tmp_path):
    folder = make_trajectory(tmp_path / "ep_1" / "traj_1", [1, 1, 1, 0])
    (folder / "step_2.png").write_bytes(b"garbage")
    report = validate_files(tmp_path, check_images=True)
    assert [str(p) for p in report.problems] == [f"{folder / 'step_2.png'}: images: not an image file"]
    assert (report.num_records, report.num_ok) == (4, 2)
    assert len(load_episodes(tmp_path)) == 4  # frames are only decoded with check_images


@pytest.mark.parametrize("content", ["", "  \n", "[]", "[\n]\n"])
def test_an_empty_action_list_is_reported_as_such(tmp_path, content):
    folder = make_trajectory(tmp_path / "ep_1" / "traj_1", [])
    (folder / "action_list.json").write_text(content)
    report = validate_files(tmp_path)
    assert [(p.path, p.field, p.message) for p in report.problems] == [
        (str(folder / "action_list.json"), "actions", "empty action list")
    ]
    assert (report.num_records, report.num_unread_files) == (1, 0)
