"""Bad input: every case gives a precise `path:line: field: message`; BOM, CRLF and Unicode are accepted."""

from __future__ import annotations

import json
import logging
import math

import pytest
from PIL import Image
from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

from vln_gym.data import DataError, Problem, iter_episodes, load_episodes, validate_files


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "media"
    make_png(folder / "a.png")
    make_png(folder / "b.png")
    return folder


def problems_of(path, **options) -> list[str]:
    return [str(problem) for problem in validate_files(path, **options).problems]


def single_problem(path, **options) -> str:
    problems = problems_of(path, **options)
    assert len(problems) == 1, problems
    return problems[0]


def good(media_name="a.png", **fields):
    return sharegpt_record([media_name], **fields)


def test_problem_format():
    assert str(Problem("d.jsonl", 3, "images", "no images")) == "d.jsonl:3: images: no images"
    assert str(Problem("folder", None, "file", "empty")) == "folder: file: empty"


def test_truncated_line(tmp_path, media):
    text = json.dumps(good())
    path = write_lines(tmp_path / "d.jsonl", [good(), text[:-15]])
    assert single_problem(path, media_dir=media).startswith(f"{path}:2: json: truncated JSON")


def test_non_json_line(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(), "this is not json {", good(id="x")])
    assert single_problem(path, media_dir=media).startswith(f"{path}:2: json: invalid JSON")


def test_json_but_not_an_object(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(), "[1, 2, 3]"])
    assert single_problem(path, media_dir=media) == f"{path}:2: record: expected a JSON object, got list"


def test_missing_instruction(tmp_path, media):
    record = own_record("e1", ["a.png"])
    del record["instruction"]
    path = write_lines(tmp_path / "d.jsonl", [record])
    assert single_problem(path, media_dir=media) == f"{path}:1: instruction: missing (required field)"
    chat = good()
    chat["conversations"][0]["value"] = "<image>"  # nothing but the placeholder
    path = write_lines(tmp_path / "c.jsonl", [chat])
    assert single_problem(path, media_dir=media).startswith(f"{path}:1: instruction: missing")


def test_missing_and_empty_images(tmp_path, media):
    record = good()
    del record["images"]
    record["conversations"][0]["value"] = "go to the sofa"
    path = write_lines(tmp_path / "d.jsonl", [record, sharegpt_record([], id="2")])
    problems = problems_of(path, media_dir=media)
    assert problems[0].startswith(f"{path}:1: images: missing")
    assert f"{path}:2: images: no images (a VLN record needs at least the current view)" in problems


def test_missing_privileged_field_names_it(tmp_path, media):
    record = good()
    del record["agent_heading"]
    path = write_lines(tmp_path / "d.jsonl", [record])
    assert (
        single_problem(path, media_dir=media)
        == f"{path}:1: agent_heading: missing (required privileged field)"
    )


def test_string_where_a_number_list_is_needed(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(goal_position="1,2,3"), good(id="2", agent_heading="0.5")])
    first, second = problems_of(path, media_dir=media)
    expected = "expected a list of 2 ([x, z]) or 3 ([x, y, z]) numbers, got string '1,2,3'"
    assert first == f"{path}:1: goal_position: {expected}"
    assert second.startswith(f"{path}:2: agent_heading: expected a number, got string")


def test_nan_and_inf_coordinates(tmp_path, media):
    line = json.dumps(good()).replace(
        '"agent_position": [1.0, 0.0, 2.0]', '"agent_position": [1.0, NaN, 2.0]'
    )
    path = write_lines(tmp_path / "d.jsonl", [line])
    assert (
        single_problem(path, media_dir=media)
        == f"{path}:1: agent_position: coordinate 1 is nan; must be finite"
    )
    path = write_lines(tmp_path / "e.jsonl", [good(goal_position=[math.inf, 0.0])])
    assert (
        single_problem(path, media_dir=media)
        == f"{path}:1: goal_position: coordinate 0 is inf; must be finite"
    )


