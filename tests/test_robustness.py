"""No input can crash or hang a reader or the env: each bad input becomes ``path:line: field: message``
(or an invalid action), and the cost of an answer is bounded."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data_helpers import make_png, own_record, write_lines

import vln_gym  # noqa: F401
from agents.cli import main
from vln_gym import actions as actions_module
from vln_gym.actions import parse_action
from vln_gym.data import DataError, load_episodes, validate_files
from vln_gym.images import ImageLoadError, decode_image, set_max_image_pixels


def problems(path, **options) -> list[str]:
    return [str(problem) for problem in validate_files(path, **options).problems]


# ---------------------------------------------------------------- readers
def test_deeply_nested_json_is_one_problem_and_skip_keeps_the_good_lines(tmp_path, capsys):
    make_png(tmp_path / "a.png")
    deep = "[" * 100_000 + "]" * 100_000
    path = write_lines(
        tmp_path / "d.jsonl", [own_record("one", ["a.png"]), deep, own_record("two", ["a.png"])]
    )
    assert problems(path) == [
        f"{path}:2: json: JSON nested too deeply (Python's recursion limit): not a dataset record"
    ]
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(path), "--out", str(out), "--on-error", "skip"]) == 0
    assert [e.episode_id for e in load_episodes(out)] == ["one", "two"]
    array = tmp_path / "a.json"
    array.write_text(json.dumps([own_record("one", ["a.png"])])[:-1] + ", " + deep + "]")
    assert problems(array) == [
        f"{array}:1: [1]: JSON nested too deeply (Python's recursion limit): not a dataset record"
    ]


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (a decompression bomb costs nothing until decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_huge_images_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 12000, 12000)
    with pytest.raises(
        ImageLoadError, match=r"12000x12000 = 144,000,000 pixels, over the 50,000,000 pixel cap"
    ):
        decode_image(str(bomb))
    path = write_lines(tmp_path / "d.jsonl", [own_record("b", ["bomb.png"])])
    assert "pixel cap" in problems(path, check_images=True)[0]
    small = make_png(tmp_path / "small.png", size=(40, 30))
    try:
        set_max_image_pixels(1000)
        with pytest.raises(ImageLoadError, match="40x30 = 1,200 pixels"):
            decode_image(str(small))
    finally:
        set_max_image_pixels(50_000_000)
    assert decode_image(str(small)).shape == (30, 40, 3)
    with pytest.raises(ValueError, match="max_image_pixels"):
        set_max_image_pixels(0)


def _cap_in_a_new_process(value: str) -> subprocess.CompletedProcess:
    code = "import vln_gym.images as i; print(i._limits['max_pixels'])"
    env = {**os.environ, "VLN_GYM_MAX_IMAGE_PIXELS": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_the_pixel_cap_is_named_with_every_way_to_raise_it_and_read_from_the_environment(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 12000, 12000)
    with pytest.raises(ImageLoadError) as refused:
        decode_image(str(bomb))
    assert "--max-image-pixels" in str(refused.value) and "VLN_GYM_MAX_IMAGE_PIXELS=N" in str(refused.value)
    assert _cap_in_a_new_process("200_000_000").stdout.strip() == "200000000"
    assert _cap_in_a_new_process("").stdout.strip() == "50000000"
    for bad in ("-5", "lots", "0"):
        failed = _cap_in_a_new_process(bad)
        assert failed.returncode != 0
        assert f"VLN_GYM_MAX_IMAGE_PIXELS must be an int >= 1, got {bad if bad == '0' else repr(bad)}" in (
            failed.stderr
        )


def test_nul_bytes_and_lone_surrogates_are_field_problems(tmp_path):
    make_png(tmp_path / "a.png")
    nul = own_record("n", ["a\x00.png"])
    surrogate = own_record("s", ["a.png"], instruction="go to the \ud800 door")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(nul) + "\n" + json.dumps(surrogate) + "\n")  # \ud800 stays a JSON escape
    found = problems(path)
    assert any(p.startswith(f"{path}:1: images[0]: image path") and "NUL byte" in p for p in found)
    assert (
        f"{path}:2: instruction: holds a lone surrogate ('\\ud800' at character 10): not valid text" in found
    )


def test_symlinks_out_of_the_media_folder_are_refused(tmp_path):
    media, outside = tmp_path / "media", tmp_path / "outside"
    make_png(outside / "secret.png")
    media.mkdir()
    (media / "ok.png").symlink_to(outside / "secret.png")
    path = write_lines(tmp_path / "d.jsonl", [own_record("x", ["ok.png"])])
    found = problems(path, media_dir=str(media))
    assert len(found) == 1 and "outside the media folder" in found[0] and "symbolic link" in found[0]
    assert problems(path, media_dir=str(media), allow_outside_media=True) == []


def test_a_media_folder_given_with_dot_dot_holds_its_images(tmp_path, monkeypatch):
    """``--media-dir ../`` from a subfolder: the folder is normalised before images are checked against
    it (every image was 'outside the media folder /x/sub/..')."""
    make_png(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    path = write_lines(tmp_path / "sub" / "d.jsonl", [own_record("x", ["a.png"])])
    monkeypatch.chdir(tmp_path / "sub")
    assert problems(path, media_dir="../") == []
    assert problems(path, media_dir=str(tmp_path / "sub" / "..")) == []


def test_vln_ego_frames_duplicates_and_links_are_errors(tmp_path, vln_ego_trajectory):
    import shutil

    folder = tmp_path / "ep_1" / "traj_1"
    shutil.copytree(vln_ego_trajectory, folder)
    shutil.copy(folder / "step_1.jpg", folder / "step_01.jpg")
    with pytest.raises(DataError, match=r"frames: step 1 has two frames: step_01.jpg and step_1.jpg"):
        load_episodes(folder, format="vln-ego")
    (folder / "step_01.jpg").unlink()
    (folder / "step_2.jpg").unlink()
    make_png(tmp_path / "elsewhere.png")
    (folder / "step_2.jpg").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=r"step_2.jpg: frames: links outside the trajectory folder"):
        load_episodes(folder, format="vln-ego")


# ---------------------------------------------------------------- the env
def test_records_without_a_pose_give_finite_rewards(tmp_path):
    make_png(tmp_path / "a.png")
    record = {"format": "vln-gym/1", "id": "p", "instruction": "walk", "images": ["a.png"]}
    path = write_lines(tmp_path / "d.jsonl", [record])
    env = gym.make("VLN-v0", data_files=str(path), data_options={"require_pose": False}, image_size=(16, 16))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(1)
    assert np.isfinite(reward) and terminated
    terms = info["reward_terms"]
    assert terms.get("progress") is None and terms.get("success") is None and "step_cost" in terms
    assert info["metrics"]["distance_kind"] == "unknown" and np.isnan(info["metrics"]["spl"])


def test_world_settings_it_cannot_serve_are_refused_at_make():
    with pytest.raises(
        ValueError, match=r"forward_step=5.0 m: the built-in world serves steps of at most 2 x"
    ):
        gym.make("VLN-v0", forward_step=5.0)
    gym.make("VLN-v0", forward_step=2.0, world_episodes=2).reset(seed=0)


def test_env_text_limit_and_non_str_actions():
    env = gym.make("VLN-v0", action_space="text", image_size=(16, 16), world_episodes=2)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step("move forward, " * 1000)
    assert info["invalid_action"] and "over the 8192 allowed" in info["action_error"] and not terminated
    for bad in (b"stop", 3, None):
        with pytest.raises(TypeError, match="takes a str action, got"):
            env.step(bad)


# ---------------------------------------------------------------- the parser: linear time, bounded cache
def test_unclosed_tags_parse_in_linear_time():
    for text in ("<answer>" * 40_000, "<think>" * 40_000 + "move forward", "<answer>x" * 30_000):
        start = time.perf_counter()
        parsed = parse_action(text)
        assert time.perf_counter() - start < 2.0  # the lazy-regex pairing took 12-66 s on 160-320 KB
        assert not parsed.valid


def test_long_answers_are_not_cached():
    actions_module._parse_cached.cache_clear()
    for k in range(50):
        parse_action("move forward " + "x" * (100_000 + k))
    assert actions_module._parse_cached.cache_info().currsize == 0
    parse_action("move forward")
    assert actions_module._parse_cached.cache_info().currsize == 1


_OLD_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_OLD_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_OLD_ANY = re.compile(r"</?(?:answer|think)>", re.I)


def _old_extract(text: str):
    """The regex extraction the linear scanner replaced (the reference for equivalence)."""
    answers = list(_OLD_ANSWER.finditer(text))
    if len(answers) > 1:
        return "", False, True, f"{len(answers)} <answer> tags, expected one"
    if answers:
        match = answers[0]
        has_think = _OLD_THINK.search(text[: match.start()]) is not None
        answer = match.group(1).strip()
        if _OLD_ANY.search(answer):
            return answer, has_think, True, "nested <think>/<answer> tag inside <answer>"
        return answer, has_think, True, None
    has_think = _OLD_THINK.search(text) is not None
    rest = _OLD_THINK.sub(" ", text)
    stray = _OLD_ANY.search(rest)
    if stray:
        return rest.strip(), has_think, False, f"unmatched {stray.group(0).lower()} tag"
    return rest.strip(), has_think, False, None


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "<ANSWER>", " stop", "a", "\n"]),
        max_size=12,
    )
)
def test_linear_scanner_equals_the_regex_extraction(parts):
    text = "".join(parts)
    assert actions_module._extract_answer(text) == _old_extract(text)
