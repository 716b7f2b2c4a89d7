"""``VLMPolicy``: a Qwen2-VL ``*ForConditionalGeneration`` (optional LoRA) plus a float32 value head.

What it gets right (the usual failure points of value-head wrappers around Qwen2-VL):

- 3-D mRoPE: position ids always come from the inner model's ``get_rope_index`` (transformers 5 keeps it on
  ``Qwen2VLModel``, reached through peft's ``get_base_model()``), and are passed explicitly.
- Pixel data stay per sample (``PromptInputs``) and are re-joined per minibatch in sample order, so any
  minibatch / gradient-accumulation split sees exactly the image features of its own samples.
- Sequence layout for scoring: prompts left-padded to a common length ``P``, responses right-padded after it,
  so the hidden state before response token ``t`` sits at column ``P - 1 + t`` for every sample.
- With ``constrained_actions`` the action-grammar mask is applied both when sampling and when scoring.
- The vision tower runs once per prompt: ``generate`` caches the image features on the returned prompts when
  the vision tower is frozen, and ``evaluate`` / ``reference_logprobs`` reuse them.
- A repeated prompt is processed once (`agents.policy.prompt_sharing`): ``generate`` runs the processor,
  vision tower and prompt forward once per distinct observation (a GRPO group's members start from one
  state) and expands the KV cache to every member; scoring runs a prompt object shared by several samples
  once and the responses attend to its cache. Same numbers as processing every copy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from agents.policy.constrained import TokenTrie, allowed_mask, apply_mask, build_action_trie, response_mask
from agents.policy.grammar import ActionGrammar
from agents.policy.prompt_sharing import distinct_observations, distinct_prompts, spread_cache
from agents.policy.prompting import build_messages, valid_frames
from agents.policy.value_head import ValueHead, hidden_size_of
from vln_gym.actions import ACTION_PROMPT

POLICY_CONFIG_FILE = "policy_config.json"
VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_FORMAT_VERSION = 1
# What `VLMPolicy.save_pretrained` writes and loading reads beside the weights; each entry lists the names
# one file may have (the first is what this version writes, the others older transformers' names).
PROCESSOR_FILES = (
    ("tokenizer.json",),
    ("tokenizer_config.json",),
    ("processor_config.json", "preprocessor_config.json"),
    ("chat_template.jinja", "chat_template.json"),
)


class PolicyFileError(ValueError):
    """A saved policy's file is missing, truncated or corrupt; the message names the file."""


def _read_json_file(path: Path) -> object:
    """The JSON in ``path``; `PolicyFileError` naming it when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PolicyFileError(f"{path}: corrupt or truncated (unreadable JSON: {error})") from None


def _first_present(path: Path, names: Sequence[str]) -> Path:
    """``path / name`` for the first of ``names`` that exists, else `PolicyFileError` naming the first."""
    for name in names:
        if (path / name).is_file():
            return path / name
    raise PolicyFileError(f"{path / names[0]}: missing")


def _weight_files(path: Path, use_lora: bool) -> list[Path]:
    """The weight files of a saved policy: the adapter, or the full model (one file or the shards its index
    lists) with its config.json, and the value head."""
    if use_lora:
        return [path / "adapter_config.json", path / "adapter_model.safetensors", path / VALUE_HEAD_FILE]
    weights = _first_present(path, ("model.safetensors", "model.safetensors.index.json"))
    files = [path / "config.json", weights, path / VALUE_HEAD_FILE]
    if weights.name.endswith(".index.json"):
        index = _read_json_file(weights)
        shards = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(shards, dict):
            raise PolicyFileError(f"{weights}: corrupt (no weight_map object)")
        files += [path / str(name) for name in sorted(set(shards.values()))]
    return files


def _check_whole(file: Path) -> None:
    """Refuse a missing file, JSON that does not parse, or a safetensors file whose header or length is off
    (reads the header only)."""
    if not file.is_file():
        raise PolicyFileError(f"{file}: missing")
    if file.suffix == ".json":
        _read_json_file(file)
    elif file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise PolicyFileError(f"{file}: corrupt or truncated ({error})") from None


def check_saved_policy(path: str | Path) -> PolicyConfig:
    """A saved policy directory's config, after checking that every file loading it reads is there and whole
    (policy_config.json, the weights, config.json, the value head, the tokenizer and processor files).
    Raises `PolicyFileError` naming the first missing, truncated or corrupt file; loads no weights."""
    path = Path(path)
    if not path.is_dir():
        raise PolicyFileError(f"{path}: missing")
    config = PolicyConfig.load(path / POLICY_CONFIG_FILE)
    files = _weight_files(path, config.use_lora) + [_first_present(path, names) for names in PROCESSOR_FILES]
    for file in files:
        _check_whole(file)
    return config


def _set_pixel_budget(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Override the processor's pixels per frame (Qwen-VL ``size`` = shortest/longest edge in pixels)."""
    size = dict(image_processor.size)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
        size["shortest_edge"] = min(int(size.get("shortest_edge", 0) or 0), int(max_pixels))
    if min_pixels is not None:
        if max_pixels is not None and min_pixels > max_pixels:
            raise ValueError(f"min_pixels ({min_pixels}) must be <= max_pixels ({max_pixels})")
        size["shortest_edge"] = int(min_pixels)
        size["longest_edge"] = max(int(size.get("longest_edge", min_pixels)), int(min_pixels))
    image_processor.size = size


SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # what VLMPolicy serves


def check_model_type(name_or_path: str | Path) -> None:
    """Refuse, in one line, a checkpoint of a model type the policy does not serve (before loading it)."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(str(name_or_path)).model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{name_or_path}: model_type {model_type!r} is not served; VLMPolicy serves "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)"
        )


def _encoder_output(embeds: torch.Tensor, deepstack: list[torch.Tensor] | None):
    """Cached image features in the form the model's forward takes as ``mm_encoder_outputs["image"]``."""
    if deepstack is None:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=(embeds,))
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    return BaseModelOutputWithDeepstackFeatures(
        pooler_output=(embeds,), deepstack_features=[(d,) for d in deepstack]
    )


@dataclass
class PromptInputs:
    """One decision's prompt, kept per sample (never flattened across samples). CPU tensors.

    ``image_embeds`` ([num_image_tokens, hidden], detached) is filled by ``VLMPolicy.generate`` when the
    vision tower is frozen, so later scoring skips the vision tower; leave it None otherwise. Qwen3-VL's
    tower also feeds features into early decoder layers: ``image_deepstack`` holds them, one
    ``[num_image_tokens, hidden]`` tensor per deepstack layer (None for the other families).
    """

    input_ids: torch.LongTensor  # [L]
    pixel_values: torch.Tensor  # [num_patches, patch_dim], this sample's images only
    image_grid_thw: torch.LongTensor  # [num_images, 3]
    image_embeds: torch.Tensor | None = None
    image_deepstack: list[torch.Tensor] | None = None


@dataclass
class Generation:
    """Output of ``VLMPolicy.generate``; one entry per observation; all tensors on the CPU.

    - ``response_ids[i]`` ([T_i]) are the generated tokens, ending with ``<|im_end|>`` (or ``<|endoftext|>``)
      when the model stopped before ``max_new_tokens``.
    - ``logprobs[i][t] = log softmax(mask(logits_t) / temperature)[response_ids[i][t]]``: the sampling
      distribution *before* top-p filtering (``mask`` = action grammar when ``constrained_actions``, identity
      otherwise; ``temperature`` = the one passed to ``generate``, so the default 1.0 gives the model's own
      distribution). ``evaluate(prompts, response_ids, temperature=<same>)`` scores exactly this distribution.
      The image / video placeholder tokens are always masked (a response holding one would corrupt the
      placeholder accounting of the next forward pass).
    - ``values[i][t]`` = value of the state before response token t (``values[i][0]``: last prompt token).
    - ``prompts[i]`` is observation i's prompt; equal observations (``generate(share_prompts=True)``) share
      one object, which ``evaluate`` / ``reference_logprobs`` then run once for all the responses to it.
    """

    texts: list[str]
    prompts: list[PromptInputs]
    response_ids: list[torch.LongTensor]
    logprobs: list[torch.Tensor]
    values: list[torch.Tensor]


