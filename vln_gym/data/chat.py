"""Chat-style records: VLM-R1 (``image`` + ``conversations``) and ShareGPT / LLaMA-Factory (``images`` +
``conversations`` with from/value, or OpenAI-style ``messages`` with role/content).

The first user turn is the prompt, the first assistant turn after it the expert response, a system turn
(or a top-level ``system`` column) the system prompt. The instruction is the ``instruction`` column when
present, else the quoted instruction of a VLN-R1 style prompt (``Your instruction is '...'``), else the
prompt without ``<image>`` tags. The number of ``<image>`` placeholders must equal the number of images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vln_gym.data.context import ReadContext
from vln_gym.data.fields import PRIVILEGED_FIELDS, as_text
from vln_gym.data.media import read_images
from vln_gym.data.privileged import read_privileged
from vln_gym.data.problems import DataError, FieldError, Location, RecordProblems
from vln_gym.episode import Episode

IMAGE_TAG = "<image>"
USER_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "model"})
SYSTEM_ROLES = frozenset({"system"})
_QUOTED_INSTRUCTION = re.compile(
    r"your instruction is:?\s*(['\"“‘])(?P<text>.+?)['\"”’]\s*[.,;]?\s*(?:\n|$)", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class Dialogue:
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


def parse_dialogue(value: Any, name: str) -> Dialogue:
    """Roles and texts of a ``conversations`` / ``messages`` list."""
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"expected a non-empty list of turns, got {value!r:.40}")
    system = prompt = response = None
    placeholders = 0
    for index, turn in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict):
            raise FieldError(where, f"expected an object with from/value or role/content, got {turn!r:.40}")
        role = turn.get("from", turn.get("role"))
        if "value" in turn:
            text = _content_text(turn["value"], f"{where}.value")
        elif "content" in turn:
            text = _content_text(turn["content"], f"{where}.content")
        else:
            raise FieldError(where, "missing 'value' (ShareGPT) or 'content' (OpenAI messages)")
        placeholders += text.count(IMAGE_TAG)
        if role in USER_ROLES:
            prompt = text if prompt is None else prompt
        elif role in ASSISTANT_ROLES:
            if prompt is None:
                raise FieldError(where, "assistant turn before any user turn")
            response = text if response is None else response
        elif role in SYSTEM_ROLES:
            system = text if system is None else system
        else:
            raise FieldError(where, f"unknown role {role!r} (expected human/user, gpt/assistant or system)")
    if prompt is None:
        raise FieldError(name, "no user (human) turn: the prompt is missing")
    return Dialogue(system, prompt, response, placeholders)


def instruction_from_prompt(prompt: str) -> str:
    """The quoted VLN-R1 instruction if the prompt has one, else the prompt without ``<image>`` tags."""
    match = _QUOTED_INSTRUCTION.search(prompt)
    if match:
        return match.group("text").strip()
    return prompt.replace(IMAGE_TAG, " ").strip()


def _generated_id(location: Location) -> str:
    stem = Path(location.path).stem
    return f"{stem}[{location.index}]" if location.index is not None else f"{stem}:{location.line}"


def chat_episode(record: Any, location: Location, ctx: ReadContext, fmt: str) -> Episode:
    """Episode of one VLM-R1 (``fmt="vlm-r1"``) or ShareGPT record; `DataError` lists every problem."""
    if not isinstance(record, dict):
        raise DataError([location.problem("record", f"expected a JSON object, got {type(record).__name__}")])
    column = ctx.options.column
    report = RecordProblems(location)
    used = set()

    dialogue = None
    turns_column = next((c for c in (column("conversations"), column("messages")) if c in record), None)
    if turns_column is None:
        report.add(
            column("conversations"), f"missing (need '{column('conversations')}' or '{column('messages')}')"
        )
    else:
        used.add(turns_column)
        dialogue = report.check(parse_dialogue, record[turns_column], turns_column)

    images_column = column("images", "image" if fmt == "vlm-r1" else "images")
    images = None
    used.add(images_column)
    if images_column not in record:
        report.add(images_column, "missing (a VLN record needs at least the current view)")
    else:
        base_dir = str(Path(location.path).parent.absolute())
        images = read_images(
            record[images_column], images_column, base_dir=base_dir, ctx=ctx, report=report,
            allow_string=fmt == "vlm-r1",
        )  # fmt: skip
        raw = record[images_column]
        count = 1 if isinstance(raw, str) else len(raw) if isinstance(raw, list) else None
        if dialogue is not None and count is not None and dialogue.num_placeholders != count:
            report.add(
                images_column,
                f"{dialogue.num_placeholders} {IMAGE_TAG} placeholder(s) in the dialogue, {count} image(s)",
            )

    instruction = None
    used.add(column("instruction"))
    if column("instruction") in record:
        instruction = report.check(as_text, record[column("instruction")], column("instruction"))
    elif dialogue is not None:
        instruction = instruction_from_prompt(dialogue.prompt)
        if not instruction:
            report.add(column("instruction"), "missing: no instruction field and the prompt holds no text")

    episode_id = _generated_id(location)
    used.add(column("id"))
    if column("id") in record:
        raw_id = record[column("id")]
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
            report.add(column("id"), f"expected a non-empty string or an integer, got {raw_id!r:.40}")
        else:
            episode_id = str(raw_id)

    system = dialogue.system if dialogue is not None else None
    used.add(column("system"))
    if column("system") in record:
        system = report.check(as_text, record[column("system")], column("system"), allow_empty=True)

    privileged = read_privileged(record, images, ctx, report)
    used.update(column(name) for name in PRIVILEGED_FIELDS)
    if report:
        raise DataError(report.problems)
    pose_source = privileged.pop("pose_source")
    extra = {key: value for key, value in record.items() if key not in used}
    extra["pose_source"] = pose_source
    return Episode(
        episode_id=episode_id,
        instruction=instruction,
        images=images,
        system_prompt=system,
        prompt=dialogue.prompt,
        expert_response=dialogue.response,
        source=str(location),
        extra=extra,
        **privileged,
    )
