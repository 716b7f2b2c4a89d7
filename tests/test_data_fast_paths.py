"""The data layer's fast paths (msgspec parsing, the per-load image and folder caches, the converters' common
case) give exactly what the slow paths give: the same episodes, the same problems, in the same order."""

from __future__ import annotations

import gc
import json
import math
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data_helpers import make_png, own_record, sharegpt_record, write_lines

from vln_gym.data import chat, jsonio, media, navila, ownjsonl, privileged, readers
from vln_gym.data.fields import as_actions, as_heading, as_number, as_position
from vln_gym.data.loader import collect_episodes, gc_paused, inputs_and_options
from vln_gym.data.problems import FieldError
from vln_gym.episode import Episode, new_episode
from vln_gym.geometry import distance

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities too: msgspec refuses them, json reads them
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=8),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _same(a, b) -> bool:
    return repr(a) == repr(b)  # tells 1 from 1.0 and True, keeps key order, and nan equals nan


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_fast_loads_gives_the_value_of_json_loads_or_refuses(value, ensure_ascii):
    data = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    fast = jsonio.fast_loads(data)
    if fast is not jsonio.REFUSED:
        assert _same(fast, json.loads(data.decode("utf-8")))


SPACE = st.text(" \t\r\n", max_size=3)


LAYOUTS = st.tuples(JSON_VALUES, st.sampled_from([None, 1, "\t"]), SPACE, SPACE)


@settings(max_examples=200, deadline=None)
@given(st.lists(LAYOUTS, min_size=1, max_size=6))
def test_fast_json_array_gives_the_elements_and_lines_of_the_stdlib_reader(elements):
    """Any layout: each element pretty-printed or not, any white space (new lines too) around the commas."""
    parts = [before + json.dumps(value, indent=indent) + after for value, indent, before, after in elements]
    data = ("[" + ",".join(parts) + "]\n").encode("utf-8", "surrogatepass")
    fast = jsonio._fast_array(data)
    slow = list(jsonio._stdlib_array("a.json", data))
    if fast is not None:
        values, lines = fast
        assert _same([(jsonio.Location("a.json", lines[i], i), v) for i, v in enumerate(values)], slow)


PATH_PARTS = st.lists(st.sampled_from(["a", "b.png", ".", "..", "", ".c", "d.", "é", " "]), max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["/", "/data", "/data/media", "/data/../x", "/data/./y", "/a//b"]), PATH_PARTS)
def test_joining_and_splitting_image_paths_equal_os_path(root, parts):
    raw = "/".join(parts)
    if raw.startswith("/") or not raw.strip():
        return
    joined = media._joined(root, raw)
    assert joined == os.path.normpath(os.path.join(root, raw))
    assert media._split(joined) == os.path.split(joined)


def test_converters_common_case_equals_the_general_rules():
    for value in ([1.5, 0.0, -2.0], [1e308, 1e308, 0.0], [1.0, math.nan, 0.0], [math.inf, 1.0, 2.0]):
        _same_outcome(as_position, value, tuple(value))  # a tuple takes the general path
    for value in ([1, 0, 2], [True, 0.0, 1.0], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0]):
        _same_outcome(as_position, value, tuple(value))
    for value in ([0, 1, 2, 3], [], [1, True], [1, 1.0], [4], [-1], [0, "1"]):
        _same_outcome(as_actions, value, tuple(value))
    assert as_heading(2.0 * math.pi + 1e-9, "h", "rad") == 2.0 * math.pi + 1e-9
    for bad in (2.0 * math.pi + 2e-9, math.nan, -math.inf, True):
        with pytest.raises(FieldError):
            as_heading(bad, "h", "rad")
    assert as_number(-0.0, "x") == 0.0 and as_number(3, "x") == 3.0
    for bad in (math.nan, math.inf, True, "1"):
        with pytest.raises(FieldError):
            as_number(bad, "x")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e9, 1e9), min_size=6, max_size=6))
