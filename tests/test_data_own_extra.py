"""Own jsonl ``extra``: kept as an object or a string holding one, refused otherwise, and every Episode read
from any format written as own jsonl and read back equal, its extra included (own-format key names too)."""

from __future__ import annotations

import json

import pytest
from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

from agents.cli import main
from vln_gym.data import DataError, load_episodes, validate_files, write_episodes_jsonl


@pytest.fixture
def image(tmp_path):
    return make_png(tmp_path / "a.png")


@pytest.mark.parametrize("packed", [{"room": "kitchen"}, json.dumps({"room": "kitchen"})])
def test_an_extra_object_or_json_string_is_kept(tmp_path, image, packed):
    path = write_lines(tmp_path / "d.jsonl", [own_record("e1", ["a.png"], extra=packed, note=1)])
    (episode,) = load_episodes(path)
    assert episode.extra == {"room": "kitchen", "note": 1}


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        ("[1]", "expected a JSON object (or a string holding one), got a string holding a list"),
        ('"x"', "expected a JSON object (or a string holding one), got a string holding a string"),
        ([1], "expected a JSON object (or a string holding one), got a list"),
        (5, "expected a JSON object (or a string holding one), got a number"),
        (True, "expected a JSON object (or a string holding one), got a boolean"),
        ("null", "expected a JSON object (or a string holding one), got a string holding null"),
        ("{not json", "invalid JSON (Expecting property name enclosed in double quotes)"),
        ("", "invalid JSON (Expecting value)"),
    ],
)
def test_a_bad_extra_is_a_problem_naming_file_line_and_field(tmp_path, image, packed, message):
    records = [own_record("ok", ["a.png"]), own_record("bad", ["a.png"], extra=packed)]
    path = write_lines(tmp_path / "d.jsonl", records)
    report = validate_files(path)
    assert [str(problem) for problem in report.problems] == [f"{path}:2: extra: {message}"]
    assert (report.num_records, report.num_ok) == (2, 1)
    assert [e.episode_id for e in load_episodes(path, on_error="skip")] == ["ok"]


def test_a_bad_extra_is_reported_with_the_other_problems_of_its_record(tmp_path, image):
    path = write_lines(tmp_path / "d.jsonl", [own_record("e", ["a.png"], agent_heading=9.0, extra="[1]")])
    with pytest.raises(DataError) as caught:
        load_episodes(path)
    assert [p.field for p in caught.value.problems] == ["agent_heading", "extra"]


def test_an_extra_key_given_twice_is_a_problem(tmp_path, image):
    path = write_lines(
        tmp_path / "d.jsonl", [own_record("e", ["a.png"], room="hall", extra={"room": "attic"})]
    )
    with pytest.raises(
        DataError, match=r"d\.jsonl:1: extra: key\(s\) \['room'\] also given at the top level"
    ):
        load_episodes(path)


def test_a_null_extra_holds_no_keys(tmp_path, image):
    path = write_lines(tmp_path / "d.jsonl", [own_record("e", ["a.png"], extra=None, note=1)])
    (episode,) = load_episodes(path)
    assert episode.extra == {"note": 1}


# Columns a ShareGPT file may have that are own-format keys (or look like ids): all kept as extra.
OWN_NAMED_COLUMNS = {
    "source": "r2r",
    "format": "sharegpt",
    "prompt": "p",
    "system_prompt": "s",
    "expert_response": "r",
    "extra": {"nested": [1, 2]},
    "episode_id": "zz",
    "uid": 7,
}


def test_sharegpt_columns_named_like_own_keys_round_trip(tmp_path, image):
    records = [
        sharegpt_record(["a.png"], id="c1", **OWN_NAMED_COLUMNS),
        sharegpt_record(["a.png"], id="c2", split="train"),
    ]
    source = write_lines(tmp_path / "chat.jsonl", records)
    original = load_episodes(source)
    assert original[0].extra == {**OWN_NAMED_COLUMNS, "pose_source": "record"}
    out = write_episodes_jsonl(original, tmp_path / "out" / "own.jsonl")
    reread = load_episodes(out)
    assert reread == original
    assert [e.extra for e in reread] == [e.extra for e in original]
    first, second = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert first["source"] == f"{source}:1" and first["format"] == "vln-gym/1"
    nested = ("source", "format", "prompt", "system_prompt", "expert_response", "extra")
    assert first["extra"] == {key: OWN_NAMED_COLUMNS[key] for key in nested}
    assert (first["episode_id"], first["uid"]) == ("zz", 7)  # not own-format keys: top level
    assert "extra" not in second and second["split"] == "train"
    assert write_episodes_jsonl(reread, tmp_path / "again.jsonl").read_text() == out.read_text()


def test_own_extra_naming_own_keys_round_trips(tmp_path, image):
    path = write_lines(
        tmp_path / "d.jsonl", [own_record("e", ["a.png"], extra='{"id": "zz", "room": "hall"}')]
    )
    original = load_episodes(path)
    reread = load_episodes(write_episodes_jsonl(original, tmp_path / "out.jsonl"))
    assert reread == original
    assert reread[0].extra == original[0].extra == {"id": "zz", "room": "hall"}


def test_convert_writes_a_file_whose_columns_are_own_keys(tmp_path, image, capsys):
    source = write_lines(tmp_path / "chat.jsonl", [sharegpt_record(["a.png"], source="r2r", format="x")])
    out = tmp_path / "out.jsonl"
    assert main(["validate", str(source)]) == 0
    assert main(["convert", str(source), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote 1 episodes to {out}"
    (episode,) = load_episodes(out)
    assert episode.extra == {"source": "r2r", "format": "x", "pose_source": "record"}