def test_wrong_vector_length(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(agent_position=[1.0, 2.0, 3.0, 4.0])])
    assert single_problem(path, media_dir=media) == (
        f"{path}:1: agent_position: expected 2 ([x, z]) or 3 ([x, y, z]) coordinates, got 4"
    )


def test_heading_out_of_range_for_its_unit(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(agent_heading=90.0)])
    message = single_problem(path, media_dir=media)
    assert message.startswith(f"{path}:1: agent_heading: is 90.0 radians; must be within [-2*pi, 2*pi]")
    assert "heading_unit='deg'" in message
    assert load_episodes(path, media_dir=media, heading_unit="deg")[0].agent_heading == pytest.approx(
        math.pi / 2
    )
    path = write_lines(tmp_path / "e.jsonl", [good(agent_heading=400.0)])
    assert single_problem(path, media_dir=media, heading_unit="deg") == (
        f"{path}:1: agent_heading: is 400.0 degrees; must be within [-360, 360]"
    )


def test_missing_images_always_checked_and_images_decoded_when_asked(tmp_path, media):
    (media / "text.png").write_text("not an image at all")
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    noise.save(media / "whole.png")
    png = (media / "whole.png").read_bytes()
    (media / "cut.png").write_bytes(png[: len(png) // 2])
    records = [good("gone.png"), good("text.png", id="t"), good("cut.png", id="c")]
    path = write_lines(tmp_path / "d.jsonl", records)
    gone = f"{path}:1: images[0]: image not found: 'gone.png' -> {media / 'gone.png'} (media folder {media})"
    assert problems_of(path, media_dir=media) == [gone]
    missing, not_image, truncated = problems_of(path, media_dir=media, check_images=True)
    assert missing == gone
    assert not_image == f"{path}:2: images[0]: {media / 'text.png'}: not an image file"
    assert truncated.startswith(f"{path}:3: images[0]: {media / 'cut.png'}: unreadable or truncated image")


def test_missing_image_folders_name_the_part_to_remap(tmp_path, media):
    (media / "here").mkdir()
    record = sharegpt_record(["VLN-Ego/data/rgb/ep_1/step_0.jpg", "VLN-Ego/data/rgb/ep_1/step_1.jpg"])
    record.pop("agent_position"), record.pop("agent_heading"), record.pop("goal_position")
    path = write_lines(tmp_path / "d.jsonl", [record])
    # One line for the record, naming the image, the media folder and the remap; no pose noise.
    assert problems_of(path, media_dir=media) == [
        f"{path}:1: images[0]: image not found: 'VLN-Ego/data/rgb/ep_1/step_0.jpg' -> "
        f"{media}/VLN-Ego/data/rgb/ep_1/step_0.jpg (media folder {media}) and 1 more of its images; "
        "'VLN-Ego' does not exist here: if the paths were written on another machine, pass path_remap / "
        "--path-remap VLN-Ego=LOCAL_FOLDER"
    ]
    assert problems_of(path, media_dir=media, require_pose=False) == problems_of(path, media_dir=media)


def test_a_url_image_says_urls_are_not_fetched(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["https://example.org/frames/0.jpg"])])
    (problem,) = problems_of(path, media_dir=media)
    assert problem.startswith(f"{path}:1: images[0]: image not found: 'https://example.org/frames/0.jpg'")
    assert problem.endswith("; images are read from local files, URLs are not fetched")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\xef\xbb\xbf \n\n")
    report = validate_files(path)
    assert [str(p) for p in report.problems] == [f"{path}: file: empty file: no records"]
    assert report.summary() == "0 records, 0 ok, 0 with problems; 1 file read no records"
    assert not report.ok


def test_missing_file(tmp_path):
    assert single_problem(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file: file not found"


def test_bom_is_stripped_and_the_first_record_kept(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(id="first"), good(id="second")], bom=True)
    assert [e.episode_id for e in load_episodes(path, media_dir=media)] == ["first", "second"]
    array = tmp_path / "d.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([good(id="only")]).encode())
    assert [e.episode_id for e in load_episodes(array, media_dir=media)] == ["only"]


