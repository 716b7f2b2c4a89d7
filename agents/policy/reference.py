"""The KL reference of a policy. With LoRA it is the base model with the adapter disabled (nothing to
keep); with full fine-tuning it is a frozen copy (``policy.reference_model``) that these functions set."""

from __future__ import annotations


def refresh_reference(policy) -> None:
    """Make a full-fine-tuning policy's frozen reference (KL anchor) equal to its current weights, so RL after
    the warm start is regularised towards the warm-started policy, not the random initial one. With LoRA
    the reference is the adapter-disabled base model and nothing changes."""
    reference = getattr(policy, "reference_model", None)
    if reference is not None:
        reference.load_state_dict(policy.model.state_dict())


def load_reference(policy, path) -> None:
    """Load a full-fine-tuning policy's frozen reference from the HF checkpoint at ``path`` (a saved full
    policy or a base model directory); no-op with LoRA."""
    reference = getattr(policy, "reference_model", None)
    if reference is None:
        return
    from transformers import AutoModelForImageTextToText

    reference.load_state_dict(AutoModelForImageTextToText.from_pretrained(str(path)).state_dict())