def test_distance_to_goal_is_the_geometry_distance_bit_for_bit(coordinates):
    """`geometry.distance`'s written-out 3-D path (what the loaders call per record) is its in-order sum."""
    start, goal = tuple(coordinates[:3]), tuple(coordinates[3:])
    summed = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(start, goal, strict=True)))
    assert repr(distance(start, goal)) == repr(summed)


def _same_outcome(convert, fast_input, general_input):
    outcomes = []
    for value in (fast_input, general_input):
        try:
            outcomes.append(("ok", convert(value, "f")))
        except FieldError as error:
            outcomes.append(("error", error.field, error.message))
    assert _same(outcomes[0], outcomes[1]), outcomes


class _Forgetful(dict):
    """An image cache that keeps nothing: every record gets every check."""

    def __missing__(self, key):
        return {}


@pytest.fixture
def slow_paths(monkeypatch):
    """Turn the fast paths off: `json` parses everything, no image is remembered, no folder is listed, each
    pose field is read on its own, every Episode is built by the dataclass."""

    def enable():
        monkeypatch.setattr(jsonio, "fast_loads", lambda data: jsonio.REFUSED)
        monkeypatch.setattr(media.FolderEntries, "_listing", lambda self, folder: None)
        monkeypatch.setattr(media, "_joined", lambda root, raw: os.path.normpath(os.path.join(root, raw)))
        monkeypatch.setattr(media, "_split", os.path.split)
        original = media.ImageChecker.__init__

        def forgetful_init(self):
            original(self)
            self.good = _Forgetful()

        monkeypatch.setattr(media.ImageChecker, "__init__", forgetful_init)
        monkeypatch.setattr(navila, "_LoadMemo", _ForgetfulMemo)
        monkeypatch.setattr(privileged, "_quick_pose", lambda record, options: None)
        monkeypatch.setitem(readers.QUICK, "on", False)  # every ShareGPT record by chat_episode
        monkeypatch.setattr(chat, "new_episode", lambda values: Episode(**values))  # the dataclass __init__
        monkeypatch.setattr(ownjsonl, "episode_of_fields", lambda values: Episode(**values))

    return enable


class _NoMemory(dict):
    def __setitem__(self, key, value):
        pass


class _ForgetfulMemo:
    """NaVILA's per-load memo keeping nothing: every record's frames and answer read in full."""

    def __init__(self) -> None:
        self.frames, self.actions = _NoMemory(), _NoMemory()


PALETTE = [
    *(None, 1, -1, True, "", " ", "x", [], [1, 2], [1, 2, 3], ["a"], {}, math.nan, math.inf, 10**30, 7.5),
    *("\ud800", "f/nope.png", "/etc/hostname", "../x.png", "a\x00b", "f/0.png", "<image>", "f/link.png"),
    *("f/bad.png", ["f/bad.png", "f/0.png"]),
    *("f/dir.png", ["f/1.png"], ["f/1.png", 3], ["f/outside.png"], [[1, 2, 3], [4, 5]], [0, 1, 5]),
    *([{"from": "bob", "value": "x"}], [{"from": ["human"], "value": "<image>"}]),
]


SEEN_TWICE = [
    ["f/bad.png", "f/0.png"],
    ["f/link.png"],
    ["f/outside.png", "f/1.png"],
    *(["f/dir.png"], ["f/dangling.png"], ["f/dirlink.png"], ["g/0.png"]),
    ["f/0.png", "f/nope.png", "f/2.png", "nowhere/f.png"],
    *(["./f/0.png"], ["f//1.png"], ["f/../f/2.png"], ["f/3.png/"], ["../data/f/4.png"], ["f/.5.png"]),
    [],
    ["f/1.png", 5, ["f/1.png"]],
]


def _mutated(record: dict, rng: random.Random) -> dict:
    record = json.loads(json.dumps(record))
    for _ in range(rng.choice([1, 1, 2])):
        target, key = record, rng.choice(list(record))
        while isinstance(target[key], list | dict) and target[key] and rng.random() < 0.5:
            target = target[key]
            key = rng.randrange(len(target)) if isinstance(target, list) else rng.choice(list(target))
        if isinstance(target, dict) and rng.random() < 0.2:
            del target[key]
        else:
            target[key] = rng.choice(PALETTE)
    return record


