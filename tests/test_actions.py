"""Text action grammar: words, NaVILA amounts, VLN-R1 options, arrows, tags, macro steps, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vln_gym.actions import (
    ACTION_PROMPT,
    ACTION_WORDS,
    STYLES,
    VLN_R1_OPTIONS,
    ParsedAction,
    format_action,
    format_actions,
    parse_action,
)
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

F, L, R, S = MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, STOP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("forward", (F,)),
        ("Move Forward", (F,)),
        ("go straight", (F,)),
        ("MOVE FORWARD.", (F,)),
        ("turn left", (L,)),
        ("left", (L,)),
        ("Turn Right!", (R,)),
        ("right", (R,)),
        ("stop", (S,)),
        ("STOP", (S,)),
        ("  stop  ", (S,)),
    ],
)
def test_plain_words(text: str, expected: tuple[int, ...]) -> None:
    parsed = parse_action(text)
    assert parsed.valid and parsed.error is None
    assert parsed.actions == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("move forward 75 cm", (F, F, F)),
        ("move forward 75cm", (F, F, F)),
        ("move forward 0.75 m", (F, F, F)),
        ("move forward 0.75 meters", (F, F, F)),
        ("move forward 1 m", (F, F, F, F)),
        ("move forward 25 cm", (F,)),
        ("move forward 60 cm", (F, F)),  # 2.4 steps -> 2
        ("move forward 65 cm", (F, F, F)),  # 2.6 steps -> 3
        ("move forward 62.5 cm", (F, F, F)),  # 2.5 steps: half rounds up
        ("turn left 30 degrees", (L, L)),
        ("turn right 45 degrees", (R, R, R)),
        ("turn right 45°", (R, R, R)),
        ("turn left 20 degrees", (L,)),  # 1.33 -> 1
        ("turn left 23 deg", (L, L)),  # 1.53 -> 2
        ("The next action is move forward 75 cm.", (F, F, F)),
    ],
)
def test_navila_amounts_round_to_whole_steps(text: str, expected: tuple[int, ...]) -> None:
    parsed = parse_action(text)
    assert parsed.valid, parsed.error
    assert parsed.actions == expected


def test_amounts_follow_step_sizes() -> None:
    assert parse_action("move forward 1 m", forward_step=0.5).actions == (F, F)
    assert parse_action("turn left 30 degrees", turn_angle=30.0).actions == (L,)
    assert parse_action("turn left 90 degrees", turn_angle=30.0).actions == (L, L, L)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("turn left 5 degrees", "0 steps"),
        ("move forward 10 cm", "0 steps"),
        ("move forward 3", "unrecognised"),
        ("turn left 30 cm", "degrees"),
        ("move forward 30 degrees", "cm or m"),
        ("stop 30 cm", "no amount"),
        ("move forward -25 cm", "unrecognised"),
        ("fly up", "unrecognised"),
        ("", "empty"),
        ("   ", "empty"),
        ("forward,,left", "empty action at position 2"),
        ("A", "no options"),
    ],
)
def test_invalid_text_says_why(text: str, reason: str) -> None:
    parsed = parse_action(text)
    assert not parsed.valid
    assert parsed.actions == ()
    assert parsed.error is not None and reason in parsed.error


def test_vln_r1_option_sentences_honour_the_written_amount() -> None:
    # The data says 30 degrees while VLN-CE turns 15: the amount is honoured as written.
    parsed = parse_action("C. Turn right 30 degrees, A. Move forward 25 cm")
    assert parsed.actions == (R, R, F)
    assert parse_action("B. Turn left 30 degrees", turn_angle=30.0).actions == (L,)
    assert parse_action("D. Stop.").actions == (S,)


def test_option_letters_need_options() -> None:
    assert parse_action("B", options=VLN_R1_OPTIONS).actions == (L,)
    assert parse_action("b.", options=VLN_R1_OPTIONS).actions == (L,)
    assert parse_action("D", options=VLN_R1_OPTIONS).actions == (S,)
    assert parse_action("A, A, C", options=VLN_R1_OPTIONS).actions == (F, F, R)
    unknown = parse_action("E", options=VLN_R1_OPTIONS)
    assert not unknown.valid and "unknown option 'E'" in (unknown.error or "")


def test_option_letter_must_agree_with_its_text_when_options_are_given() -> None:
    mismatch = parse_action("A. Turn left", options=VLN_R1_OPTIONS)
    assert not mismatch.valid and "option 'A'" in (mismatch.error or "")
    assert parse_action("A. Turn left").actions == (L,)  # without options the letter is only a label


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("↑", (F,)),
        ("←", (L,)),
        ("→", (R,)),
        ("↑↑←", (F, F, L)),
        ("↑ ↑ →", (F, F, R)),
        ("↑↑STOP", (F, F, S)),
        ("↑, ←", (F, L)),
    ],
)
def test_streamvln_arrows(text: str, expected: tuple[int, ...]) -> None:
    assert parse_action(text).actions == expected


def test_answer_tag_content_is_parsed_and_think_recorded() -> None:
    parsed = parse_action("<think>The door is on the left.</think>\n<answer>turn left</answer>")
    assert parsed == ParsedAction((L,), True, True, True, "turn left", None)
    no_think = parse_action("I will go. <answer> move forward 50 cm </answer> done")
    assert no_think.actions == (F, F)
    assert (no_think.has_think, no_think.has_answer, no_think.answer) == (False, True, "move forward 50 cm")


def test_think_without_answer_tag_parses_the_rest() -> None:
    parsed = parse_action("<think>go on</think> forward")
    assert parsed.actions == (F,) and parsed.has_think and not parsed.has_answer


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<answer>forward", "unmatched <answer>"),
        ("<think>still thinking", "unmatched <think>"),
        ("<answer>left</answer><answer>right</answer>", "2 <answer> tags"),
        ("<answer><think>x</think>left</answer>", "nested"),
        ("<think>x</think><answer>dance</answer>", "unrecognised"),
    ],
)
def test_broken_tags_are_invalid(text: str, reason: str) -> None:
    parsed = parse_action(text)
    assert not parsed.valid and reason in (parsed.error or "")


def test_macro_step_keeps_order_and_any_invalid_part_invalidates_all() -> None:
    assert parse_action("move forward, turn left, move forward 50 cm").actions == (F, L, F, F)
    assert parse_action("forward; left\nright").actions == (F, L, R)
    bad = parse_action("move forward, jump, turn left")
    assert not bad.valid and bad.actions == () and "jump" in (bad.error or "")


def test_actions_after_stop_are_dropped() -> None:
    assert parse_action("A. Move forward 25 cm, D. Stop, D. Stop, D. Stop").actions == (F, S)
    assert parse_action("stop, forward, left").actions == (S,)
    assert parse_action("↑STOP").actions == (F, S)
    # Later parts are still checked: garbage after STOP is invalid.
    assert not parse_action("stop, jump").valid


def test_max_actions_bounds_the_macro_step() -> None:
    assert parse_action("move forward 2 m", max_actions=8).actions == (F,) * 8
    too_many = parse_action("move forward 2.25 m", max_actions=8)
    assert not too_many.valid and "max_actions" in (too_many.error or "")
    assert not parse_action("forward, forward, forward", max_actions=2).valid
    assert not parse_action("move forward " + "9" * 400 + " m").valid  # huge amount: no overflow
    assert parse_action("stop, forward", max_actions=1).actions == (S,)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="forward_step"):
        parse_action("forward", forward_step=0.0)
    with pytest.raises(ValueError, match="max_actions"):
        parse_action("forward", max_actions=0)
    with pytest.raises(ValueError, match="options"):
        parse_action("A", options={"A": 7})


def test_non_str_is_invalid_not_an_exception() -> None:
    parsed = parse_action(None)  # type: ignore[arg-type]
    assert not parsed.valid and "str" in (parsed.error or "")


def test_every_expert_answer_of_the_real_vln_ego_sample_parses(vln_ego_sample: Path) -> None:
    records = json.loads((vln_ego_sample / "r2r_16_images_4act_debug.json").read_text())
    letters = {"A": (F,), "B": (L, L), "C": (R, R), "D": (S,)}  # 30 degrees at 15 per turn = 2 turns
    for record in records:
        answer = record["conversations"][-1]["value"]
        parsed = parse_action(answer, options=VLN_R1_OPTIONS)
        assert parsed.valid, (answer, parsed.error)
        expected: list[int] = []
        for part in answer.split(", "):
            expected.extend(letters[part[0]])
            if expected[-1] == S:
                break
        assert parsed.actions == tuple(expected)
        at_30 = parse_action(answer, turn_angle=30.0)
        assert len([a for a in at_30.actions if a in (L, R)]) * 2 == len(
            [a for a in parsed.actions if a in (L, R)]
        )


def test_formatting_examples() -> None:
    assert format_action(F) == "move forward"
    assert format_action(L, "navila") == "turn left 15 degrees"
    assert format_action(F, "navila", forward_step=0.5) == "move forward 50 cm"
    assert format_action(R, "option", turn_angle=30.0) == "C. Turn right 30 degrees"
    assert format_action(S, "option") == "D. Stop"
    assert format_actions([F, F, L, S], "arrow") == "↑↑←STOP"
    assert format_actions([F, R], "word") == "move forward, turn right"
    with pytest.raises(ValueError, match="style"):
        format_action(F, "emoji")
    with pytest.raises(ValueError, match="action"):
        format_action(7)


def test_prompt_and_words_name_every_action() -> None:
    assert ACTION_WORDS[STOP] == "stop" and ACTION_WORDS[TURN_LEFT] == "turn left"
    for action, word in enumerate(ACTION_WORDS):
        assert word in ACTION_PROMPT.lower()
        assert parse_action(word).actions == (action,)


@settings(max_examples=300, deadline=None)
@given(
    actions=st.lists(st.sampled_from([S, F, L, R]), min_size=1, max_size=12),
    style=st.sampled_from(STYLES),
    forward_step=st.sampled_from([0.25, 0.1, 0.3, 0.5, 1.0]),
    turn_angle=st.sampled_from([15.0, 30.0, 10.0, 45.0, 7.5]),
    tags=st.booleans(),
)
def test_format_parse_round_trip(
    actions: list[int], style: str, forward_step: float, turn_angle: float, tags: bool
) -> None:
    text = format_actions(actions, style, forward_step=forward_step, turn_angle=turn_angle)
    if tags:
        text = f"<think>plan</think><answer>{text}</answer>"
    options = VLN_R1_OPTIONS if style == "option" else None
    parsed = parse_action(text, forward_step=forward_step, turn_angle=turn_angle, options=options)
    expected = actions[: actions.index(S) + 1] if S in actions else actions
    assert parsed.valid, (text, parsed.error)
    assert parsed.actions == tuple(expected)
    assert parsed.has_answer == tags and parsed.has_think == tags


_GRAMMAR_BITS = ["move", "forward", "turn", "left", "right", "stop", "A.", "25", "cm", "degrees", "°", "m"]
_NOISE = ["<answer>", "</answer>", "<think>", "</think>", ",", ";", "\n", ".", " ", "↑←→", "-", "9" * 30]


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(), st.lists(st.sampled_from(_GRAMMAR_BITS + _NOISE)).map(" ".join)))
def test_parse_never_raises_and_is_consistent(text: str) -> None:
    parsed = parse_action(text, options=VLN_R1_OPTIONS)
    assert isinstance(parsed, ParsedAction)
    assert parsed.valid == (parsed.error is None)
    if parsed.valid:
        assert 1 <= len(parsed.actions) <= 32
        assert all(a in (S, F, L, R) for a in parsed.actions)
        assert S not in parsed.actions[:-1]
    else:
        assert parsed.actions == ()
