"""Chat-style records: VLM-R1 (``image`` + ``conversations``) and ShareGPT / LLaMA-Factory (``images`` +
``conversations`` with from/value, or OpenAI-style ``messages`` with role/content).

The first user turn is the prompt, the first assistant turn after it the expert response, a system turn
(or a top-level ``system`` column) the system prompt. The instruction is the ``instruction`` column when
present, else the quoted instruction of a VLN-R1 style prompt (``Your instruction is '...'``), else the
prompt without ``<image>`` tags. In ShareGPT the number of ``<image>`` placeholders must equal the number of
images (LLaMA-Factory refuses a mismatch too). VLM-R1 records are read as VLM-R1's ``grpo_jsonl.py`` reads
them: turn 0 is the problem and turn 1 the solution whatever their roles, ``image`` is a path or a list
joined to the image folder (``media_dir``), and placeholders are not counted (it strips them and puts one
image before the text per path). Unlike VLM-R1 we refuse records without an image (a VLN step needs a
view) and read a leading ``system`` turn as the system prompt.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import ALPACA_DEFAULTS, as_text
from vln_gym.data.media import read_images
from vln_gym.data.privileged import read_privileged
from vln_gym.data.problems import DataError, FieldError, Location, RecordProblems
from vln_gym.episode import Episode, new_episode

IMAGE_TAG = "<image>"
USER_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "model"})
SYSTEM_ROLES = frozenset({"system"})
_QUOTED_INSTRUCTION = re.compile(
    r"your instruction is:?\s*(['\"“‘])(?P<text>.+?)['\"”’]\s*[.,;]?\s*(?:\n|$)", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class Roles:
    """How turns name their role and text: our lenient defaults, or a dataset_info entry's ``tags``."""

    role_keys: tuple[str, ...] = ("from", "role")
    content_keys: tuple[str, ...] = ("value", "content")
    user: frozenset[str] = USER_ROLES
    assistant: frozenset[str] = ASSISTANT_ROLES
    system: frozenset[str] = SYSTEM_ROLES
    skipped: frozenset[str] = frozenset()  # tool turns: neither prompt nor answer

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Roles:
        """LLaMA-Factory tags (defaults from/value/human/gpt/system/observation/function_call)."""
        if not tags:
            return cls()
        return cls(
            role_keys=(tags.get("role_tag", "from"),),
            content_keys=(tags.get("content_tag", "value"),),
            user=frozenset({tags.get("user_tag", "human")}),
            assistant=frozenset({tags.get("assistant_tag", "gpt")}),
            system=frozenset({tags.get("system_tag", "system")}),
            skipped=frozenset(
                {tags.get("observation_tag", "observation"), tags.get("function_tag", "function_call")}
            ),
        )

    def describe(self) -> str:
        groups = (self.user, self.assistant, self.system)
        user, assistant, system = ("/".join(sorted(names)) for names in groups)
        return f"{user}, {assistant} or {system}"


DEFAULT_ROLES = Roles()


@functools.lru_cache(maxsize=16)
def roles_for(tags: tuple[tuple[str, str], ...]) -> Roles:
    return Roles.from_tags(dict(tags)) if tags else DEFAULT_ROLES  # the defaults' own object: see the hint


def alpaca_as_chat(record: Any, location: Location, ctx: ReadContext) -> Any:
    """An alpaca record as a ShareGPT one, the way LLaMA-Factory converts it: ``history`` pairs first, then
    the user turn ``prompt + "\\n" + query`` (empty parts left out) and the ``response``."""
    if not isinstance(record, dict):
        return record
    column = ctx.options.column
    prompt_key, query_key, response_key = column("prompt"), column("query"), column("response")
    if (prompt_key, query_key) == ("prompt", "query") and not {"prompt", "query"} & record.keys():
        prompt_key, query_key, response_key = ALPACA_DEFAULTS.values()  # LLaMA-Factory's own column names
    history_key = column("history")
    if prompt_key not in record and query_key not in record:
        raise DataError(
            [location.problem(prompt_key, f"missing (alpaca needs '{prompt_key}' or '{query_key}')")]
        )
    report = RecordProblems(location)
    history = record.get(history_key) or []
    if not isinstance(history, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
        for pair in history
    ):
        report.add(history_key, "expected a list of [query, response] string pairs")
    # a null column is an absent one, as LLaMA-Factory reads it
    prompt, query, response = (
        None if record.get(key) is None else report.check(as_text, record[key], key, allow_empty=True)
        for key in (prompt_key, query_key, response_key)
    )
    if report:
        raise DataError(report.problems)
    turns = []
    for past_query, past_response in history:
        turns += [{"from": "human", "value": past_query}, {"from": "gpt", "value": past_response}]
    turns.append({"from": "human", "value": "\n".join(part for part in (prompt, query) if part)})
    if response is not None:
        turns.append({"from": "gpt", "value": response})
    converted = {
        key: value
        for key, value in record.items()
        if key not in (prompt_key, query_key, response_key, history_key)
    }
    converted[column("conversations")] = turns
    return converted