def test_windows_line_endings(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(id="1"), "", good(id="2")], newline="\r\n")
    episodes = load_episodes(path, media_dir=media)
    assert [e.episode_id for e in episodes] == ["1", "2"]
    assert episodes[1].source == f"{path}:3"  # blank line counted


def test_placeholder_count_must_match_images(tmp_path, media):
    more_tags = good()
    more_tags["conversations"][0]["value"] += " <image>"
    more_images = sharegpt_record(["a.png", "b.png"], id="2")
    more_images["conversations"][0]["value"] = more_images["conversations"][0]["value"].replace(
        "<image> ", "", 1
    )
    path = write_lines(tmp_path / "d.jsonl", [more_tags, more_images])
    first, second = problems_of(path, media_dir=media)
    assert first == f"{path}:1: images: 2 <image> placeholder(s) in the dialogue, 1 image(s)"
    assert second == f"{path}:2: images: 1 <image> placeholder(s) in the dialogue, 2 image(s)"


def test_duplicate_ids_across_files(tmp_path, media):
    one = write_lines(tmp_path / "one.jsonl", [own_record("dup", ["a.png"])])
    two = write_lines(tmp_path / "two.jsonl", [own_record("ok", ["a.png"]), own_record("dup", ["b.png"])])
    report = validate_files([one, two], media_dir=media)
    assert [str(p) for p in report.problems] == [f"{two}:2: id: duplicate id 'dup' (first at {one}:1)"]
    assert (report.num_records, report.num_ok) == (3, 2)


def test_unicode_instructions_are_data(tmp_path, media):
    texts = ["走到厨房然后停下", "रसोई में जाओ और रुको", "go to the 🛋️ and stop"]
    path = write_lines(tmp_path / "d.jsonl", [good(id=str(i), instruction=t) for i, t in enumerate(texts)])
    assert [e.instruction for e in load_episodes(path, media_dir=media)] == texts


def test_image_outside_media_dir_is_refused_unless_allowed(tmp_path, media):
    make_png(tmp_path / "secret.png")
    path = write_lines(
        tmp_path / "d.jsonl", [good("../secret.png"), good(str(tmp_path / "secret.png"), id="abs")]
    )
    first, second = problems_of(path, media_dir=media)
    assert first.startswith(
        f"{path}:1: images[0]: image '../secret.png' resolves to {tmp_path / 'secret.png'}"
    )
    assert "outside the media folder" in first and "allow_outside_media" in first
    assert second.startswith(f"{path}:2: images[0]: image '{tmp_path / 'secret.png'}'")
    episodes = load_episodes(path, media_dir=media, allow_outside_media=True)
    assert episodes[0].images == (str(tmp_path / "secret.png"),)


def test_relative_path_cannot_climb_out_of_the_data_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = write_lines(data / "d.jsonl", [good("../../etc/passwd")])
    assert "outside the media folder" in single_problem(path)


def test_json_array_problems_name_line_and_record_index(tmp_path, media):
    records = [good(id="0"), good(id="1", goal_position=[1.0])]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records, indent=1))
    line_of_second = path.read_text().splitlines().index(" {", 2) + 1
    assert single_problem(path, media_dir=media) == (
        f"{path}:{line_of_second}: [1].goal_position: expected 2 ([x, z]) or 3 ([x, y, z]) coordinates, got 1"
    )


def test_truncated_json_array(tmp_path, media):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([good(id="0"), good(id="1")])[:-40])
    report = validate_files(path, media_dir=media)
    assert (report.num_ok, len(report.problems)) == (1, 1)
    assert str(report.problems[0]).startswith(f"{path}:1: [1]: truncated JSON")


