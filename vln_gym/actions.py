"""Text actions: parse a model's answer into Habitat action ids, and format ids back into text.

Accepted answers (case-insensitive, see ``parse_action``):

- words: ``forward``, ``move forward``, ``go straight``, ``turn left``, ``left``, ``stop`` ...
- NaVILA-style amounts: ``move forward 75 cm`` (= 3 steps of 0.25 m), ``turn left 30 degrees``, and its
  stop sentence ``I think I should stop because I have finished the instruction.``;
- VLN-R1 options: ``A. Move forward 25 cm``, or a letter alone (``B``) when ``options`` maps letters;
- StreamVLN arrows: ``↑`` forward, ``←`` turn left, ``→`` turn right, ``STOP``;
- any of these inside ``<answer>...</answer>``, optionally after ``<think>...</think>``;
- comma-separated lists and arrow runs = one macro step (everything after the first STOP is dropped).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from vln_gym.geometry import ACTION_NAMES, MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

__all__ = [
    "ACTION_PROMPT",
    "ACTION_WORDS",
    "REASONING_PROMPT",
    "STYLES",
    "VLN_R1_OPTIONS",
    "ParsedAction",
    "format_action",
    "format_actions",
    "parse_action",
]

# Canonical phrase of each action, indexed by Habitat id (ACTION_WORDS[TURN_LEFT] == "turn left").
ACTION_WORDS: tuple[str, ...] = ("stop", "move forward", "turn left", "turn right")

# VLN-R1 multiple-choice letters (their prompt: A. Move forward, B. Turn left, C. Turn right, D. Stop).
VLN_R1_OPTIONS: Mapping[str, int] = {"A": MOVE_FORWARD, "B": TURN_LEFT, "C": TURN_RIGHT, "D": STOP}

ACTION_PROMPT = (
    "Answer with one action: move forward, turn left, turn right or stop. "
    "You may give an amount (move forward 75 cm, turn left 30 degrees) "
    "or several actions separated by commas (move forward, turn left)."
)

REASONING_PROMPT = (
    "First think about where to go inside <think></think>, then give your action inside <answer></answer>."
)

STYLES = ("word", "navila", "option", "arrow")

_ARROWS = {"↑": MOVE_FORWARD, "←": TURN_LEFT, "→": TURN_RIGHT}
_ARROW_OF = {action: arrow for arrow, action in _ARROWS.items()}
_OPTION_TEXT = ("Stop", "Move forward", "Turn left", "Turn right")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_THINK_TAG = re.compile(r"<think>.*?</think>", re.S | re.I)
_ANY_TAG = re.compile(r"</?(?:answer|think)>", re.I)
_LEAD_IN = re.compile(r"^(?:(?:the\s+)?next\s+action\s+(?:is|will\s+be)\b|action)\s*:?\s*", re.I)
_SEPARATOR = re.compile(r"[,;\n]")
_ARROW_RUN = re.compile(r"^(?:[↑←→]|stop|\s)+$", re.I)
_ARROW_TOKEN = re.compile(r"[↑←→]|stop", re.I)
_NAVILA_STOP = re.compile(r"^i\s+think\s+i\s+should\s+stop\b", re.I)  # NaVILA's stop sentence
_LETTER_ALONE = re.compile(r"^([a-z])[.):]?$", re.I)
_SENTENCE = re.compile(
    r"""^(?:(?P<letter>[a-z])[.):]\s+)?
    (?:(?P<forward>(?:(?:move|go|walk|step|head)\s+)?(?:forwards?|straight(?:\s+ahead)?|ahead))
      |(?:(?:turn|rotate|go)\s+)?(?P<side>left|right)
      |(?P<stop>stop))
    (?:\s+(?:by\s+)?(?P<amount>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*
       (?P<unit>cm|centimet(?:er|re)s?|m|met(?:er|re)s?|°|deg|degrees?))?
    $""",
    re.I | re.X,
)
_CM_UNITS = frozenset({"cm", "centimeter", "centimeters", "centimetre", "centimetres"})
_M_UNITS = frozenset({"m", "meter", "meters", "metre", "metres"})


@dataclass(frozen=True)
class ParsedAction:
    """Result of ``parse_action``.

    ``actions`` are Habitat ids in order (empty when invalid); ``answer`` is the text that was parsed
    (the ``<answer>`` content when the tag is present); ``error`` says why the text is invalid.
    """

    actions: tuple[int, ...]
    valid: bool
    has_think: bool
    has_answer: bool
    answer: str
    error: str | None


class _Invalid(Exception):
    """Internal: one part of the answer does not parse (message = reason)."""


def parse_action(
    text: str,
    *,
    forward_step: float = 0.25,
    turn_angle: float = 15.0,
    options: Mapping[str, int] | None = None,
    max_actions: int = 32,
) -> ParsedAction:
    """Parse a model's answer into Habitat action ids; never raises for a ``str``.

    Amounts are rounded to the nearest whole number of steps (``forward_step`` metres, ``turn_angle``
    degrees); an amount rounding to 0 steps, more than ``max_actions`` actions, an unknown phrase or an
    option letter missing from ``options`` make the whole answer invalid (``valid=False``, ``actions=()``).
    Every part of a comma list must parse; then the actions after the first STOP are dropped.
    """
    if not isinstance(text, str):
        return ParsedAction((), False, False, False, "", f"answer must be a str, got {type(text).__name__}")
    if not (0 < forward_step < math.inf and 0 < turn_angle < math.inf):
        raise ValueError(
            f"forward_step and turn_angle must be finite and > 0, got {forward_step}, {turn_angle}"
        )
    if max_actions < 1:
        raise ValueError(f"max_actions must be >= 1, got {max_actions}")
    option_items = None
    if options is not None:
        option_items = tuple(sorted((str(key).upper(), value) for key, value in options.items()))
        if any(value not in (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT) for _, value in option_items):
            raise ValueError(f"options must map letters to action ids 0..3, got {dict(options)!r}")
    parse = _parse_cached if len(text) <= CACHE_MAX_CHARS else _parse
    return parse(text, float(forward_step), float(turn_angle), option_items, int(max_actions))


CACHE_MAX_CHARS = 512  # answers up to this long are memoised: 1024 entries stay under ~2 MB


def _parse(
    text: str,
    forward_step: float,
    turn_angle: float,
    options: tuple[tuple[str, int], ...] | None,
    max_actions: int,
) -> ParsedAction:
    answer, has_think, has_answer, error = _extract_answer(text)
    if error is not None:
        return ParsedAction((), False, has_think, has_answer, answer, error)
    try:
        actions = _parse_answer(
            answer, forward_step, turn_angle, dict(options) if options else None, max_actions
        )
    except _Invalid as invalid:
        return ParsedAction((), False, has_think, has_answer, answer, str(invalid))
    return ParsedAction(actions, True, has_think, has_answer, answer, None)


_parse_cached = lru_cache(maxsize=1024)(_parse)  # the env re-parses frequent answers every step


def _tag_pairs(tags: list[tuple[int, int, str]], name: str) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``<name>...</name>`` pairs, each open tag closed by the nearest close tag after it
    (what a lazy ``<name>(.*?)</name>`` regex finds), as (open start, open end, close start, close end)."""
    pairs, open_at = [], None
    for start, end, tag in tags:
        if tag == f"<{name}>" and open_at is None:
            open_at = (start, end)
        elif tag == f"</{name}>" and open_at is not None:
            pairs.append((*open_at, start, end))
            open_at = None
    return pairs


def _extract_answer(text: str) -> tuple[str, bool, bool, str | None]:
    """Return ``(answer text, has_think, has_answer, error)`` from the raw model output.

    One linear scan for the tags (lazy-regex pairing of unclosed tags is quadratic in the text length)."""
    tags = [(m.start(), m.end(), m.group(0).lower()) for m in _ANY_TAG.finditer(text)]
    answers = _tag_pairs(tags, "answer")
    thinks = _tag_pairs(tags, "think")
    if len(answers) > 1:
        return "", False, True, f"{len(answers)} <answer> tags, expected one"
    if answers:
        open_start, open_end, close_start, _ = answers[0]
        has_think = any(end <= open_start for _, _, _, end in thinks)
        answer = text[open_end:close_start].strip()
        if any(open_end <= start < close_start for start, _, _ in tags):
            return answer, has_think, True, "nested <think>/<answer> tag inside <answer>"
        return answer, has_think, True, None
    pieces, position = [], 0
    for start, _, _, end in thinks:
        pieces += [text[position:start], " "]
        position = end
    pieces.append(text[position:])
    rest = "".join(pieces)
    inside = [(a, b) for a, _, _, b in thinks]
    stray = next((tag for start, _, tag in tags if not any(a <= start < b for a, b in inside)), None)
    if stray:
        return rest.strip(), bool(thinks), False, f"unmatched {stray} tag"
    return rest.strip(), bool(thinks), False, None


def _parse_answer(
    answer: str, forward_step: float, turn_angle: float, options: dict[str, int] | None, max_actions: int
) -> tuple[int, ...]:
    lead_in = _LEAD_IN.match(answer)
    body = _strip_trailing(answer[lead_in.end() :] if lead_in else answer)
    if not body:
        raise _Invalid("empty answer")
    actions: list[int] = []
    stopped = False
    for index, raw_part in enumerate(_SEPARATOR.split(body)):
        part = _strip_trailing(raw_part.strip())
        if not part:
            raise _Invalid(f"empty action at position {index + 1}")
        budget = max_actions if stopped else max_actions - len(actions)
        parsed = _parse_part(part, forward_step, turn_angle, options, budget)
        if not stopped:  # later parts are still checked, then dropped: STOP ends the macro step
            stopped = STOP in parsed
            actions.extend(parsed[: parsed.index(STOP) + 1] if stopped else parsed)
    return tuple(actions)


def _strip_trailing(text: str) -> str:
    """Drop trailing whitespace and sentence punctuation (``A. Move forward 25 cm.`` -> ``... 25 cm``)."""
    while True:
        stripped = text.rstrip().rstrip(".!,;")
        if stripped == text:
            return text
        text = stripped


def _parse_part(
    part: str, forward_step: float, turn_angle: float, options: dict[str, int] | None, budget: int
) -> list[int]:
    """Parse one comma-separated part: an arrow run, a letter alone, or a sentence."""
    if _ARROW_RUN.match(part):
        run = [_ARROWS.get(token, STOP) for token in _ARROW_TOKEN.findall(part)]
        if STOP in run:
            run = run[: run.index(STOP) + 1]
        return _within_budget(run, budget, part)
    if _NAVILA_STOP.match(part):
        return [STOP]
    letter = _LETTER_ALONE.match(part)
    if letter:
        key = letter.group(1).upper()
        if options is None:
            raise _Invalid(f"option letter {key!r} given but no options are defined")
        if key not in options:
            raise _Invalid(f"unknown option {key!r} (options: {', '.join(sorted(options))})")
        return _within_budget([options[key]], budget, part)
    sentence = _SENTENCE.match(part)
    if sentence is None:
        raise _Invalid(f"unrecognised action {part[:60]!r}")
    if sentence.group("forward"):
        action = MOVE_FORWARD
    elif sentence.group("side"):
        action = TURN_LEFT if sentence.group("side").lower() == "left" else TURN_RIGHT
    else:
        action = STOP
    count = _count_steps(
        action, sentence.group("amount"), sentence.group("unit"), forward_step, turn_angle, budget, part
    )
    if count > budget:
        raise _Invalid(f"too many actions (max_actions exceeded) at {part[:60]!r}")
    letter_prefix = sentence.group("letter")
    if letter_prefix and options is not None:
        key = letter_prefix.upper()
        if key not in options:
            raise _Invalid(f"unknown option {key!r} (options: {', '.join(sorted(options))})")
        if options[key] != action:
            raise _Invalid(
                f"option {key!r} is action {options[key]} but its text {part[:60]!r} says "
                f"{ACTION_NAMES[action]} ({action})"
            )
    return [action] * count


def _count_steps(
    action: int,
    amount: str | None,
    unit: str | None,
    forward_step: float,
    turn_angle: float,
    budget: int,
    part: str,
) -> int:
    """Number of repeated actions an amount stands for (1 without an amount)."""
    if amount is None:
        return 1
    unit = (unit or "").lower()
    value = float(amount)
    if action == STOP:
        raise _Invalid(f"stop takes no amount: {part[:60]!r}")
    if action == MOVE_FORWARD:
        if unit in _CM_UNITS:
            value /= 100.0
        elif unit not in _M_UNITS:
            raise _Invalid(f"forward amount needs cm or m, got {unit!r}: {part[:60]!r}")
        ratio = value / forward_step
    else:
        if unit in _CM_UNITS or unit in _M_UNITS:
            raise _Invalid(f"turn amount needs degrees, got {unit!r}: {part[:60]!r}")
        ratio = value / turn_angle
    if not ratio < budget + 1:  # also catches inf from a huge number
        raise _Invalid(f"too many actions (max_actions exceeded) at {part[:60]!r}")
    steps = math.floor(ratio + 0.5 + 1e-9)  # round half up; 1e-9 absorbs float error (0.35 / 0.1)
    if steps < 1:
        raise _Invalid(f"amount rounds to 0 steps: {part[:60]!r}")
    return steps


def _within_budget(actions: list[int], budget: int, part: str) -> list[int]:
    if len(actions) > budget:
        raise _Invalid(f"too many actions (max_actions exceeded) at {part[:60]!r}")
    return actions


def _number(value: float) -> str:
    """Short decimal text of an amount (25.0 -> '25', 0.1 * 100 -> '10')."""
    return f"{round(value, 6):g}"


def format_action(
    action: int, style: str = "word", *, forward_step: float = 0.25, turn_angle: float = 15.0
) -> str:
    """Text for one Habitat action in ``style`` (one of ``STYLES``); ``parse_action`` reads it back."""
    if action not in (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT):
        raise ValueError(
            f"action must be 0 STOP, 1 MOVE_FORWARD, 2 TURN_LEFT or 3 TURN_RIGHT, got {action!r}"
        )
    if style == "word":
        return ACTION_WORDS[action]
    if style == "arrow":
        return "STOP" if action == STOP else _ARROW_OF[action]
    if action == STOP:
        amount = ""
    elif action == MOVE_FORWARD:
        amount = f" {_number(forward_step * 100.0)} cm"
    else:
        amount = f" {_number(turn_angle)} degrees"
    if style == "navila":
        return ACTION_WORDS[action] + amount
    if style == "option":
        letter = next(key for key, value in VLN_R1_OPTIONS.items() if value == action)
        return f"{letter}. {_OPTION_TEXT[action]}{amount}"
    raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


def format_actions(
    actions: Iterable[int], style: str = "word", *, forward_step: float = 0.25, turn_angle: float = 15.0
) -> str:
    """Text for an action sequence: comma-joined phrases; arrows are concatenated (``↑↑←STOP``)."""
    phrases = [format_action(a, style, forward_step=forward_step, turn_angle=turn_angle) for a in actions]
    return "".join(phrases) if style == "arrow" else ", ".join(phrases)
