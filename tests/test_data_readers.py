"""Each reader on small files written here: VLM-R1, ShareGPT (conversations or messages), own jsonl."""

from __future__ import annotations

import json
import math

import pytest
from test_data_helpers import POSE, make_png, own_record, sharegpt_record, write_lines

from vln_gym.data import DataError, load_episodes


@pytest.fixture
def media(tmp_path):
    """Folder with three tiny images a.png, b.png, c.png."""
    folder = tmp_path / "media"
    for name, color in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
        make_png(folder / f"{name}.png", color)
    return folder


def test_vlm_r1_single_image_string_and_system_turn(tmp_path, media):
    record = {
        "id": 7,
        "image": "a.png",
        "conversations": [
            {"from": "system", "value": "You are a robot."},
            {"from": "human", "value": "<image>Turn towards the red chair and stop."},
            {"from": "gpt", "value": "<think>chair left</think><answer>TURN_LEFT</answer>"},
        ],
        **POSE,
    }
    path = write_lines(tmp_path / "r1.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media)
    assert episode.episode_id == "7"
    assert episode.images == (str(media / "a.png"),)
    assert episode.instruction == "Turn towards the red chair and stop."  # prompt without the <image> tag
    assert episode.system_prompt == "You are a robot."
    assert episode.prompt == "<image>Turn towards the red chair and stop."
    assert episode.expert_response.startswith("<think>")
    assert episode.agent_position == (1.0, 0.0, 2.0)
    assert episode.distance_to_goal == pytest.approx(5.0)  # |(3, 0, 4)|
    assert episode.source == f"{path}:1"
    assert episode.extra["pose_source"] == "record"


def test_vlm_r1_records_read_as_vlm_r1_reads_them(tmp_path, media):
    """grpo_jsonl.py: turn 0 = problem, turn 1 = solution (roles unchecked), images joined to the image
    folder, placeholders stripped and not counted, extra keys such as accu_reward_method kept."""
    record = {
        "id": "r",
        "image": ["a.png", "b.png"],  # two images, one placeholder: VLM-R1 accepts it
        "conversations": [
            {"from": "user", "value": "<image>Go to the door."},
            {"from": "assistant", "value": "<answer>MOVE_FORWARD</answer>"},
        ],
        "accu_reward_method": "mcq",
        **POSE,
    }
    path = write_lines(tmp_path / "r1.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media)
    assert episode.images == (str(media / "a.png"), str(media / "b.png"))
    assert episode.instruction == "Go to the door."
    assert episode.expert_response == "<answer>MOVE_FORWARD</answer>"
    assert episode.extra["accu_reward_method"] == "mcq"
    # ShareGPT keeps LLaMA-Factory's rule: the counts must match.
    sharegpt = write_lines(tmp_path / "sg.jsonl", [{**record, "images": record.pop("image")}])
    with pytest.raises(DataError, match="1 <image> placeholder\\(s\\) in the dialogue, 2 image\\(s\\)"):
        load_episodes(sharegpt, media_dir=media)


def test_sharegpt_json_array_quoted_instruction_and_generated_ids(tmp_path, media):
    records = [
        sharegpt_record(["a.png", "b.png"]),
        sharegpt_record(["c.png"], instruction="it's the man's door"),
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records, indent=2))
    first, second = load_episodes(path, media_dir=media)
    assert first.instruction == "walk to the sofa"
    assert second.instruction == "it's the man's door"  # apostrophes inside the quotes survive
    assert first.images == (str(media / "a.png"), str(media / "b.png"))
    assert (first.episode_id, second.episode_id) == ("data[0]", "data[1]")
    assert first.expert_response == "A. Move forward 25 cm"


def test_openai_messages_with_content_parts(tmp_path, media):
    record = {
        "messages": [
            {"role": "system", "content": "Navigate."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Go up the stairs."}]},
            {"role": "assistant", "content": "MOVE_FORWARD"},
        ],
        "images": ["a.png"],
        **POSE,
    }
    path = write_lines(tmp_path / "oa.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media)
    assert episode.instruction == "Go up the stairs."
    assert episode.system_prompt == "Navigate."
    assert episode.expert_response == "MOVE_FORWARD"


def test_relative_images_default_to_the_data_file_folder(tmp_path):
    make_png(tmp_path / "frames" / "x.png")
    path = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["frames/x.png"])])
    (episode,) = load_episodes(path)
    assert episode.images == (str(tmp_path / "frames" / "x.png"),)


def test_a_data_path_through_dot_dot_resolves_images_in_the_files_folder(tmp_path, monkeypatch):
    """``../data/d.jsonl`` from another folder, and ``link/../data/d.jsonl`` through a linked folder (where
    the file system's ``..`` is not the written one's): the images are the file's folder's, not refused as
    outside ``/here/../data`` or looked for in a folder that does not exist."""
    data = tmp_path / "elsewhere" / "data"
    make_png(data / "frames" / "x.png")
    write_lines(data / "d.jsonl", [sharegpt_record(["frames/x.png"])])
    (tmp_path / "elsewhere" / "deeper").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deeper")  # link/.. is elsewhere, not tmp_path
    expected = (str(data / "frames" / "x.png"),)
    assert load_episodes(tmp_path / "link" / ".." / "data" / "d.jsonl")[0].images == expected
    monkeypatch.chdir(tmp_path / "elsewhere" / "deeper")
    assert load_episodes("../data/d.jsonl")[0].images == expected