def _corpus(root: Path) -> list[tuple[Path, dict]]:
    rng = random.Random(0)
    for index in range(6):
        make_png(root / "f" / f"{index}.png")
    make_png(root.parent / "outside.png")
    make_png(root.parent / "elsewhere" / "0.png")
    (root / "g").symlink_to(root.parent / "elsewhere")  # a frame folder linked from outside the media folder
    (root / "f" / "link.png").symlink_to(root / "f" / "0.png")
    (root / "f" / "outside.png").symlink_to(root.parent / "outside.png")
    (root / "f" / "dir.png").mkdir()
    (root / "f" / "dangling.png").symlink_to(root / "f" / "gone.png")
    (root / "f" / "dirlink.png").symlink_to(root / "f" / "dir.png")
    (root / "f" / "bad.png").write_text("not an image")
    frames = [f"f/{index}.png" for index in range(6)]
    chats = [sharegpt_record(frames[: 1 + i % 5], id=f"c{i}") for i in range(60)]
    chats = [_mutated(r, rng) if rng.random() < 0.6 else r for r in chats]
    for number, images in enumerate(SEEN_TWICE):  # the second record meets these references in the caches
        chats += [sharegpt_record(images, id=f"first{number}"), sharegpt_record(images, id=f"again{number}")]
    lines = [json.dumps(r) for r in chats]
    lines[5], lines[9], lines[12] = lines[5][:-9], lines[9].replace("0.5", "NaN"), "   "
    sharegpt = write_lines(root / "chat.jsonl", lines, newline="\r\n", bom=True)
    own = [own_record(f"o{i}", frames[i % 6 :]) for i in range(40)]
    own = [json.dumps(_mutated(r, rng) if rng.random() < 0.6 else r) for r in own]
    own_file = write_lines(root / "own.jsonl", own)
    array = root / "chat.json"
    array.write_text(json.dumps([r for r in chats if math.nan not in r.values()][:30], indent=1))
    return [
        (sharegpt, {}),
        (sharegpt, {"check_images": True, "require_pose": False}),
        (sharegpt, {"allow_outside_media": True}),
        (own_file, {}),
        (array, {}),
        ([sharegpt, own_file], {}),
    ]


def _outcome(path, options):
    episodes, report = collect_episodes(*inputs_and_options(path, **options))
    return [repr(sorted(vars(e).items())) for e in episodes], [str(p) for p in report.problems]


def test_loads_equal_the_slow_paths_on_good_and_bad_records(tmp_path, slow_paths):
    root = tmp_path / "data"
    inputs = _corpus(root)
    fast = [_outcome(path, options) for path, options in inputs]
    assert sum(len(problems) for _, problems in fast) > 50  # the corpus has many bad records ...
    assert sum(len(episodes) for episodes, _ in fast) > 50  # ... and many good ones
    slow_paths()
    assert fast == [_outcome(path, options) for path, options in inputs]


FORWARD, LEFT, STOP_SENTENCE = (
    "The next action is move forward 25 cm.",
    "The next action is turn left 15 degree.",
    "I think I should stop because I have finished the instruction.",
)