def test_raise_lists_every_problem_and_shows_the_first(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", ["nope", good(), "[]"])
    with pytest.raises(DataError) as caught:
        load_episodes(path, media_dir=media)
    assert len(caught.value.problems) == 2
    assert str(caught.value).splitlines()[0].startswith(f"{path}:1: json: invalid JSON")


def test_skip_keeps_good_records_and_reports_the_rest(tmp_path, media, caplog):
    path = write_lines(
        tmp_path / "d.jsonl", [good(id="a"), "nope", good(id="b", agent_heading=99.0), good(id="c")]
    )
    with caplog.at_level(logging.WARNING, logger="vln_gym.data"):
        episodes = load_episodes(path, media_dir=media, on_error="skip")
    assert [e.episode_id for e in episodes] == ["a", "c"]
    assert "skipped 2 of 4 records with problems" in caplog.text
    assert f"{path}:2: json: invalid JSON" in caplog.text
    assert f"{path}:3: agent_heading: is 99.0 radians" in caplog.text


def test_skip_names_inputs_that_read_no_records(tmp_path, media, caplog):
    path = write_lines(tmp_path / "d.jsonl", [good(id="a")])
    missing = tmp_path / "nope.jsonl"
    for load in (load_episodes, lambda *a, **k: list(iter_episodes(*a, **k))):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vln_gym.data"):
            episodes = load([path, missing], media_dir=media, on_error="skip")
        assert [e.episode_id for e in episodes] == ["a"]
        assert "skipped 0 of 1 records with problems and 1 input that read no records" in caplog.text
        assert f"{missing}: file: file not found" in caplog.text


def test_iter_episodes_streams_and_raises_at_the_first_bad_record(tmp_path, media):
    path = write_lines(tmp_path / "d.jsonl", [good(id="a"), "nope", good(id="c")])
    stream = iter_episodes(path, media_dir=media)
    assert next(stream).episode_id == "a"
    with pytest.raises(DataError, match=r"d\.jsonl:2: json: invalid JSON"):
        next(stream)
    assert [e.episode_id for e in iter_episodes(path, media_dir=media, on_error="skip")] == ["a", "c"]
    with pytest.raises(ValueError, match="on_error"):
        iter_episodes(path, on_error="x")  # refused at the call, not at the first next()
    with pytest.raises(ValueError, match="forward_step"):
        iter_episodes(path, forward_step=-1)


def test_single_pretty_printed_object_in_a_json_file(tmp_path, media):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(good(id="solo"), indent=2))
    assert [e.episode_id for e in load_episodes(path, media_dir=media)] == ["solo"]
    wrapper = tmp_path / "wrapped.json"
    wrapper.write_text(json.dumps({"data": [good()]}, indent=2))
    assert single_problem(wrapper).startswith(
        f"{wrapper}:1: record: cannot detect the format from keys [data]"
    )


def test_a_list_or_object_as_a_role_is_an_unknown_role(tmp_path, media):
    record = good()
    record["conversations"][0]["from"] = ["human"]
    path = write_lines(tmp_path / "d.jsonl", [record])
    assert single_problem(path, media_dir=media).startswith(
        f"{path}:1: conversations[0]: unknown role ['human'] (expected"
    )
    vlm = {**good(), "image": "a.png"}
    del vlm["images"]
    vlm["conversations"][0]["from"] = {"role": "system"}  # VLM-R1 reads turn 0 whatever its role
    path = write_lines(tmp_path / "v.jsonl", [vlm])
    assert [e.prompt for e in load_episodes(path, media_dir=media, format="vlm-r1")] == [
        vlm["conversations"][0]["value"]
    ]


def test_an_integer_too_large_for_a_float_is_a_problem_not_a_crash(tmp_path, media):
    huge = "1" + "0" * 400
    line = json.dumps(good()).replace('"agent_heading": 0.5', f'"agent_heading": {huge}')
    line = line.replace('"agent_position": [1.0, 0.0, 2.0]', f'"agent_position": [{huge}, 0.0, 2.0]')
    path = write_lines(tmp_path / "d.jsonl", [line])
    assert problems_of(path, media_dir=media) == [
        f"{path}:1: agent_position: coordinate 0 is an integer too large for a float",
        f"{path}:1: agent_heading: is an integer too large for a float",
    ]