def test_field_map_renames_columns(tmp_path, media):
    record = {
        "dialog": [
            {"role": "user", "content": "<image> find the lamp"},
            {"role": "assistant", "content": "STOP"},
        ],
        "frames": ["b.png"],
        "pos": [0.0, 0.0],
        "yaw": 90.0,
        "target": [3.0, 4.0],
        "uid": "ep-1",
    }
    path = write_lines(tmp_path / "mapped.jsonl", [record])
    field_map = {
        "messages": "dialog",
        "images": "frames",
        "agent_position": "pos",
        "agent_heading": "yaw",
        "goal_position": "target",
        "id": "uid",
    }
    (episode,) = load_episodes(
        path, field_map=field_map, media_dir=media, heading_unit="deg", format="sharegpt"
    )
    assert episode.episode_id == "ep-1"
    assert episode.agent_position == (0.0, 0.0, 0.0)  # 2-D [x, z] lifted
    assert episode.goal_position == (3.0, 0.0, 4.0)
    assert episode.agent_heading == pytest.approx(math.pi / 2)  # degrees converted
    assert episode.distance_to_goal == pytest.approx(5.0)


def test_field_map_problem_names_the_file_column(tmp_path, media):
    record = sharegpt_record(["a.png"])
    record["target"] = record.pop("goal_position")
    record["target"] = "far away"
    path = write_lines(tmp_path / "m.jsonl", [record])
    with pytest.raises(DataError) as caught:
        load_episodes(path, field_map={"goal_position": "target"}, media_dir=media)
    assert f"{path}:1: target: expected a list of 2" in str(caught.value)


def test_privileged_optional_fields_are_converted(tmp_path, media):
    record = sharegpt_record(
        ["a.png"],
        distance_to_goal=7.5,
        reference_path=[[0, 0], [1, 2, 3]],
        expert_actions=[1, 2, 0],
        geodesic_distance=8.0,
        scene_id="17DRP5sb8fy",
        success_distance=3.0,
        trajectory_id="t1",
        step_index=4,
        split="train",
    )
    path = write_lines(tmp_path / "p.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media)
    assert episode.distance_to_goal == 7.5  # given value wins over the Euclidean one
    assert episode.reference_path == ((0.0, 0.0, 0.0), (1.0, 2.0, 3.0))
    assert episode.expert_actions == (1, 2, 0)
    assert (episode.scene_id, episode.trajectory_id, episode.step_index) == ("17DRP5sb8fy", "t1", 4)
    assert episode.extra["split"] == "train"  # unknown columns are kept


def test_own_format_reads_every_field(tmp_path, media):
    record = own_record(
        "w-1",
        ["a.png", "c.png"],
        system_prompt="sys",
        prompt="<image><image> go",
        expert_response="STOP",
        expert_actions=[0],
        source="world:seed=3",
        room="kitchen",
    )
    path = write_lines(tmp_path / "own.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media)
    assert episode.episode_id == "w-1"
    assert episode.instruction == "go to the door"
    assert episode.images == (str(media / "a.png"), str(media / "c.png"))
    assert (episode.system_prompt, episode.prompt, episode.expert_response) == (
        "sys",
        "<image><image> go",
        "STOP",
    )
    assert episode.source == "world:seed=3"
    assert episode.extra == {"room": "kitchen"}


def test_auto_detection_is_per_file_and_explicit_format_wins(tmp_path, media):
    own = write_lines(tmp_path / "own.jsonl", [own_record("o", ["a.png"])])
    chat = write_lines(tmp_path / "chat.jsonl", [sharegpt_record(["b.png"], id="c")])
    episodes = load_episodes([own, chat], media_dir=media)
    assert [e.episode_id for e in episodes] == ["o", "c"]
    with pytest.raises(DataError) as caught:
        load_episodes(chat, media_dir=media, format="vlm-r1")  # VLM-R1 reads `image`, which this file lacks
    assert f"{chat}:1: image: missing" in str(caught.value)


def test_undetectable_record_is_reported(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [{"question": "?", "answer": "!"}])
    with pytest.raises(DataError, match=r"x\.jsonl:1: record: cannot detect the format"):
        load_episodes(path)


def test_require_pose_false_gives_nan_pose(tmp_path, media):
    record = sharegpt_record(["a.png"])
    for name in POSE:
        del record[name]
    path = write_lines(tmp_path / "nopose.jsonl", [record])
    (episode,) = load_episodes(path, media_dir=media, require_pose=False)
    assert math.isnan(episode.agent_heading) and math.isnan(episode.distance_to_goal)
    assert episode.extra["pose_source"] == "missing"


def test_bad_options_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        load_episodes(tmp_path, format="csv")
    with pytest.raises(ValueError, match="heading_unit"):
        load_episodes(tmp_path, heading_unit="grad")
    with pytest.raises(ValueError, match="on_error"):
        load_episodes(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="unknown field"):
        load_episodes(tmp_path, field_map={"goal": "target"})


def test_an_unknown_role_hints_at_custom_role_tags_unless_tags_were_given(tmp_path, media):
    record = sharegpt_record(["a.png"], id="r")
    record["conversations"][0]["from"] = "navigator"
    path = write_lines(tmp_path / "d.jsonl", [record])
    with pytest.raises(
        DataError, match=r"unknown role 'navigator'.*custom role names: pass dataset_info tags"
    ):
        load_episodes(path, media_dir=media)
    with pytest.raises(DataError, match="unknown role 'navigator'") as caught:
        load_episodes(path, media_dir=media, chat_tags={"user_tag": "pilot"})
    assert "custom role names" not in str(caught.value)