class Dialogue(NamedTuple):
    """The texts of one record's turns (a named tuple: built once a record, and a frozen dataclass's
    ``__init__`` costs three times as much)."""

    system: str | None
    prompt: str | None
    response: str | None
    num_placeholders: int


def _content_text(content: Any, name: str) -> str:
    """A turn's text; OpenAI content parts are joined, image parts become ``<image>``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            elif kind in ("image", "image_url"):
                pieces.append(IMAGE_TAG)
            else:
                raise FieldError(
                    f"{name}[{index}]", f"expected a text or image content part, got {part!r:.60}"
                )
        return "".join(pieces)
    raise FieldError(name, f"expected a string (or a list of content parts), got {type(content).__name__}")


def turn_text(turn: Any, name: str, index: int, roles: Roles = DEFAULT_ROLES) -> tuple[Any, str]:
    """``(role, text)`` of turn ``index`` of list ``name`` (from/value or role/content, or the tags)."""
    if not isinstance(turn, dict):
        keys = " or ".join(f"{r}/{c}" for r, c in zip(roles.role_keys, roles.content_keys, strict=True))
        raise FieldError(f"{name}[{index}]", f"expected an object with {keys}, got {turn!r:.40}")
    role = None
    for key in roles.role_keys:
        if key in turn:
            role = turn[key]
            break
    for key in roles.content_keys:
        if key in turn:
            content = turn[key]
            if isinstance(content, str):
                return role, content
            return role, _content_text(content, f"{name}[{index}].{key}")
    wanted = " or ".join(repr(key) for key in roles.content_keys)
    raise FieldError(f"{name}[{index}]", f"missing {wanted} (the turn's text)")


def _has_role(role: Any, names: frozenset[str]) -> bool:
    """``role`` is one of ``names`` (a list or object as a role is no role: unknown, never a crash)."""
    return isinstance(role, str) and role in names


def parse_vlm_r1_dialogue(value: Any, name: str) -> Dialogue:
    """VLM-R1's rule (``grpo_jsonl.py``): turn 0 is the problem, turn 1 the solution, roles unchecked
    (one extension: a leading turn whose role is ``system`` is the system prompt, not the problem)."""
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"expected a non-empty list of turns, got {value!r:.40}")
    turns = [turn_text(turn, name, index) for index, turn in enumerate(value[:3])]
    system = None
    if _has_role(turns[0][0], SYSTEM_ROLES):
        system, turns = turns[0][1], turns[1:]
    if not turns:
        raise FieldError(name, "no problem turn after the system turn")
    problem = turns[0][1]
    return Dialogue(system, problem, turns[1][1] if len(turns) > 1 else None, problem.count(IMAGE_TAG))


def parse_dialogue(value: Any, name: str, roles: Roles = DEFAULT_ROLES) -> Dialogue:
    """Roles and texts of a ``conversations`` / ``messages`` list."""
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"expected a non-empty list of turns, got {value!r:.40}")
    system = prompt = response = None
    placeholders = 0
    for index, turn in enumerate(value):
        role, text = turn_text(turn, name, index, roles)
        placeholders += text.count(IMAGE_TAG)
        named = isinstance(role, str)  # a list or object as a role is no role: unknown, never a crash
        if named and role in roles.skipped:
            continue
        if named and role in roles.user:
            prompt = text if prompt is None else prompt
        elif named and role in roles.assistant:
            if prompt is None:
                raise FieldError(f"{name}[{index}]", "assistant turn before any user turn")
            response = text if response is None else response
        elif named and role in roles.system:
            system = text if system is None else system
        else:
            hint = (
                ""
                if roles is not DEFAULT_ROLES
                else "; custom role names: pass dataset_info tags / chat_tags"
            )
            raise FieldError(f"{name}[{index}]", f"unknown role {role!r} (expected {roles.describe()}){hint}")
    if prompt is None:
        raise FieldError(name, "no user (human) turn: the prompt is missing")
    return Dialogue(system, prompt, response, placeholders)


_PHRASE = "your instruction is"  # where every match of `_QUOTED_INSTRUCTION` starts (any case)


def instruction_from_prompt(prompt: str) -> str:
    """The quoted VLN-R1 instruction if the prompt has one, else the prompt without ``<image>`` tags."""
    start = 0
    # ASCII text meets the pattern's words in ASCII case only: find the first by str (the case-blind regex
    # tries every position: 2x as long for a prompt without them or after a preamble)
    if prompt.isascii() and not prompt.startswith("Your instruction is"):
        start = prompt.lower().find(_PHRASE)
    match = _QUOTED_INSTRUCTION.search(prompt, start) if start >= 0 else None
    if match:
        return match.group("text").strip()
    return prompt.replace(IMAGE_TAG, " ").strip()


def _generated_id(location: Location) -> str:
    stem = Path(location.path).stem
    return f"{stem}[{location.index}]" if location.index is not None else f"{stem}:{location.line}"


def _dialogue(
    record: dict, turns_column: str | None, fmt: str, ctx: ReadContext, report: RecordProblems
) -> Dialogue | None:
    if turns_column is None:
        columns = ctx.options.turn_columns
        report.add(columns[0], f"missing (need {' or '.join(repr(column) for column in columns)})")
        return None
    if fmt == "vlm-r1":
        return report.check(parse_vlm_r1_dialogue, record[turns_column], turns_column)
    # an alpaca record arrives converted: its turns use our default roles
    roles = roles_for(ctx.options.chat_tags) if fmt == "sharegpt" else DEFAULT_ROLES
    return report.check(parse_dialogue, record[turns_column], turns_column, roles)


def _images(
    record: dict,
    images_column: str,
    dialogue: Dialogue | None,
    location: Location,
    ctx: ReadContext,
    report: RecordProblems,
    fmt: str,
) -> tuple[str, ...] | None:
    if images_column not in record:
        report.add(images_column, "missing (a VLN record needs at least the current view)")
        return None
    raw = record[images_column]
    images = read_images(
        raw, images_column, base_dir=ctx.base_dir(location.path), ctx=ctx, report=report,
        allow_string=fmt == "vlm-r1",
    )  # fmt: skip
    count = 1 if isinstance(raw, str) else len(raw) if isinstance(raw, list) else None
    # VLM-R1 drops the placeholders and puts one image part per image before the text: no count to match.
    if fmt != "vlm-r1" and dialogue is not None and count is not None and dialogue.num_placeholders != count:
        report.add(
            images_column,
            f"{dialogue.num_placeholders} {IMAGE_TAG} placeholder(s) in the dialogue, {count} image(s)",
        )
    return images


def _instruction(record: dict, dialogue: Dialogue | None, column: str, report: RecordProblems) -> str | None:
    if column in record:
        return report.check(as_text, record[column], column)
    if dialogue is None:
        return None
    instruction = instruction_from_prompt(dialogue.prompt)
    if not instruction:
        report.add(column, "missing: no instruction field and the prompt holds no text")
    return instruction


def _episode_id(record: dict, location: Location, column: str, report: RecordProblems) -> str:
    raw_id = record.get(column)
    if type(raw_id) is str and raw_id:  # the common case
        return raw_id
    if column not in record:
        return _generated_id(location)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        report.add(column, f"expected a non-empty string or an integer, got {raw_id!r:.40}")
        return _generated_id(location)
    return raw_id if isinstance(raw_id, str) else str(raw_id)


def chat_episode(record: Any, location: Location, ctx: ReadContext, fmt: str) -> Episode:
    """Episode of one VLM-R1 (``fmt="vlm-r1"``) or ShareGPT record; `DataError` lists every problem."""
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    names = ctx.options.names
    report = RecordProblems(location)
    turns_column = next((column for column in ctx.options.turn_columns if column in record), None)
    dialogue = _dialogue(record, turns_column, fmt, ctx, report)
    images_column = ctx.options.column("images", "image" if fmt == "vlm-r1" else "images")
    images = _images(record, images_column, dialogue, location, ctx, report, fmt)
    instruction_column, id_column, system_column = names["instruction"], names["id"], names["system"]
    instruction = _instruction(record, dialogue, instruction_column, report)
    episode_id = _episode_id(record, location, id_column, report)
    system = dialogue.system if dialogue is not None else None
    if system_column in record:
        system = report.check(as_text, record[system_column], system_column, allow_empty=True)
    values = read_privileged(record, images, ctx, report)
    if report.problems:
        raise DataError(report.problems)
    own = (turns_column, images_column, instruction_column, id_column, system_column)
    privileged_columns = ctx.options.privileged_columns
    extra = {key: value for key, value in record.items() if key not in own and key not in privileged_columns}
    extra["pose_source"] = values.pop("pose_source")
    values["episode_id"] = episode_id
    values["instruction"] = instruction
    values["images"] = images
    values["system_prompt"] = system
    values["prompt"] = dialogue.prompt
    values["expert_response"] = dialogue.response
    values["source"] = str(location)
    values["extra"] = extra
    return new_episode(values)