@dataclass
class EvalOutput:
    """Output of ``VLMPolicy.evaluate``: right-padded ``[B, T]`` tensors on the policy's device.

    ``mask`` is 1 on real response tokens and 0 on padding; padded positions of the other fields are
    meaningless (finite) numbers.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor


@dataclass
class PolicyOutput:
    """Output of ``VLMPolicy.forward``: ``logits [B, L, V]``, ``values [B, L]`` and the model inputs."""

    logits: torch.Tensor
    values: torch.Tensor
    model_inputs: dict


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a ``VLMPolicy``; saved as ``policy_config.json``."""

    base_model: str
    use_lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    freeze_vision: bool = True
    constrained_actions: bool = False
    system_prompt: str | None = None
    max_images: int = 16
    max_pixels: int | None = None
    min_pixels: int | None = None
    action_grammar: dict | None = None  # ActionGrammar fields (None: one bare word per answer)
    recent_frames: int | None = None  # > max_images frames: keep this many recent + evenly spaced older
    format_version: int = POLICY_FORMAT_VERSION

    @classmethod
    def load(cls, path: Path) -> PolicyConfig:
        """Read ``policy_config.json``; `PolicyFileError` naming ``path`` when it is unreadable or invalid."""
        data = _read_json_file(path)
        if not isinstance(data, dict):
            raise PolicyFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyFileError(f"{path}: unknown field(s) {unknown}")
        if data.get("format_version") != POLICY_FORMAT_VERSION:
            raise PolicyFileError(
                f"{path}: format_version {data.get('format_version')!r}, expected {POLICY_FORMAT_VERSION}"
            )
        if "base_model" not in data:
            raise PolicyFileError(f"{path}: base_model: missing")
        return cls(**data)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The ``*ForConditionalGeneration`` under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _inner_model(base: torch.nn.Module) -> torch.nn.Module:
    """The inner ``Qwen2VLModel`` (holds ``visual``, ``language_model`` and ``get_rope_index``)."""
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "get_rope_index") or not hasattr(inner, "visual"):
        raise TypeError(
            f"{type(base).__name__}: expected a Qwen2-VL-style model whose .model has get_rope_index, visual"
        )
    return inner


def _lora_target(target_modules: Sequence[str] | str, freeze_vision: bool) -> list[str] | str:
    """peft ``target_modules``; with ``freeze_vision`` a name list becomes a regex skipping ``visual``."""
    if isinstance(target_modules, str):
        return target_modules
    names = list(target_modules)
    if not freeze_vision:
        return names
    alternatives = "|".join(sorted(names))
    return rf"^(?!.*\bvisual\b).*\.(?:{alternatives})$"


