"""LLaMA-Factory dataset_info.json entries: sharegpt with custom columns and tags, alpaca, and bad entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_helpers import POSE, make_png, write_lines

from vln_gym.data import DataError, load_episodes, validate_files
from vln_gym.data.cli import validate_main


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    make_png(tmp_path / "frames" / "a.png")
    make_png(tmp_path / "frames" / "b.png")
    custom = {
        "dialog": [
            {"speaker": "sys", "text": "You are a robot."},
            {"speaker": "person", "text": "<image><image>Your instruction is 'go to the sofa'.\nNext?"},
            {"speaker": "bot", "text": "MOVE_FORWARD"},
        ],
        "pics": ["frames/a.png", "frames/b.png"],
        **POSE,
    }
    alpaca = {
        "instruction": "<image>Your instruction is 'turn to the lamp'.",
        "input": "What next?",
        "output": "TURN_LEFT",
        "images": ["frames/a.png"],
        **POSE,
    }
    write_lines(tmp_path / "custom.jsonl", [custom])
    (tmp_path / "alpaca.json").write_text(json.dumps([alpaca]))
    info = {
        "vln_custom": {
            "file_name": "custom.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "images": "pics"},
            "tags": {
                "role_tag": "speaker",
                "content_tag": "text",
                "user_tag": "person",
                "assistant_tag": "bot",
                "system_tag": "sys",
            },
        },
        "vln_alpaca": {"file_name": "alpaca.json", "columns": {"images": "images"}},
        "from_hub": {"hf_hub_url": "org/data"},
        "clips": {"file_name": "custom.jsonl", "formatting": "sharegpt", "columns": {"videos": "clips"}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path


def test_sharegpt_entry_with_custom_columns_and_tags(dataset_dir: Path):
    info = dataset_dir / "dataset_info.json"
    (episode,) = load_episodes(dataset_info=info, dataset="vln_custom")
    assert episode.instruction == "go to the sofa"
    assert episode.system_prompt == "You are a robot."
    assert episode.expert_response == "MOVE_FORWARD"
    assert episode.images == (str(dataset_dir / "frames/a.png"), str(dataset_dir / "frames/b.png"))
    # Without the entry's tags the same file fails with the role it does not know, and says what to do.
    problems = [
        str(p)
        for p in validate_files(
            dataset_dir / "custom.jsonl", field_map={"conversations": "dialog", "images": "pics"}
        ).problems
    ]
    assert any("missing 'value' or 'content'" in line for line in problems), problems


def test_alpaca_entry_joins_instruction_and_input_like_llama_factory(dataset_dir: Path):
    (episode,) = load_episodes(dataset_info=dataset_dir / "dataset_info.json", dataset="vln_alpaca")
    assert episode.prompt == "<image>Your instruction is 'turn to the lamp'.\nWhat next?"
    assert episode.instruction == "turn to the lamp"
    assert episode.expert_response == "TURN_LEFT"


@pytest.mark.parametrize("options", [{}, {"format": "alpaca"}])
def test_an_alpaca_file_loads_without_dataset_info(dataset_dir: Path, options):
    """The README's alpaca record (LLaMA-Factory's instruction / input / output) loads by itself,
    auto-detected or with ``format="alpaca"``, as through its dataset_info entry."""
    (episode,) = load_episodes(dataset_dir / "alpaca.json", **options)
    assert episode.prompt == "<image>Your instruction is 'turn to the lamp'.\nWhat next?"
    assert episode.expert_response == "TURN_LEFT" and episode.instruction == "turn to the lamp"


def test_a_mapped_turns_column_has_no_fallback(tmp_path: Path):
    """columns.messages names the turns column: a record without it is a problem naming that column,
    not read from the default ``messages`` / ``conversations`` (that was a silent fallback)."""
    write_lines(tmp_path / "d.jsonl", [{"messages": [], "images": ["a.png"], **POSE}])
    info = tmp_path / "dataset_info.json"
    info.write_text(
        json.dumps({"x": {"file_name": "d.jsonl", "formatting": "sharegpt", "columns": {"messages": "nope"}}})
    )
    with pytest.raises(DataError, match=r"d\.jsonl:1: nope: missing \(need 'nope'\)"):
        load_episodes(dataset_info=info, dataset="x")


def test_bad_entries_name_the_file_and_the_entry_field(dataset_dir: Path):
    info = dataset_dir / "dataset_info.json"
    cases = {
        "nope": "nope: no such dataset entry (entries: clips, from_hub, vln_alpaca, vln_custom)",
        "from_hub": "from_hub.hf_hub_url: hub and remote datasets are not fetched; give file_name",
        "clips": "clips.columns.videos: not read: VLN frames are given as images",
    }
    for name, message in cases.items():
        with pytest.raises(DataError) as caught:
            load_episodes(dataset_info=info, dataset=name)
        assert str(caught.value) == f"{info}: {message}"
    with pytest.raises(ValueError, match="dataset_info and dataset go together"):
        load_episodes(dataset_info=info)


def test_a_deep_or_empty_dataset_info_is_a_problem_not_a_traceback(tmp_path: Path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    with pytest.raises(DataError, match=r"deep\.json: json: JSON nested too deeply"):
        load_episodes(dataset_info=deep, dataset="x")
    (tmp_path / "emptydir").mkdir()
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"x": {"file_name": "emptydir", "formatting": "sharegpt"}}))
    with pytest.raises(DataError, match=r"x\.file_name: .*emptydir is a folder with no files"):
        load_episodes(dataset_info=info, dataset="x")
    assert validate_main(["--dataset-info", str(info), "--dataset", "x"]) == 1
    assert "is a folder with no files" in capsys.readouterr().err


def test_validate_cli_reads_an_entry(dataset_dir: Path, capsys):
    info = str(dataset_dir / "dataset_info.json")
    assert validate_main(["--dataset-info", info, "--dataset", "vln_custom"]) == 0
    assert capsys.readouterr().out.strip() == "1 record, 1 ok, 0 with problems"
    assert validate_main(["--dataset-info", info, "--dataset", "nope"]) == 1
    assert "no such dataset entry" in capsys.readouterr().err


def test_entry_runs_in_the_env_and_round_trips_through_convert(dataset_dir: Path, tmp_path: Path):
    import gymnasium as gym

    import vln_gym  # noqa: F401  (registers VLN-v0)
    from vln_gym.data.cli import convert_main

    info = str(dataset_dir / "dataset_info.json")
    options = {"dataset_info": info, "dataset": "vln_alpaca"}
    env = gym.make("VLN-v0", data_options=options, image_size=(8, 8))
    assert env.unwrapped.views == "record"
    obs, _ = env.reset(seed=0)
    assert obs["instruction"] == "turn to the lamp"
    out = tmp_path / "own.jsonl"
    assert convert_main(["--dataset-info", info, "--dataset", "vln_alpaca", "--out", str(out)]) == 0
    assert load_episodes(out) == load_episodes(dataset_info=info, dataset="vln_alpaca")
