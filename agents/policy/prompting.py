"""Chat prompts for the VLM policy: env observation -> Qwen2-VL chat messages + the frames they reference."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vln_gym.actions import ACTION_PROMPT

DEFAULT_SYSTEM_PROMPT = (
    "You are a navigation agent in an indoor environment. Follow the instruction using the views you see."
)


def sample_history(count: int, max_images: int, recent: int) -> list[int]:
    """Indices (oldest first) of at most ``max_images`` of ``count`` frames: the last ``recent`` ones (the
    current view included) plus older ones evenly spaced from the first (VLN-R1's long-short memory)."""
    if count <= max_images:
        return list(range(count))
    recent = min(recent, max_images)
    older = max_images - recent
    start = count - recent
    spaced = [round(i * (start - 1) / max(older - 1, 1)) for i in range(older)] if older > 1 else [0][:older]
    return sorted(set(spaced)) + list(range(start, count))


def valid_frames(
    obs: Mapping, *, max_images: int, index: int = 0, recent_frames: int | None = None
) -> np.ndarray:
    """The observation's valid frames ``[n, H, W, 3]`` uint8 (oldest first, current view last).

    With ``recent_frames`` set, more than ``max_images`` valid frames are sampled down (`sample_history`).
    Raises ``ValueError`` naming observation ``index`` and the field when the observation is malformed,
    has no valid frame, or (without ``recent_frames``) has more than ``max_images`` valid frames.
    """
    for key in ("frames", "frame_mask", "instruction"):
        if key not in obs:
            raise ValueError(f"observation {index}: missing field {key!r} (have {sorted(obs)})")
    frames = np.asarray(obs["frames"])
    mask = np.asarray(obs["frame_mask"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"observation {index}: field 'frames' must be uint8 [history, H, W, 3], "
            f"got {frames.dtype} {list(frames.shape)}"
        )
    if mask.shape != frames.shape[:1]:
        raise ValueError(
            f"observation {index}: field 'frame_mask' has shape {list(mask.shape)}, "
            f"expected [{frames.shape[0]}] (one flag per frame slot)"
        )
    if not isinstance(obs["instruction"], str):
        raise ValueError(
            f"observation {index}: field 'instruction' must be a str, got {type(obs['instruction'])}"
        )
    selected = frames[mask.astype(bool)]
    if len(selected) == 0:
        raise ValueError(f"observation {index}: field 'frame_mask' marks no valid frame (nothing to look at)")
    if len(selected) > max_images and recent_frames is not None:
        return selected[sample_history(len(selected), max_images, recent_frames)]
    if len(selected) > max_images:
        raise ValueError(
            f"observation {index}: {len(selected)} valid frames exceed max_images={max_images} "
            "(lower the env's history_frames, raise max_images, or sample them: recent_frames)"
        )
    return selected


def build_messages(
    instruction: str, num_images: int, *, system_prompt: str | None = None, action_prompt: str = ACTION_PROMPT
) -> list[dict]:
    """Qwen2-VL chat messages: system prompt, then the instruction, the past views, the current view and the
    answer format. Exactly ``num_images`` image entries, in frame order (the processor gets the frames in the
    same order)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    content: list[dict] = [{"type": "text", "text": f"Instruction: {instruction}\n"}]
    if num_images > 1:
        content.append({"type": "text", "text": "Previous views, oldest first:"})
        content.extend({"type": "image"} for _ in range(num_images - 1))
        content.append({"type": "text", "text": "\n"})
    content.append({"type": "text", "text": "Current view:"})
    content.append({"type": "image"})
    content.append({"type": "text", "text": f"\n{action_prompt}"})
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ]
