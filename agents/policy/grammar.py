"""`ActionGrammar`: the one definition of what a policy may answer, for the prompt, the parser and decoding.

Every answer the grammar generates is a string that ``vln_gym.actions.parse_action`` (what the env runs)
reads back as exactly the actions the grammar says, in the env's units. Constrained decoding admits
exactly these strings (`answers`), the prompt is rendered from them (`prompt`), and supervised targets
are encoded with them (`encode`), so the three can never disagree.

Styles:
- ``"word"``: ``move forward``, ``turn left``, ``turn right``, ``stop``; several comma-separated words
  are a macro step of one action each (``move forward, move forward, turn left``).
- ``"amount"``: NaVILA-style amounts in the env's units, ``move forward 75 cm`` (3 steps of 0.25 m),
  ``turn left 30 degrees``; several comma-separated phrases are a macro step (VLN-R1 / NaVILA chunks).
- ``"option"``: VLN-R1's lettered options, one step each, ``A. Move forward 25 cm``, ``B. Turn left 30
  degrees``, ``C. Turn right 30 degrees``, ``D. Stop``; VLN-R1 answers four of them in a row.

``max_actions`` bounds the primitive actions of one answer; ``stop`` may only end an answer. Within an
answer, consecutive phrases name different actions in the ``amount`` style (``move forward 50 cm``, not
``move forward 25 cm, move forward 25 cm``), so each action sequence has one spelling.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

STYLES = ("word", "amount", "option")
MOVES = (MOVE_FORWARD, TURN_LEFT, TURN_RIGHT)
_WORDS = {STOP: "stop", MOVE_FORWARD: "move forward", TURN_LEFT: "turn left", TURN_RIGHT: "turn right"}
_OPTIONS = {
    MOVE_FORWARD: "A. Move forward {cm} cm",
    TURN_LEFT: "B. Turn left {degrees} degrees",
    TURN_RIGHT: "C. Turn right {degrees} degrees",
    STOP: "D. Stop",
}


def _number(value: float) -> str:
    return f"{round(value, 6):g}"


@dataclass(frozen=True)
class ActionGrammar:
    """The answers a policy may give for an env with ``forward_step`` metres and ``turn_angle`` degrees."""

    style: str = "word"
    max_actions: int = 1
    forward_step: float = 0.25
    turn_angle: float = 15.0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"action grammar style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if not 1 <= self.max_actions <= 8:
            raise ValueError(f"max_actions (per answer) must be in 1..8, got {self.max_actions}")
        if not (self.forward_step > 0 and self.turn_angle > 0):
            raise ValueError("forward_step and turn_angle must be > 0")

    @classmethod
    def coerce(cls, value: ActionGrammar | dict[str, Any] | None) -> ActionGrammar:
        if value is None:
            return cls()
        return value if isinstance(value, cls) else cls(**value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---------------------------------------------------------------- phrases and answers

    def phrase(self, action: int, count: int = 1) -> str:
        """One phrase: ``count`` repeats of ``action`` (``count`` > 1 only in the amount style)."""
        if self.style == "option":
            return _OPTIONS[action].format(
                cm=_number(self.forward_step * 100.0), degrees=_number(self.turn_angle)
            )
        if action == STOP or self.style == "word":
            return _WORDS[action]
        if action == MOVE_FORWARD:
            return f"move forward {_number(count * self.forward_step * 100.0)} cm"
        return f"{_WORDS[action]} {_number(count * self.turn_angle)} degrees"

    def _runs(self, budget: int, previous: int | None) -> list[list[tuple[int, int]]]:
        """Every sequence of (action, count) runs using at most ``budget`` primitive actions."""
        sequences: list[list[tuple[int, int]]] = [[]]
        if budget <= 0:
            return sequences
        sequences.append([(STOP, 1)])  # stop ends an answer
        largest = budget if self.style == "amount" else 1
        for action, count in itertools.product(MOVES, range(1, largest + 1)):
            if self.style == "amount" and action == previous:
                continue  # one spelling per sequence: runs are merged into one phrase
            for rest in self._runs(budget - count, action):
                sequences.append([(action, count), *rest])
        return sequences

    @cached_property
    def answers(self) -> dict[str, tuple[int, ...]]:
        """Every answer string -> the actions the env executes for it (in a fixed order)."""
        result: dict[str, tuple[int, ...]] = {}
        for runs in self._runs(self.max_actions, None):
            if not runs:
                continue
            text = ", ".join(self.phrase(action, count) for action, count in runs)
            result[text] = tuple(action for action, count in runs for _ in range(count))
        return result

    def encode(self, plan: Sequence[int]) -> str:
        """The answer for an expert plan: as many of its next actions as one answer holds (a STOP ends it)."""
        if not plan:
            raise ValueError("encode: the expert plan is empty")
        chunk: list[int] = []
        for action in plan:
            if len(chunk) == self.max_actions:
                break
            chunk.append(int(action))
            if action == STOP:
                break
        runs = [(action, len(list(group))) for action, group in itertools.groupby(chunk)]
        if self.style != "amount":
            runs = [(action, 1) for action in chunk]
        return ", ".join(self.phrase(action, count) for action, count in runs)

    # ---------------------------------------------------------------- prompt

    def prompt(self) -> str:
        """The answer format, in words, with an example the grammar admits."""
        if self.style == "option":
            options = ", ".join(self.phrase(action) for action in (MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, STOP))
            count = (
                "one option"
                if self.max_actions == 1
                else f"up to {self.max_actions} options separated by commas"
            )
            example = self.encode((MOVE_FORWARD, MOVE_FORWARD, TURN_LEFT)[: self.max_actions])
            return f"Answer with {count} (D. Stop ends the answer): {options}; e.g. {example}."
        if self.style == "word":
            options = "move forward, turn left, turn right or stop"
            if self.max_actions == 1:
                return f"Answer with one action: {options}."
            example = self.encode((MOVE_FORWARD, MOVE_FORWARD, TURN_LEFT))
            return (
                f"Answer with up to {self.max_actions} actions separated by commas, each one of {options} "
                f"(stop ends the answer), e.g. {example}."
            )
        cm = _number(self.forward_step * 100.0)
        degrees = _number(self.turn_angle)
        kinds = (
            f"move forward N cm (N a multiple of {cm}), turn left N degrees or turn right N degrees (N a "
            f"multiple of {degrees}), or stop"
        )
        if self.max_actions == 1:
            return (
                f"Answer with one action: move forward {cm} cm, turn left {degrees} degrees, turn right "
                + (f"{degrees} degrees or stop.")
            )
        example = self.encode((MOVE_FORWARD, MOVE_FORWARD, TURN_LEFT)[: self.max_actions])
        return (
            f"Answer with actions separated by commas, {self.max_actions} steps at most in all: {kinds} "
            f"(stop ends the answer), e.g. {example}."
        )
