"""``VLMPolicy``: a Qwen2-VL ``*ForConditionalGeneration`` (optional LoRA) plus a scalar value head.

Skeleton: signatures are final; bodies are being filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class PromptInputs:
    """One decision's prompt, kept per sample (never flattened across samples)."""

    input_ids: torch.LongTensor  # [L]
    pixel_values: torch.Tensor  # [num_patches, patch_dim], this sample's images only
    image_grid_thw: torch.LongTensor  # [num_images, 3]


@dataclass
class Generation:
    """Output of ``VLMPolicy.generate``; all lists have one entry per observation.

    ``logprobs[i][t]`` is log p(response_ids[i][t]) under the distribution sampled from *at temperature 1*
    (``log_softmax(logits)``; with ``constrained_actions`` the grammar mask is applied first, so disallowed
    tokens have probability 0). ``evaluate(prompts, response_ids, temperature=1.0).logprobs`` scores the same
    distribution. ``values[i][t]`` is the value before response token t (``values[i][0]`` = last prompt token).
    """

    texts: list[str]
    prompts: list[PromptInputs]
    response_ids: list[torch.LongTensor]  # [T_i], includes <|im_end|> when generated
    logprobs: list[torch.Tensor]  # [T_i]
    values: list[torch.Tensor]  # [T_i]


@dataclass
class EvalOutput:
    """Output of ``VLMPolicy.evaluate``: right-padded [B, T] tensors; ``mask`` is 1 on real response tokens."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor


class VLMPolicy(torch.nn.Module):
    """Qwen2-VL policy with a fp32 linear value head on the last hidden state."""

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        *,
        use_lora: bool = True,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: Sequence[str] | str = ("q_proj", "k_proj", "v_proj", "o_proj"),
        freeze_vision: bool = True,
        torch_dtype=None,
        device=None,
        constrained_actions: bool = False,
        system_prompt: str | None = None,
        max_images: int = 16,
        max_pixels: int | None = None,
        seed: int | None = None,
    ) -> VLMPolicy:
        """Load a saved VLMPolicy dir (adapter/weights + value head + processor + policy_config.json) or start
        fresh from a plain HF checkpoint dir / hub name (random value head, new LoRA)."""
        raise NotImplementedError

    def build_messages(self, obs: Mapping) -> list[dict]:
        """Chat messages (system, user with the valid frames + instruction + action format) for one obs."""
        raise NotImplementedError

    def prepare(self, observations: Sequence[Mapping]) -> list[PromptInputs]:
        """Tokenize + preprocess each observation separately."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        observations: Sequence[Mapping],
        *,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
    ) -> Generation:
        """Batched generation (left padding, KV cache)."""
        raise NotImplementedError

    def evaluate(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.LongTensor],
        *,
        temperature: float = 1.0,
    ) -> EvalOutput:
        """Score responses with grad: logprobs, entropy, values, mask, all [B, T] right-padded."""
        raise NotImplementedError

    @torch.no_grad()
    def reference_logprobs(
        self, prompts: Sequence[PromptInputs], response_ids: Sequence[torch.LongTensor]
    ) -> torch.Tensor:
        """[B, T] log-probs under the reference model (LoRA adapter disabled; frozen copy for full FT)."""
        raise NotImplementedError

    def act(self, obs: Mapping, info: Mapping | None = None) -> str:
        """Greedy single action text."""
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        """Write adapter (or full weights) + value head (safetensors) + processor + policy_config.json."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters with requires_grad (LoRA / unfrozen weights and the value head)."""
        raise NotImplementedError

    def value_head_parameters(self) -> list[torch.nn.Parameter]:
        """The value head's parameters only."""
        raise NotImplementedError