def _navila_corpus(root: Path) -> list[dict]:
    """NaVILA records whose frame lists share history in every way the memo meets: in order, out of
    order, repeated, shorter than the last list, and with new frames that are missing, bad, not strings,
    not plain, or already seen elsewhere."""
    records = []
    for video, count in (("a", 7), ("b", 6), ("c", 6), ("d", 5)):
        answers = [FORWARD if step % 3 else LEFT for step in range(count - 1)] + [STOP_SENTENCE]
        for step, answer in enumerate(answers):
            frames = [f"{video}/frame_{k}.png" for k in range(step + 1)]
            records.append(
                {"video_id": f"{video}-{step}", "q": "go to the door", "a": answer, "frames": frames}
            )
        for k in range(count):
            make_png(root / video / f"frame_{k}.png", (10 * k, 20, 30))
    (root / "c" / "frame_3.png").write_text("not an image")  # found, but check_images refuses it
    (root / "c" / "frame_5.png").unlink()  # missing
    (root / "d" / "frame_2.png").unlink()
    (root / "d" / "frame_2.png").symlink_to(root / "a" / "frame_2.png")  # a link: not the plain case
    b = records[7:13]
    records[7:13] = [b[2], b[0], b[1], b[4], b[3], b[5]]  # out of order: prefixes and extensions
    records.insert(12, dict(records[9], extra_key=[1, 2]))  # a repeat with an extra column
    records.append(dict(records[3]))  # a repeat after other videos, shorter than a's last list
    bad = [
        {**records[2], "video_id": "e-0", "frames": ["a/frame_0.png"]},
        {**records[2], "video_id": "e-1", "frames": ["a/frame_0.png", 7]},  # a new frame not a string
        {**records[2], "video_id": "f-0", "frames": ["a/frame_0.png"]},
        {**records[2], "video_id": "f-1", "frames": ["a/frame_0.png", "   "]},
        {**records[2], "video_id": "g-0", "frames": ["a/frame_0.png"]},
        {**records[2], "video_id": "g-1", "frames": ["a/frame_1.png", "a/frame_2.png"]},  # not an extension
        {**records[2], "video_id": "h-0", "frames": ["a/frame_0.png"], "a": LEFT},
        {**records[2], "video_id": "h-1", "frames": ["a/frame_0.png", ["a/frame_1.png"]]},  # unhashable
        {**records[2], "video_id": "h-2", "frames": []},
        {**records[2], "video_id": "h-3", "frames": "a/frame_0.png"},
        # what _quick_step leaves to the full reading: other types, blank text, odd ids, keys, answers
        {**records[1], "q": 5},
        {**records[1], "q": "   "},
        {**records[1], "a": ["x"]},
        {**records[1], "a": "The next action is fly 3 m."},
        {**records[1], "video_id": "a-x"},
        {**records[1], "video_id": "-1"},
        {**records[1], "video_id": 3},
        {key: value for key, value in {**records[1], "frame": []}.items() if key != "frames"},
        {**records[1], "video_id": "i-0", "q": "  go to the door  "},
    ]
    return records + bad


@pytest.mark.parametrize("options", [{}, {"check_images": True}, {"allow_outside_media": True}])
def test_navila_shared_frame_histories_equal_the_slow_paths(tmp_path, slow_paths, options):
    """A NaVILA record repeats the frame list of the one before plus its new frames: the fast path reads
    only the new ones (or reuses a prefix); the same episodes and problems as reading every list whole."""
    root = tmp_path / "data"
    path = root / "navila.json"
    root.mkdir()
    records = _navila_corpus(root)
    path.write_text(json.dumps(records, indent=1))
    fast = _outcome(path, options)
    assert len(fast[0]) >= 15 and len(fast[1]) >= 5, fast  # good and bad records both
    slow_paths()
    assert fast == _outcome(path, options)


def test_navila_episodes_are_those_the_dataclass_init_builds(tmp_path):
    """`new_episode` skips ``Episode.__init__``: the same fields, equal and hashable alike."""
    root = tmp_path / "data"
    root.mkdir()
    path = root / "navila.json"
    path.write_text(json.dumps(_navila_corpus(root)[:7]))
    episodes, _ = collect_episodes(*inputs_and_options(path))
    assert len(episodes) == 7
    for episode in episodes:
        rebuilt = Episode(**vars(episode))
        assert rebuilt == episode and hash(rebuilt) == hash(episode)
        assert repr(sorted(vars(rebuilt).items())) == repr(sorted(vars(episode).items()))
    # new_episode is only sound while Episode.__init__ does nothing beyond setting fields
    assert not hasattr(Episode, "__post_init__"), "Episode gained __post_init__: new_episode skips it"
    values = dict(vars(episodes[0]))
    del values["goal_position"]
    with pytest.raises(TypeError, match="goal_position"):
        new_episode(values)
    with pytest.raises(TypeError, match="no_such_field"):
        new_episode({**vars(episodes[0]), "no_such_field": 1})