class VLMPolicy(torch.nn.Module):
    """Qwen2-VL policy with a float32 linear value head on the last hidden state.

    Build with ``VLMPolicy.from_pretrained``. ``model`` is the (possibly peft-wrapped) HF model,
    ``processor`` the HF processor, ``value_head`` a ``ValueHead``. With full fine-tuning a frozen copy of the
    starting model is kept as the reference (``reference_logprobs``); with LoRA the reference is the same
    model with the adapter disabled.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        value_head: ValueHead,
        config: PolicyConfig,
        *,
        reference_model: torch.nn.Module | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.processor = processor
        self.value_head = value_head
        self.config = config
        self.reference_model = reference_model
        if reference_model is not None:
            reference_model.requires_grad_(False).eval()
        tokenizer = processor.tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)
        end_tokens = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.end_token_ids = [t for t in end_tokens if isinstance(t, int) and t >= 0]
        self.eos_token_id = self.end_token_ids[0]
        model_config = _base_model(model).config
        text_config = getattr(model_config, "text_config", model_config)
        self.image_token_id = int(model_config.image_token_id)
        self.video_token_id = int(model_config.video_token_id)
        self.vocab_size = int(text_config.vocab_size)
        self.context_length = int(text_config.max_position_embeddings)
        self.placeholder_ids = [self.image_token_id, self.video_token_id]  # never generated
        self.grammar = ActionGrammar.coerce(config.action_grammar)
        self.trie: TokenTrie | None = build_action_trie(
            tokenizer, self.eos_token_id, list(self.grammar.answers)
        )
        # The prompt says what the decoder admits: the grammar's answers when constrained, else everything
        # the env's parser reads (amounts, sequences).
        self.action_prompt = self.grammar.prompt() if config.constrained_actions else ACTION_PROMPT
        self._seed = seed
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ construction / persistence

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
        constrained_actions: bool | None = None,
        system_prompt: str | None = None,
        max_images: int = 16,
        max_pixels: int | None = None,
        seed: int | None = None,
        min_pixels: int | None = None,
        action_grammar: ActionGrammar | dict | None = None,
        recent_frames: int | None = None,
    ) -> VLMPolicy:
        """Load a saved VLMPolicy directory or start fresh from a HF checkpoint directory / hub name.

        A directory with ``policy_config.json`` is a saved policy: its saved settings are used (the keyword
        settings above are ignored except ``torch_dtype``, ``device``, ``seed`` and a non-None
        ``constrained_actions``), the adapter (or full weights) and value head are restored, and the base
        model named in the config must still be loadable. ``constrained_actions=None`` means False when
        starting fresh and the saved value when reloading. Its files are checked first (`check_saved_policy`):
        a missing, truncated or corrupt one raises `PolicyFileError` (a ValueError) naming it.
        Anything else starts fresh: random value head (seeded by ``seed`` when given), new LoRA adapter.
        ``max_pixels`` / ``min_pixels`` override the image processor's pixel budget per frame. ``seed`` also
        seeds sampling.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(model_name_or_path)
        saved = (path / POLICY_CONFIG_FILE).is_file()
        if saved:
            config = check_saved_policy(path)
            if constrained_actions is not None:
                config.constrained_actions = constrained_actions
        else:
            config = PolicyConfig(
                base_model=str(model_name_or_path),
                use_lora=use_lora,
                lora_r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                lora_target_modules=(
                    lora_target_modules if isinstance(lora_target_modules, str) else list(lora_target_modules)
                ),
                freeze_vision=freeze_vision,
                constrained_actions=bool(constrained_actions),
                system_prompt=system_prompt,
                max_images=max_images,
                max_pixels=max_pixels,
                min_pixels=min_pixels,
                action_grammar=None
                if action_grammar is None
                else ActionGrammar.coerce(action_grammar).as_dict(),
                recent_frames=recent_frames,
            )
        if seed is not None:
            torch.manual_seed(seed)
        load_kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
        weights_from = path if saved and not config.use_lora else config.base_model
        check_model_type(weights_from)
        model = AutoModelForImageTextToText.from_pretrained(weights_from, **load_kwargs)
        processor = AutoProcessor.from_pretrained(path if saved else config.base_model)
        _set_pixel_budget(processor.image_processor, config.min_pixels, config.max_pixels)
        reference = None
        if config.use_lora:
            from peft import LoraConfig, PeftModel, get_peft_model

            if saved:
                model = PeftModel.from_pretrained(model, path, is_trainable=True)
            else:
                lora = LoraConfig(
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=_lora_target(config.lora_target_modules, config.freeze_vision),
                    bias="none",
                )
                model = get_peft_model(model, lora)
        else:
            if config.freeze_vision:
                _inner_model(model).visual.requires_grad_(False)
            reference = (
                AutoModelForImageTextToText.from_pretrained(config.base_model, **load_kwargs)
                if saved
                else copy.deepcopy(model)
            )
        value_head = ValueHead(hidden_size_of(_base_model(model).config))
        if saved:
            _load_value_head(value_head, path / VALUE_HEAD_FILE)
        policy = cls(model, processor, value_head, config, reference_model=reference, seed=seed)
        if device is not None:
            policy.to(device)
        return policy

    def save_pretrained(self, path: str | Path, state_dict: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write the LoRA adapter (or full model) + value head (safetensors) + processor + policy_config.json.

        A full fine-tuning save is also a plain HF checkpoint (``AutoModelForImageTextToText`` loads it).
        ``state_dict`` (keys of ``self.state_dict()``): the weights to write instead of the modules' own (FSDP
        gathers them from the shards).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model_state = None if state_dict is None else _sub_state(state_dict, "model.")
        self.model.save_pretrained(path, safe_serialization=True, state_dict=model_state)
        self.processor.save_pretrained(path)
        head = self.value_head.state_dict() if state_dict is None else _sub_state(state_dict, "value_head.")
        state = {k: v.detach().cpu().contiguous() for k, v in head.items()}
        save_file(state, path / VALUE_HEAD_FILE)
        (path / POLICY_CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @property
    def device(self) -> torch.device:
        return self.value_head.summary.weight.device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters with ``requires_grad`` (LoRA or unfrozen model weights, and the value head)."""
        return [p for p in self.parameters() if p.requires_grad]

    def value_head_parameters(self) -> list[torch.nn.Parameter]:
        """The value head's parameters only."""
        return list(self.value_head.parameters())

    # ------------------------------------------------------------------ prompts

    def build_messages(self, obs: Mapping) -> list[dict]:
        """Chat messages for one observation: system prompt, instruction, valid frames, action format."""
        return self._frames_and_messages(obs, 0)[1]

    def _frames_and_messages(self, obs: Mapping, index: int) -> tuple[np.ndarray, list[dict]]:
        """The frames the prompt shows (`valid_frames`; errors name observation ``index``), its messages."""
        frames = valid_frames(
            obs, max_images=self.config.max_images, index=index, recent_frames=self.config.recent_frames
        )
        messages = build_messages(
            obs["instruction"],
            len(frames),
            system_prompt=self.config.system_prompt,
            action_prompt=self.action_prompt,
        )
        return frames, messages

    def prepare(
        self, observations: Sequence[Mapping], *, names: Sequence[int] | None = None
    ) -> list[PromptInputs]:
        """Tokenize + preprocess each observation; one ``PromptInputs`` per observation (CPU tensors).

        Raises ``ValueError`` for an observation without valid frames, with more than ``max_images`` frames,
        or whose prompt is longer than the model's context length; ``names[i]`` is the number the error gives
        observation ``i`` (default: ``i``).
        """
        if len(observations) == 0:
            raise ValueError("prepare: no observations")
        names = list(range(len(observations))) if names is None else [int(n) for n in names]
        texts, images, counts = [], [], []
        for index, obs in enumerate(observations):
            frames, messages = self._frames_and_messages(obs, names[index])
            texts.append(
                self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
            images.extend(frames)
            counts.append(len(frames))
        batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        patches = batch["image_grid_thw"].prod(-1)
        prompts, image_start, patch_start = [], 0, 0
        for index, count in enumerate(counts):
            grid = batch["image_grid_thw"][image_start : image_start + count]
            num_patches = int(patches[image_start : image_start + count].sum())
            input_ids = batch["input_ids"][index][batch["attention_mask"][index].bool()]
            if len(input_ids) > self.context_length:
                raise ValueError(
                    f"observation {names[index]}: prompt has {len(input_ids)} tokens, over the model's "
                    f"context length {self.context_length} (use fewer frames or a smaller max_pixels)"
                )
            pixels = batch["pixel_values"][patch_start : patch_start + num_patches]
            prompts.append(PromptInputs(input_ids.clone(), pixels.clone(), grid.clone()))
            image_start += count
            patch_start += num_patches
        return prompts

    # ------------------------------------------------------------------ model inputs

    def _check_prompt(self, index: int, prompt: PromptInputs, merge: int) -> None:
        patches = prompt.image_grid_thw.prod(-1)
        if prompt.pixel_values.shape[0] != int(patches.sum()):
            raise ValueError(
                f"prompt {index}: pixel_values has {prompt.pixel_values.shape[0]} patches but image_grid_thw "
                f"says {int(patches.sum())}"
            )
        tokens = int((prompt.input_ids == self.image_token_id).sum())
        if tokens != int(patches.sum()) // merge**2:
            raise ValueError(
                f"prompt {index}: {tokens} image tokens in input_ids but image_grid_thw needs "
                f"{int(patches.sum()) // merge**2}"
            )

    def _check_responses(self, response_ids: Sequence[torch.Tensor]) -> None:
        for index, response in enumerate(response_ids):
            if bool(torch.isin(response.cpu(), torch.tensor(self.placeholder_ids)).any()):
                raise ValueError(f"response {index}: contains an image/video placeholder token")
            if response.ndim != 1 or len(response) == 0:
                raise ValueError(
                    f"response {index}: expected a non-empty 1-D token tensor, got {list(response.shape)}"
                )

    def model_inputs(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.Tensor] | None = None,
        *,
        model: torch.nn.Module | None = None,
    ) -> dict:
        """The keyword arguments given to the model for ``prompts`` (+ ``response_ids``), on the device.

        Layout: prompts left-padded to the longest prompt ``P``, responses right-padded after column ``P``.
        ``pixel_values`` / ``image_grid_thw`` are the per-sample tensors concatenated in sample order;
        ``position_ids`` ([3, B, L]) come from the inner model's ``get_rope_index``.
        """
        if len(prompts) == 0:
            raise ValueError("no prompts")
        if response_ids is not None and len(response_ids) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(response_ids)} responses")
        inner = _inner_model(_base_model(self.model if model is None else model))
        merge = int(inner.config.vision_config.spatial_merge_size)
        for index, prompt in enumerate(prompts):
            self._check_prompt(index, prompt, merge)
        prompt_len = max(len(p.input_ids) for p in prompts)
        response_len = 0
        if response_ids is not None:
            self._check_responses(response_ids)
            response_len = max(len(r) for r in response_ids)
        batch_size = len(prompts)
        input_ids = torch.full((batch_size, prompt_len + response_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            input_ids[row, prompt_len - len(prompt.input_ids) : prompt_len] = prompt.input_ids
            attention_mask[row, prompt_len - len(prompt.input_ids) : prompt_len] = 1
            if response_ids is not None:
                response = response_ids[row]
                input_ids[row, prompt_len : prompt_len + len(response)] = response.cpu()
                attention_mask[row, prompt_len : prompt_len + len(response)] = 1
        device = self.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        mm_token_type_ids = torch.zeros_like(input_ids)
        mm_token_type_ids[input_ids == self.image_token_id] = 1
        mm_token_type_ids[input_ids == self.video_token_id] = 2
        image_grid_thw = torch.cat([p.image_grid_thw for p in prompts]).to(device)
        position_ids, _ = inner.get_rope_index(
            input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw, attention_mask=attention_mask
        )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "mm_token_type_ids": mm_token_type_ids,
            "image_grid_thw": image_grid_thw,
        }
        if all(p.image_embeds is not None for p in prompts):
            embeds = torch.cat([p.image_embeds for p in prompts]).to(device)
            deepstack = None
            if prompts[0].image_deepstack is not None:
                layers = zip(*(p.image_deepstack for p in prompts), strict=True)
                deepstack = [torch.cat(layer).to(device) for layer in layers]
            inputs["mm_encoder_outputs"] = {"image": _encoder_output(embeds, deepstack)}
        else:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in prompts]).to(device)
        return inputs

    def _hidden(self, inputs: dict, model: torch.nn.Module | None = None, **kwargs):
        """Run the inner model; returns its output (``last_hidden_state`` is post-norm)."""
        base = _base_model(self.model if model is None else model)
        inputs = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}  # positions are given
        if "mm_encoder_outputs" in inputs:  # the model mutates this dict: give it a fresh one
            inputs["mm_encoder_outputs"] = dict(inputs["mm_encoder_outputs"])
        return _inner_model(base)(**inputs, **kwargs)

    def _vision_frozen(self) -> bool:
        visual = _inner_model(_base_model(self.model)).visual
        return not any(p.requires_grad for p in visual.parameters())

    def forward(
        self, prompts: Sequence[PromptInputs], response_ids: Sequence[torch.Tensor] | None = None
    ) -> PolicyOutput:
        """Full-sequence logits ``[B, L, V]`` and values ``[B, L]`` (layout of ``model_inputs``)."""
        inputs = self.model_inputs(prompts, response_ids)
        hidden = self._hidden(inputs).last_hidden_state
        logits = _base_model(self.model).lm_head(hidden)
        return PolicyOutput(logits=logits, values=self.value_head(hidden), model_inputs=inputs)

    @torch.no_grad()
    def prompt_values(self, prompts: Sequence[PromptInputs]) -> torch.Tensor:
        """``[B]`` value of each prompt's state (at its last token; equals ``evaluate(...).values[:, 0]``)."""
        hidden = self._hidden(self.model_inputs(prompts)).last_hidden_state[:, -1]
        return self.value_head(hidden)

    # ------------------------------------------------------------------ generation

    def _sampling_generator(self) -> torch.Generator | None:
        if self._seed is None:
            return None
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device).manual_seed(self._seed)
        return self._generator

    def _cache_image_features(self, prompts: list[PromptInputs], inputs: dict) -> None:
        """Run the frozen vision tower once; store per-sample features on the prompts and in ``inputs``."""
        inner = _inner_model(_base_model(self.model))
        pixel_values = inputs.pop("pixel_values")
        output = inner.get_image_features(pixel_values, inputs["image_grid_thw"], return_dict=True)
        features = output.pooler_output  # one tensor per image
        deepstack = getattr(output, "deepstack_features", None)  # Qwen3-VL: per layer, one tensor per image
        index = 0
        for prompt in prompts:
            count = len(prompt.image_grid_thw)
            prompt.image_embeds = torch.cat(features[index : index + count]).detach().cpu()
            if deepstack is not None:
                prompt.image_deepstack = [
                    torch.cat(layer[index : index + count]).detach().cpu() for layer in deepstack
                ]
            index += count
        merged = None if deepstack is None else [torch.cat(layer) for layer in deepstack]
        inputs["mm_encoder_outputs"] = {"image": _encoder_output(torch.cat(features), merged)}

    @torch.no_grad()
    def generate(
        self,
        observations: Sequence[Mapping],
        *,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int | None = None,
        share_prompts: bool = True,
    ) -> Generation:
        """Batched generation with left padding and the KV cache; see ``Generation`` for what is returned.

        Sampling draws from ``softmax(mask(logits) / temperature)`` restricted to the top-p nucleus; greedy
        (``do_sample=False``) takes the argmax of the masked logits. Finished rows are padded, not re-run.
        ``max_new_tokens=None``: the action grammar's longest answer when constrained, else 16.
        ``share_prompts``: equal observations (a GRPO group's start) get one prompt, processed once, whose KV
        cache every copy decodes from, and one shared ``PromptInputs`` object in ``Generation.prompts``;
        ``False`` processes every observation on its own (same tokens and numbers, more work).
        """
        if max_new_tokens is None:
            max_new_tokens = self.trie.max_length if self.config.constrained_actions else 16
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if self.config.constrained_actions and max_new_tokens < self.trie.max_length:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} cannot hold the action grammar's longest answer "
                f"({self.trie.max_length} tokens with the end token); raise max_new_tokens"
            )
        count = len(observations)
        first, rows = (
            distinct_observations(observations) if share_prompts else (list(range(count)), list(range(count)))
        )
        prompts = self.prepare([observations[i] for i in first], names=first)
        longest = max(len(p.input_ids) for p in prompts)
        if longest + max_new_tokens > self.context_length:
            raise ValueError(
                f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's context "
                f"length {self.context_length}"
            )
        was_training = self.training
        self.eval()
        try:
            return self._generate(prompts, rows, do_sample, temperature, top_p, max_new_tokens)
        finally:
            self.train(was_training)

    def _generate(
        self,
        prompts: list[PromptInputs],
        rows: list[int],
        do_sample: bool,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> Generation:
        base = _base_model(self.model)
        inputs = self.model_inputs(prompts)
        if self._vision_frozen():
            self._cache_image_features(prompts, inputs)
        batch_size = len(rows)  # one row per observation; prompts[rows[i]] is observation i's
        device = self.device
        end_ids = torch.tensor(self.end_token_ids, device=device)
        next_position = inputs["position_ids"].amax(dim=(0, 2)) + 1  # [B]
        attention_mask = inputs["attention_mask"]
        output = self._hidden(inputs, use_cache=True)
        hidden, cache = output.last_hidden_state[:, -1], output.cache
        if len(prompts) < batch_size:  # shared prompts: every copy decodes from its prompt's cache row
            index = torch.tensor(rows, device=device)
            spread_cache(cache, index)
            hidden, attention_mask, next_position = hidden[index], attention_mask[index], next_position[index]
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        tokens, logprobs, values = [], [], []
        generated: list[list[int]] = [[] for _ in range(batch_size)]
        for step in range(max_new_tokens):
            logits = base.lm_head(hidden).float()
            logits[:, self.placeholder_ids] = torch.finfo(logits.dtype).min
            values.append(self.value_head(hidden))
            if self.config.constrained_actions:
                prefixes = [g if not f else [] for g, f in zip(generated, finished.tolist(), strict=True)]
                logits = apply_mask(logits, allowed_mask(self.trie, prefixes, logits.shape[-1], device))
            scaled = torch.log_softmax(logits / temperature, dim=-1)
            if do_sample:
                token = torch.multinomial(
                    _top_p_probs(scaled, top_p), 1, generator=self._sampling_generator()
                )
                token = token.squeeze(-1)
            else:
                token = scaled.argmax(-1)
            token = torch.where(finished, torch.full_like(token, self.pad_token_id), token)
            tokens.append(token)
            logprobs.append(scaled.gather(-1, token[:, None]).squeeze(-1))
            for row, value in enumerate(token.tolist()):
                generated[row].append(value)
            finished = finished | torch.isin(token, end_ids)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            position = (next_position + step).view(1, batch_size, 1).expand(3, batch_size, 1)
            output = self._hidden(
                {"input_ids": token[:, None], "attention_mask": attention_mask, "position_ids": position},
                cache=cache,
                use_cache=True,
            )
            hidden, cache = output.last_hidden_state[:, -1], output.cache
        all_tokens = torch.stack(tokens, dim=1).cpu()
        all_logprobs = torch.stack(logprobs, dim=1).cpu()
        all_values = torch.stack(values, dim=1).cpu()
        is_end = torch.isin(all_tokens, end_ids.cpu())
        response_ids, response_logprobs, response_values = [], [], []
        for row in range(batch_size):
            ends = is_end[row].nonzero()
            length = int(ends[0]) + 1 if len(ends) else all_tokens.shape[1]
            response_ids.append(all_tokens[row, :length].clone())
            response_logprobs.append(all_logprobs[row, :length].clone())
            response_values.append(all_values[row, :length].clone())
        texts = self.processor.tokenizer.batch_decode(response_ids, skip_special_tokens=True)
        shared = [prompts[row] for row in rows]
        return Generation(texts, shared, response_ids, response_logprobs, response_values)

    def act(self, obs: Mapping, info: Mapping | None = None) -> str:
        """Greedy single action text (the evaluation interface shared with the scripted agents)."""
        return self.generate([obs], do_sample=False).texts[0]

    # ------------------------------------------------------------------ scoring

    def _score(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.Tensor],
        temperature: float,
        model: torch.nn.Module | None = None,
        with_values: bool = True,
    ) -> EvalOutput:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        unique, rows = distinct_prompts(prompts)
        if len(unique) < len(prompts):
            hidden, targets, token_mask = self._shared_prompt_hidden(unique, rows, response_ids, model)
        else:
            hidden, targets, token_mask = self._response_hidden(prompts, response_ids, model)
        response_len = targets.shape[1]
        logits = _base_model(self.model if model is None else model).lm_head(hidden).float()
        logits[..., self.placeholder_ids] = torch.finfo(logits.dtype).min
        if self.config.constrained_actions:
            mask = response_mask(self.trie, response_ids, response_len, logits.shape[-1], logits.device)
            logits = apply_mask(logits, mask)
        log_probs = torch.log_softmax(logits / temperature, dim=-1)
        token_logprobs = log_probs.gather(-1, targets[..., None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        values = self.value_head(hidden) if with_values else torch.zeros_like(token_logprobs)
        return EvalOutput(token_logprobs, entropy, values, token_mask)

    def _response_hidden(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.Tensor],
        model: torch.nn.Module | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden state before each response token ``[B, T, H]``, the right-padded response tokens ``[B, T]``
        and their mask, from one forward pass over prompt + response per sample."""
        inputs = self.model_inputs(prompts, response_ids, model=model)
        prompt_len = max(len(p.input_ids) for p in prompts)
        response_len = inputs["input_ids"].shape[1] - prompt_len
        hidden = self._hidden(inputs, model=model).last_hidden_state[
            :, prompt_len - 1 : prompt_len - 1 + response_len
        ]
        return hidden, inputs["input_ids"][:, prompt_len:], inputs["attention_mask"][:, prompt_len:]

    def _shared_prompt_hidden(
        self,
        unique: Sequence[PromptInputs],
        rows: Sequence[int],
        response_ids: Sequence[torch.Tensor],
        model: torch.nn.Module | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `_response_hidden`, with each distinct prompt (``unique[rows[i]]`` is sample i's) run once: its
        KV cache is spread to the samples sharing it and their responses run on it (same layout and numbers:
        prompts left-padded to the longest, responses at positions after their own prompt's)."""
        if len(response_ids) != len(rows):
            raise ValueError(f"{len(rows)} prompts but {len(response_ids)} responses")
        self._check_responses(response_ids)
        inputs = self.model_inputs(unique, model=model)
        output = self._hidden(inputs, model=model, use_cache=True)
        device = inputs["input_ids"].device
        index = torch.tensor(list(rows), device=device)
        spread_cache(output.cache, index)
        batch, response_len = len(rows), max(len(r) for r in response_ids)
        targets = torch.full((batch, response_len), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(targets)
        for row, response in enumerate(response_ids):
            targets[row, : len(response)] = response.cpu()
            mask[row, : len(response)] = 1
        targets, mask = targets.to(device), mask.to(device)
        start = inputs["position_ids"].amax(dim=(0, 2))[index] + 1  # [B] first response position
        positions = start[:, None] + torch.arange(response_len, device=device)
        positions = positions.expand(3, batch, response_len)
        after = self._hidden(
            {
                "input_ids": targets,
                "attention_mask": torch.cat([inputs["attention_mask"][index], mask], dim=1),
                "position_ids": positions,
            },
            model=model,
            cache=output.cache,
            use_cache=True,
        ).last_hidden_state
        hidden = torch.cat([output.last_hidden_state[index, -1:], after[:, :-1]], dim=1)
        return hidden, targets, mask

    def evaluate(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.LongTensor],
        *,
        temperature: float = 1.0,
    ) -> EvalOutput:
        """Score responses with grad: ``logprobs``, ``entropy``, ``values``, ``mask`` ([B, T], right-padded).

        ``logprobs[i, t] = log softmax(mask(logits) / temperature)[response_ids[i][t]]`` (the distribution of
        ``Generation.logprobs``); ``values[i, t]`` = value before token t. Raises ``ValueError`` when
        ``constrained_actions`` is on and a response leaves the action grammar. Runs in the module's current
        train/eval mode (``generate`` always decodes in eval mode; with ``lora_dropout > 0`` call ``eval()``
        before computing ratios that must match ``Generation.logprobs`` exactly).
        """
        return self._score(prompts, response_ids, temperature)

    @torch.no_grad()
    def reference_logprobs(
        self,
        prompts: Sequence[PromptInputs],
        response_ids: Sequence[torch.LongTensor],
        *,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """``[B, T]`` log-probs under the reference model: the LoRA adapter disabled (peft
        ``disable_adapter``), or the frozen starting copy kept for full fine-tuning. Same mask and layout as
        ``evaluate``."""
        if self.config.use_lora:
            with self.model.disable_adapter():
                return self._score(prompts, response_ids, temperature, with_values=False).logprobs
        return self._score(
            prompts, response_ids, temperature, model=self.reference_model, with_values=False
        ).logprobs


def _load_value_head(value_head: ValueHead, file: Path) -> None:
    """Load the saved value head; `PolicyFileError` naming ``file`` when its tensors do not fit."""
    from safetensors.torch import load_file

    try:
        value_head.load_state_dict(load_file(file))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PolicyFileError(f"{file}: does not fit this model ({first})") from None


def _sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _top_p_probs(log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Probabilities restricted to the smallest set of tokens whose mass reaches ``top_p`` (renormalised)."""
    probs = log_probs.exp()
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)
