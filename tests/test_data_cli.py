"""`vln-gym validate` / `vln-gym convert`: output lines, exit codes, and the convert round trip."""

from __future__ import annotations

import json

from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

from agents.cli import main
from vln_gym.data import load_episodes, write_episodes_jsonl

REMAP_KEY = "VLN-Ego/data/r2r_training_rgb"


def test_validate_clean_file_exits_0(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    path = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["a.png"])])
    assert main(["validate", str(path), "--check-images"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1 record, 1 ok, 0 with problems"]


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    records = [sharegpt_record(["a.png"]), "{broken", sharegpt_record(["a.png"], agent_heading=[0.1])]
    path = write_lines(tmp_path / "d.jsonl", records)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}:2: json: ")
    assert out[1].startswith(f"{path}:3: agent_heading: expected a number, got list")
    assert out[2] == "3 records, 1 ok, 2 with problems"


def test_validate_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate"]) == 2
    assert main(["validate", str(tmp_path), "--format", "csv"]) == 2
    assert main(["validate", str(tmp_path), "--path-remap", "no-equals-sign"]) == 2
    assert "--path-remap expects KEY=VALUE" in capsys.readouterr().err
    assert main(["validate", "--help"]) == 0


def test_validate_real_export_with_remap(vln_ego_sample, capsys):
    path = vln_ego_sample / "r2r_16_images_4act_debug.json"
    remap = f"{REMAP_KEY}={vln_ego_sample / 'rgb_images_r2r_debug'}"
    assert main(["validate", str(path), "--path-remap", remap]) == 0
    assert capsys.readouterr().out.strip() == "65 records, 65 ok, 0 with problems"


def test_convert_round_trip_of_the_real_export(vln_ego_sample, tmp_path, capsys):
    source = vln_ego_sample / "r2r_16_images_4act_debug.json"
    remap = {REMAP_KEY: str(vln_ego_sample / "rgb_images_r2r_debug")}
    out = tmp_path / "out" / "episodes.jsonl"
    argv = ["convert", str(source), "--out", str(out), "--path-remap", f"{REMAP_KEY}={remap[REMAP_KEY]}"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"wrote 65 episodes to {out}"
    original = load_episodes(source, path_remap=remap)
    converted = load_episodes(out)
    assert converted == original
    assert [e.extra for e in converted] == [e.extra for e in original]
    assert main(["validate", str(out)]) == 0


def test_write_relative_paths_under_media_dir_and_reload(tmp_path, vln_ego_trajectory):
    episodes = load_episodes(vln_ego_trajectory)[:3]
    media = vln_ego_trajectory.parent.parent
    out = write_episodes_jsonl(episodes, tmp_path / "e.jsonl", media_dir=media)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["format"] == "vln-gym/1"
    assert first["images"] == ["ep_2849/traj_1871/step_0.jpg"]
    assert load_episodes(out, media_dir=media) == episodes


def test_convert_stops_on_problems_unless_skip(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    path = write_lines(
        tmp_path / "d.jsonl", [own_record("ok", ["a.png"]), own_record("bad", ["a.png"], agent_heading=9.0)]
    )
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "--out", str(out)]) == 1
    assert f"{path}:2: agent_heading: is 9.0 radians" in capsys.readouterr().out
    assert not out.exists()
    assert main(["convert", str(path), "--out", str(out), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 episodes" in captured.out
    assert "skipped 1 of 2 records" in captured.err
    assert [e.episode_id for e in load_episodes(out)] == ["ok"]


def test_convert_skip_with_no_good_record_writes_nothing(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    path = write_lines(tmp_path / "d.jsonl", [own_record("bad", ["a.png"], agent_heading=9.0)])
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "--out", str(out), "--on-error", "skip"]) == 1
    assert "no good records to write" in capsys.readouterr().err
    assert not out.exists()


def test_validate_counts_unreadable_files_apart_from_records(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    good = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["a.png"])])
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["validate", str(good), str(tmp_path / "nope.jsonl"), str(empty)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{tmp_path / 'nope.jsonl'}: file: file not found",
        f"{empty}:1: file: empty JSON array: no records",
        "1 record, 1 ok, 0 with problems; 2 files read no records",
    ]


def test_convert_refuses_a_folder_or_a_dangling_link_as_out_before_reading(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    path = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["a.png"])])
    folder = tmp_path / "outdir"
    folder.mkdir()
    assert main(["convert", str(path), "--out", str(folder)]) == 2
    assert "outdir: is a folder; --out names the jsonl file to write" in capsys.readouterr().err
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "elsewhere.jsonl")
    assert main(["convert", str(path), "--out", str(link)]) == 2
    assert "link.jsonl: file exists; pass --overwrite" in capsys.readouterr().err
    assert link.is_symlink() and not (tmp_path / "elsewhere.jsonl").exists()


def test_validate_takes_the_pixel_cap_from_the_environment_unless_the_flag_gives_one(
    tmp_path, capsys, monkeypatch
):
    make_png(tmp_path / "a.png")  # 4 x 3 = 12 pixels
    path = write_lines(tmp_path / "d.jsonl", [sharegpt_record(["a.png"])])
    monkeypatch.setenv("VLN_GYM_MAX_IMAGE_PIXELS", "3")
    assert main(["validate", str(path), "--check-images"]) == 1
    assert "pixel cap" in capsys.readouterr().out
    assert main(["validate", str(path), "--check-images", "--max-image-pixels", "50000000"]) == 0
    monkeypatch.delenv("VLN_GYM_MAX_IMAGE_PIXELS")
    assert main(["validate", str(path), "--check-images"]) == 0  # back to the default cap
