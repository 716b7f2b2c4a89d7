"""The common ShareGPT or VLM-R1 record read in one pass: a user turn, an assistant turn, string texts, a list
of image paths (or, in VLM-R1, one path), poses of their own. `quick_chat_episode` gives the Episode that
`vln_gym.data.chat.chat_episode` gives such a record, or ``None`` for any other record, which `chat_episode`
then reads with every rule (and reports its problems). It may only ever answer ``None`` where it is unsure:
the tests hold its Episodes equal to the full reader's on generated records of every shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vln_gym.data.chat import (
    DEFAULT_ROLES,
    IMAGE_TAG,
    SYSTEM_ROLES,
    Roles,
    instruction_from_prompt,
    roles_for,
    turn_text,
)
from vln_gym.data.context import ReadContext
from vln_gym.data.fields import LoadOptions
from vln_gym.data.media import known_or_plain_path, read_images
from vln_gym.data.privileged import read_privileged
from vln_gym.data.problems import FieldError, Location, RecordProblems
from vln_gym.episode import Episode, episode_of_fields


@dataclass(frozen=True)
class ChatPlan:
    """The column names and roles one load reads its chat records with (from its `LoadOptions`)."""

    turns: str
    images: str
    instruction: str
    id: str
    system: str
    roles: Roles  # where a turn's role and text are
    user: frozenset[str]
    assistant: frozenset[str]
    not_extra: frozenset[str]  # the columns an Episode field holds; the others go to ``extra``
    vlm_r1: bool  # VLM-R1's rule: any roles but a leading system one, no placeholder count, one path a list

    @classmethod
    def of(cls, options: LoadOptions, fmt: str) -> ChatPlan:
        """The plan of ``fmt`` ``"sharegpt"`` or ``"vlm-r1"`` (whose turns take the default keys)."""
        vlm_r1 = fmt == "vlm-r1"
        roles = DEFAULT_ROLES if vlm_r1 else roles_for(options.chat_tags)
        names = options.names
        images = options.column("images", "image" if vlm_r1 else "images")
        own = (options.turn_columns[0], images, names["instruction"], names["id"])
        return cls(
            *own,
            system=names["system"],
            roles=roles,
            # the full reader's order: a skipped role first, then user, then assistant
            user=roles.user - roles.skipped,
            assistant=roles.assistant - roles.skipped - roles.user,
            not_extra=frozenset((*own, names["system"])) | options.privileged_columns,
            vlm_r1=vlm_r1,
        )


def _role_and_text(turn: Any, plan: ChatPlan) -> tuple[Any, str] | None:
    """A turn's role and text by the full reader's rule (`turn_text`); ``None`` where it finds a problem."""
    try:
        return turn_text(turn, plan.turns, 0, plan.roles)
    except FieldError:
        return None


def _image_paths(raw: Any, base_dir: str, ctx: ReadContext, plan: ChatPlan) -> tuple[str, ...] | None:
    """The resolved paths of a record's image list: known references from the load's cache, a new plain
    reference looked up once; anything else through `read_images` (``None`` if it found a problem)."""
    good = ctx.images.good[base_dir]
    try:
        paths = tuple(map(good.get, raw))
    except TypeError:  # an unhashable reference
        return None
    if all(paths):  # a path is a non-empty string: all() answers sooner than ``None not in``
        return paths
    start = paths.index(None)  # a record adds its newest frames at the end
    tail = [known_or_plain_path(reference, base_dir, ctx) for reference in raw[start:]]
    paths = paths[:start] + tuple(tail)
    if all(paths):
        return paths
    report = RecordProblems(Location("", None))
    paths = read_images(raw, plan.images, base_dir=base_dir, ctx=ctx, report=report)
    return None if report.problems else paths


def _texts(record: dict, plan: ChatPlan, prompt: str) -> tuple[str, str, str | None] | None:
    """``(episode id, instruction, system prompt)`` by the full reader's rules, or ``None``."""
    episode_id = record.get(plan.id)
    if type(episode_id) is not str or not episode_id:
        return None  # a generated, an integer or a bad id: the full reader
    instruction = record.get(plan.instruction)
    if instruction is None and plan.instruction not in record:
        instruction = instruction_from_prompt(prompt)
    elif type(instruction) is not str:
        return None
    if not instruction.strip():
        return None
    system = record.get(plan.system)
    if plan.system in record and type(system) is not str:
        return None
    return episode_id, instruction, system


def _user_then_assistant(user_role: Any, assistant_role: Any, plan: ChatPlan) -> bool:
    return (
        type(user_role) is str
        and user_role in plan.user
        and type(assistant_role) is str
        and assistant_role in plan.assistant
    )


def quick_chat_episode(record: Any, location: Location, ctx: ReadContext, plan: ChatPlan) -> Episode | None:
    """The Episode of a common ShareGPT or VLM-R1 record (see the module), or ``None``."""
    if type(record) is not dict:
        return None
    turns = record.get(plan.turns)
    if type(turns) is not list or len(turns) != 2:
        return None
    user, assistant = _role_and_text(turns[0], plan), _role_and_text(turns[1], plan)
    if user is None or assistant is None:
        return None
    (user_role, prompt), (assistant_role, response) = user, assistant
    raw_images = record.get(plan.images)
    if plan.vlm_r1:
        if type(user_role) is str and user_role in SYSTEM_ROLES:
            return None
        raw_images = [raw_images] if type(raw_images) is str else raw_images
    elif not _user_then_assistant(user_role, assistant_role, plan):
        return None
    if type(raw_images) is not list or not raw_images:
        return None
    if not plan.vlm_r1 and prompt.count(IMAGE_TAG) + response.count(IMAGE_TAG) != len(raw_images):
        return None
    images = _image_paths(raw_images, ctx.base_dir(location.path), ctx, plan)
    texts = _texts(record, plan, prompt)
    if images is None or texts is None:
        return None
    report = RecordProblems(location)
    values = read_privileged(record, images, ctx, report)
    if report.problems:
        return None
    not_extra = plan.not_extra
    extra = {key: value for key, value in record.items() if key not in not_extra}
    extra["pose_source"] = values.pop("pose_source")
    values["episode_id"], values["instruction"] = texts[0], texts[1]  # the full reader's order of fields
    values["images"] = images
    values["system_prompt"] = texts[2]
    values["prompt"] = prompt
    values["expert_response"] = response
    values["source"] = str(location)
    values["extra"] = extra
    return episode_of_fields(values)
