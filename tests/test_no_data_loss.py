"""Nothing the package writes can destroy a user's data: outputs are refused when they exist (unless
``--overwrite``) or are an input (always), and result files are replaced atomically."""

from __future__ import annotations

import os

import pytest
from test_data_helpers import make_png, own_record, write_lines

from agents.cli import main
from vln_gym.data import load_episodes
from vln_gym.safe_files import OutputExistsError, atomic_write_text, atomic_writer, check_output


def test_atomic_writer_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left behind
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640  # the file keeps its mode (mkstemp would make 0600)
    atomic_write_text(tmp_path / "fresh.json", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "fresh.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_writer_does_not_follow_a_planted_symlink(tmp_path):
    """The temporary name is unpredictable and created exclusively: a symlink at the old predictable name
    (``.NAME.tmp``) is neither followed nor written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.jsonl.tmp").symlink_to(victim)
    atomic_write_text(tmp_path / "out.jsonl", "data\n")
    assert victim.read_text() == "precious"
    assert (tmp_path / "out.jsonl").read_text() == "data\n"


def test_check_output(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("x")
    check_output(tmp_path / "new.jsonl", overwrite=False, inputs=[data])
    with pytest.raises(OutputExistsError, match="file exists; pass --overwrite"):
        check_output(data, overwrite=False)
    with pytest.raises(OutputExistsError, match="is \\(or holds\\) the input"):
        check_output(data, overwrite=True, inputs=[data])
    with pytest.raises(OutputExistsError, match="is \\(or holds\\) the input"):
        check_output(tmp_path, overwrite=True, inputs=[data])  # a folder holding the input
    link = tmp_path / "alias.jsonl"
    link.symlink_to(data)
    with pytest.raises(OutputExistsError, match="is \\(or holds\\) the input"):
        check_output(link, overwrite=True, inputs=[data])  # the same file by another name
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty, overwrite=False)


def test_convert_never_overwrites_silently_nor_onto_its_input(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    source = write_lines(tmp_path / "d.jsonl", [own_record("ok", ["a.png"])])
    before = source.read_bytes()
    assert main(["convert", str(source), "--out", str(source), "--overwrite"]) == 2
    assert "is (or holds) the input" in capsys.readouterr().err
    assert source.read_bytes() == before
    out = tmp_path / "out.jsonl"
    out.write_text("someone's results\n")
    assert main(["convert", str(source), "--out", str(out)]) == 2
    assert "file exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "someone's results\n"
    assert main(["convert", str(source), "--out", str(out), "--overwrite"]) == 0
    assert [e.episode_id for e in load_episodes(out)] == ["ok"]


def test_make_world_refuses_then_replaces_the_whole_folder(tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["make-world", "--out", str(out), "--episodes", "2", "--size", "16"]
    assert main(argv) == 0
    stale = out / "images" / "stale.jpg"
    stale.write_bytes(b"old")
    assert main(argv) == 2
    assert "folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert stale.exists()
    assert main([*argv[:-4], "--episodes", "1", "--size", "16", "--overwrite"]) == 0
    assert not stale.exists()  # the old dataset is gone, not mixed with the new one
    episodes = load_episodes(out / "episodes.jsonl")
    assert len(episodes) == 1 and all(os.path.exists(p) for e in episodes for p in e.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left


def test_evaluate_refuses_existing_results(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--agent", "random", "--episodes", "1", "--out", str(out), "--no-plots"]
    assert main(argv) == 0
    metrics = (out / "metrics.json").read_text()
    assert main(argv) == 2
    assert "folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == metrics
    assert main([*argv, "--overwrite"]) == 0


def test_make_world_overwrite_replaces_only_its_own_dataset(tmp_path, capsys, monkeypatch):
    """``--overwrite`` swaps out an earlier make-world dataset (keeping the folder's mode), but refuses a
    folder holding anything else (a user's notes, a training run) and the current folder."""
    argv = ["make-world", "--episodes", "1", "--size", "16", "--overwrite", "--out"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "episodes.jsonl").write_text("{}\n")
    assert main([*argv, str(mine)]) == 2
    assert "holds notes.txt, which make-world did not write" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "precious" and (mine / "episodes.jsonl").read_text() == "{}\n"
    dataset = tmp_path / "set"
    assert main([*argv, str(dataset)]) == 0
    dataset.chmod(0o755)
    assert main([*argv, str(dataset)]) == 0
    assert dataset.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    monkeypatch.chdir(dataset)
    assert main([*argv, "."]) == 2
    assert "is the current folder" in capsys.readouterr().err
    assert (dataset / "episodes.jsonl").is_file()


def test_demo_never_deletes_what_it_did_not_write(tmp_path, capsys):
    """A non-empty ``--out`` that no demo wrote is refused with its files intact; an earlier demo's folder
    (its mark, only its outputs) is cleared for the new run; a stray file in it is refused too."""
    from agents.demo import DEMO_MARK, claim_output
    from agents.demo import main as demo_main

    out = tmp_path / "runs"
    (out / "eval" / "oracle").mkdir(parents=True)
    (out / "eval" / "oracle" / "metrics.json").write_text("precious")
    assert demo_main(["--quick", "--out", str(out)]) == 2
    assert f"no {DEMO_MARK} in it" in capsys.readouterr().err
    assert (out / "eval" / "oracle" / "metrics.json").read_text() == "precious"
    (out / DEMO_MARK).write_text("")
    (out / "mine.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match=r"holds mine\.txt"):
        claim_output(out)
    assert (out / "mine.txt").exists() and (out / "eval" / "oracle" / "metrics.json").exists()
    (out / "mine.txt").unlink()
    (out / "report.md").write_text("old report")
    claim_output(out)
    assert sorted(p.name for p in out.iterdir()) == [DEMO_MARK]
    fresh = tmp_path / "fresh"
    claim_output(fresh)
    assert (fresh / DEMO_MARK).is_file()


def test_outputs_that_cannot_be_written_are_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = ["evaluate", "--agent", "oracle", "--episodes", "1", "--no-plots", "--out", str(blocker / "ev")]
    assert main(argv) == 2
    assert "cannot write there (Not a directory)" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"