def test_gc_paused_restores_the_collector_state():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own gc.disable() is kept
    finally:
        gc.enable()


@pytest.mark.parametrize("prompt", [None, "", "fine", 7, 0, ["x"]])
def test_lone_surrogate_check_reads_strings_only(prompt):
    """The joined-text shortcut skips None, "" and (through its fallback) any non-string field alike."""
    from vln_gym.data.fields import LoadOptions
    from vln_gym.data.loader import _lone_surrogate_problems
    from vln_gym.data.problems import Location

    fields = dict(images=("a.jpg",), agent_position=(0.0, 0.0, 0.0), agent_heading=0.0)
    fields |= dict(goal_position=(1.0, 0.0, 0.0), distance_to_goal=1.0, prompt=prompt)
    options, where = LoadOptions.create(), Location("f.jsonl", 3)
    assert _lone_surrogate_problems(where, Episode("e1", "go", **fields), options) == []
    problems = _lone_surrogate_problems(where, Episode("e1", "go \ud800", **fields), options)
    assert [(p.line, p.field) for p in problems] == [(3, "instruction")]
    assert "lone surrogate ('\\ud800' at character 3)" in problems[0].message


def test_duplicate_ids_compare_whole_locations():
    """`checked_items` keeps each id's first `Location`: the same location again is the same record (its
    episodes), another one is a duplicate, also on the same line of a one-line JSON array (the index)."""
    from vln_gym.data.fields import LoadOptions
    from vln_gym.data.loader import checked_items
    from vln_gym.data.problems import DataError, Location

    fields = dict(images=("a.jpg",), agent_position=(0.0, 0.0, 0.0), agent_heading=0.0)
    fields |= dict(goal_position=(1.0, 0.0, 0.0), distance_to_goal=1.0)
    first = Location("f.json", 1, 0)
    items = [
        (first, Episode("a", "go", **fields)),
        (first, Episode("b", "go", **fields)),
        (Location("f.json", 1, 0), Episode("b", "go", **fields)),  # another object, the same record
        (Location("f.json", 1, 1), Episode("a", "go", **fields)),  # the same line, another record
    ]
    out = list(checked_items(items, LoadOptions.create()))
    assert [isinstance(item, DataError) for item in out] == [False, False, False, True]
    assert [str(p) for p in out[3].problems] == ["f.json:1: [1].id: duplicate id 'a' (first at f.json:1 [0])"]


def test_duplicate_ids_in_a_one_line_json_array(tmp_path):
    import json

    from test_data_helpers import make_png, own_record

    from vln_gym.data import validate_files

    make_png(tmp_path / "a.png")
    path = tmp_path / "d.json"
    path.write_text(json.dumps([own_record("dup", ["a.png"]), own_record("dup", ["a.png"])]))
    report = validate_files([path], media_dir=tmp_path)
    assert [str(p) for p in report.problems] == [
        f"{path}:1: [1].id: duplicate id 'dup' (first at {path}:1 [0])"
    ]


# Values a ShareGPT record's parts take: what the common-record path must leave to `chat_episode`.
ROLES = ["human", "gpt", "user", "assistant", "model", "system", "observation", "bob", None, 3, ["human"]]
TEXTS = ["<image>", "go <image> <image>", "", "   ", 5, None, [{"type": "text", "text": "<image>"}]]
REFERENCES = ["f/0.png", "f/1.png", "f/2.png", "f/nope.png", "f/link.png", "../outside.png", "", " ", 3, None]
IDS = ["a", "b", "", 3, True, None, 2.5, ["a"]]
STRINGS = ["go to the door", "", "  ", 5, None]
POSES = [[1.0, 0.0, 2.0], [1, 0, 2], [1.0, 2.0], [math.nan, 0.0, 0.0], "x", None, [True, 0.0, 0.0]]


