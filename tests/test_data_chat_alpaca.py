"""Alpaca records: every column that is not a string is a problem (null is an absent column), all of a
record's problems reported together."""

from __future__ import annotations

import pytest
from test_data_helpers import POSE, make_png, write_lines

from vln_gym.data import DataError, load_episodes, validate_files


def alpaca_record(**fields) -> dict:
    return {"instruction": "<image>go", "input": "", "output": "STOP", "images": ["a.png"], **POSE, **fields}


@pytest.fixture
def image(tmp_path):
    return make_png(tmp_path / "a.png")


@pytest.mark.parametrize(
    ("output", "got"), [(3, "int 3"), (["TURN_LEFT"], "list ['TURN_LEFT']"), ({}, "object {}")]
)
def test_an_output_that_is_not_a_string_is_a_problem(tmp_path, image, output, got):
    path = write_lines(tmp_path / "a.jsonl", [alpaca_record(), alpaca_record(output=output)])
    report = validate_files(path)
    assert [str(problem) for problem in report.problems] == [
        f"{path}:2: output: expected a string, got {got}"
    ]
    assert [e.expert_response for e in load_episodes(path, on_error="skip")] == ["STOP"]


def test_null_columns_are_absent_ones(tmp_path, image):
    records = [
        alpaca_record(output=None),
        alpaca_record(input=None, output="A"),
        alpaca_record(instruction=None, input="<image>left"),
    ]
    path = write_lines(tmp_path / "a.jsonl", records)
    episodes = load_episodes(path)
    assert [(e.prompt, e.expert_response) for e in episodes] == [
        ("<image>go", None),
        ("<image>go", "A"),
        ("<image>left", "STOP"),
    ]


def test_every_bad_column_of_a_record_is_reported(tmp_path, image):
    path = write_lines(tmp_path / "a.jsonl", [alpaca_record(instruction=["<image>go"], input=1, output=3.5)])
    with pytest.raises(DataError) as caught:
        load_episodes(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:1: instruction: expected a string, got list ['<image>go']",
        f"{path}:1: input: expected a string, got int 1",
        f"{path}:1: output: expected a string, got float 3.5",
    ]