def _change_turns(record: dict, change: int, rng: random.Random) -> None:
    turns = record.get("conversations")
    turns = turns if isinstance(turns, list) else []
    turn = rng.choice([t for t in turns if isinstance(t, dict)] or [{}])
    if change == 0:
        turn[rng.choice(["from", "role"])] = rng.choice(ROLES)
    elif change == 1:
        turn[rng.choice(["value", "content"])] = rng.choice(TEXTS)
    elif change == 2:
        turn.pop(rng.choice(["from", "value"]), None)
    elif change == 3:
        turns.insert(rng.randrange(3), {"from": rng.choice(ROLES), "value": "hi"})
    elif change == 4:
        record["conversations"] = rng.choice([[], "hi", None, turns[:1]])
    elif len(turns) == 2 and isinstance(turns[1], dict):
        turns[1]["value"] = rng.choice(["<image>", "see <image>"])  # placeholders count in every turn


def _chat_variant(rng: random.Random, index: int) -> dict:
    """A ShareGPT record, common (about half) or with one to three parts changed to something else."""
    images = [f"f/{k}.png" for k in range(rng.randint(1, 4))]
    record = sharegpt_record(images, id=f"r{index}", expert_actions=[1, 2, 0])
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
        change = rng.randrange(15)
        if change in (0, 1, 2, 3, 4, 13):
            _change_turns(record, change, rng)
        elif change == 5:
            record["images"] = rng.choice([[], "f/0.png", None, [rng.choice(REFERENCES) for _ in images]])
        elif change == 6:
            images[rng.randrange(len(images))] = rng.choice(REFERENCES)
        elif change == 7 and rng.random() < 0.2:
            record.pop("id", None)  # a generated id
        elif change == 7:
            record["id"] = rng.choice(IDS)
        elif change in (8, 9):
            record[rng.choice(["instruction", "system"])] = rng.choice(STRINGS)
        elif change == 10:
            record[rng.choice(["agent_position", "goal_position", "agent_heading"])] = rng.choice(POSES)
        elif change == 11:
            record[rng.choice(["meta", "messages", "format", "source"])] = rng.choice(STRINGS)
        elif change == 12:
            record[rng.choice(["distance_to_goal", "expert_actions", "scene_id"])] = rng.choice(POSES)
        else:
            record["messages"] = [
                {"role": "user", "content": "<image>"},
                {"role": "assistant", "content": "x"},
            ]
            record.pop("conversations", None)
    return record


def _renamed(record: dict, names: dict) -> dict:
    """``record`` with its keys, its turns' keys and its role names renamed by ``names``."""
    renamed = {names.get(key, key): value for key, value in record.items()}
    for key in ("conversations", "messages"):
        turns = renamed.get(names.get(key, key))
        if isinstance(turns, list):
            turns[:] = [
                {names.get(k, k): names.get(v, v) if isinstance(v, str) else v for k, v in turn.items()}
                if isinstance(turn, dict)
                else turn
                for turn in turns
            ]
    return renamed


SYSTEM_TURN = {"from": "system", "value": "<image> Be brief."}  # VLM-R1 reads a leading one as the system
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user"}
SWAPPED = {"user_tag": "gpt", "assistant_tag": "human", "observation_tag": "bob"}
SAME = {"user_tag": "human", "assistant_tag": "human"}  # the full reader takes a second user turn as none
SKIPPED = {"observation_tag": "human"}  # a skipped role before a user one


@pytest.mark.parametrize(
    "options, names",
    [
        ({}, {}),
        ({"check_images": True, "require_pose": False}, {}),
        ({"allow_outside_media": True}, {}),
        ({"chat_tags": TAGS}, {"from": "role", "value": "content", "human": "user"}),
        ({"chat_tags": SWAPPED}, {"human": "gpt", "gpt": "human"}),
        ({"chat_tags": SAME}, {"gpt": "human"}),  # no record is common: every one by the full reader
        ({"chat_tags": SKIPPED}, {}),
        (
            {"field_map": {"conversations": "messages", "id": "meta"}},
            {"conversations": "messages", "id": "meta"},
        ),
        ({"field_map": {"instruction": "system"}, "heading_unit": "deg"}, {}),
        ({}, {"images": "image"}),  # VLM-R1, detected
        ({"format": "vlm-r1", "check_images": True}, {"images": "image"}),
    ],
)
def test_common_sharegpt_records_in_one_pass_equal_the_full_reader(tmp_path, monkeypatch, options, names):
    """`quick_chat_episode` gives `chat_episode`'s Episode for every ShareGPT or VLM-R1 record it reads, and
    leaves every other record (and its problems) to it: the same episodes and problems, in order, with it on
    and off."""
    root = tmp_path / "data"
    for index in range(3):
        make_png(root / "f" / f"{index}.png")
    make_png(tmp_path / "outside.png")
    (root / " ").write_bytes((root / "f" / "0.png").read_bytes())  # named by a blank reference: still bad
    (root / "f" / "link.png").symlink_to(root / "f" / "0.png")
    rng = random.Random(7)
    records = [_chat_variant(rng, index % 300) for index in range(400)]
    records += [  # one part changed each, the rest common
        sharegpt_record(["f/0.png"], id=""),
        sharegpt_record(["f/0.png"], id=7),
        sharegpt_record(["f/1.png"]),
        sharegpt_record(["f/1.png"], id="s1", instruction="   "),
        sharegpt_record(["f/1.png"], id="s2", system=None),
        sharegpt_record(["f/1.png"], id="s3", system=""),
        sharegpt_record(["f/2.png", " "], id="s4"),
        sharegpt_record(["f/0.png"], id="s5", conversations=[SYSTEM_TURN, {"from": "human", "value": "go"}]),
        sharegpt_record(["f/0.png"], id="s6", conversations=[{"value": "<image> go"}, {"value": "ok"}]),
    ]
    records = [_renamed(record, names) for record in records] + [[1, 2], "3", "null"]  # not objects
    path = write_lines(root / "chat.jsonl", records)
    read_quickly = []
    quick = readers.quick_chat_episode
    monkeypatch.setattr(
        readers, "quick_chat_episode", lambda *a: read_quickly.append(quick(*a)) or read_quickly[-1]
    )
    fast = _outcome(path, options)
    common = sum(episode is not None for episode in read_quickly)
    if options.get("chat_tags") in (SAME, SKIPPED):
        assert common == 0
    else:
        assert common >= 30 and len(fast[0]) >= 30
    assert len(fast[1]) >= 30
    monkeypatch.setitem(readers.QUICK, "on", False)
    assert fast == _outcome(path, options)


PHRASES = ["Your instruction is", "YOUR INSTRUCTION IS", "your instruction is:", "your ınstruction is", "is"]
QUOTES = ["'", '"', "“", "”", "’", "‘", ""]
FILLERS = ["", "walk to the door", " ", "\n", ".", ",", "<image>", "Your", "é", "instruction is"]
PROMPTS = st.lists(
    st.sampled_from(PHRASES) | st.sampled_from(QUOTES) | st.sampled_from(FILLERS), max_size=10
).map("".join)
VLN_R1_PROMPTS = st.tuples(*(st.sampled_from(parts) for parts in (FILLERS, PHRASES, QUOTES, FILLERS, QUOTES)))


@settings(max_examples=500, deadline=None)
@given(PROMPTS | VLN_R1_PROMPTS.map("".join) | st.text(max_size=30))
def test_instruction_from_prompt_equals_the_case_blind_search_from_the_start(prompt):
    """The ASCII shortcut (search from the first ``your instruction is`` found by ``str.find``) gives what the
    regex finds searching from the start."""
    match = chat._QUOTED_INSTRUCTION.search(prompt)
    expected = match.group("text").strip() if match else prompt.replace("<image>", " ").strip()
    assert chat.instruction_from_prompt(prompt) == expected
