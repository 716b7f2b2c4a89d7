"""A tiny random Qwen2-VL built entirely offline, loadable through the same Auto classes as a real checkpoint.

``build_tiny_qwen2_vl(path)`` trains a byte-level BPE tokenizer on a generated navigation corpus (with the
Qwen special tokens and the real Qwen2-VL chat template), configures the standard Qwen2-VL image/video
processors with a small ``max_pixels``, and saves a randomly initialised ``Qwen2VLForConditionalGeneration``
whose config token ids match the tokenizer. ``AutoProcessor.from_pretrained(path)`` and
``AutoModelForImageTextToText.from_pretrained(path)`` then load it exactly as they load
``Qwen/Qwen2-VL-2B-Instruct``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

BUILD_VERSION = 1
MARKER_FILE = "vln_gym_tiny.json"

# The Qwen2-VL special tokens, in the order (and so the relative ids) of the real tokenizer.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template of Qwen/Qwen2-VL-2B-Instruct (an image renders as vision_start, image_pad, vision_end).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Sizes: a 224x224 frame is resized to 112x112 -> 8x8 patches of 14 px -> 16 merged image tokens.
TINY_MAX_PIXELS = 112 * 112
TINY_MIN_PIXELS = 56 * 56
TINY_BPE_VOCAB = 1024
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
TINY_VISION = {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2}


def default_tiny_path(family: str = "qwen2_vl") -> Path:
    """``$VLN_GYM_CACHE/tiny-qwen2-vl`` (``tiny-qwen2_5_vl``, ``tiny-qwen3_vl`` for the other families;
    default cache root ``~/.cache/vln-gym``)."""
    root = Path(os.environ.get("VLN_GYM_CACHE", Path.home() / ".cache" / "vln-gym"))
    return root / ("tiny-qwen2-vl" if family == "qwen2_vl" else f"tiny-{family}")


def ensure_tiny_model(path: str | Path | None = None, seed: int = 0, family: str = "qwen2_vl") -> Path:
    """Build the tiny ``family`` model at ``path`` (default ``default_tiny_path(family)``) unless a complete
    build exists."""
    return build_tiny_model(default_tiny_path(family) if path is None else path, family, seed=seed)


def tiny_family(name: str) -> str | None:
    """The family a model name asks for: ``tiny`` (Qwen2-VL), ``tiny-qwen2_5_vl``, ``tiny-qwen3_vl``."""
    if name == "tiny":
        return "qwen2_vl"
    family = name.removeprefix("tiny-")
    return family if name.startswith("tiny-") and family in FAMILIES else None


def _words(text: str) -> list[str]:
    return text.split("|")


def navigation_corpus(seed: int = 0, n_instructions: int = 3000) -> list[str]:
    """Generated training text for the tokenizer: instructions, action phrases, numbers, prompt words."""
    rng = random.Random(seed)
    verbs = _words("walk|go|head|move|continue|proceed|turn|exit|enter|pass|stop|wait")
    dirs = _words("left|right|forward|straight|ahead|back|around|up|down|past|through")
    places = _words(
        "kitchen|bedroom|bathroom|hallway|corridor|living room|dining table|door|stairs|couch|sofa|window|"
        "table|chair|bed|plant|painting|fridge|sink|rug|lamp|red door|blue room|green box|yellow wall|"
        "landmark|room|doorway|counter|shelf"
    )
    joins = _words("and|then|until you reach|towards|into|next to|in front of|near the|after")
    corpus = []
    for _ in range(n_instructions):
        parts = []
        for _ in range(rng.randint(1, 4)):
            parts.append(
                f"{rng.choice(verbs)} {rng.choice(dirs)} {rng.choice(joins)} the {rng.choice(places)}"
            )
        sentence = ", ".join(parts) + rng.choice([".", "!", ". Stop there.", " and wait."])
        corpus.append(sentence[0].upper() + sentence[1:])
    for words, amount, unit in itertools.product(
        [
            "move forward",
            "turn left",
            "turn right",
            "stop",
            "MOVE_FORWARD",
            "TURN_LEFT",
            "TURN_RIGHT",
            "STOP",
        ],
        ["15", "25", "30", "45", "50", "75", "90", "0.25", "0.5", "1"],
        ["cm", "m", "meters", "degrees", "degree"],
    ):
        corpus.append(f"<think>I should {words.lower()}.</think><answer>{words} {amount} {unit}</answer>")
        corpus.append(f"The next action is {words} {amount} {unit}. Options: A. B. C. D. {words}, {words}")
    corpus += [str(n) for n in range(1000)]
    corpus += [
        "You are a navigation agent. Follow the instruction using the current and past observations.",
        "Instruction: Observation history: current view: Answer with one of the actions: ←↑→ ← ↑ →",
    ]
    return corpus


def _train_tokenizer(seed: int):
    """Byte-level BPE in the Qwen2 layout (same pre-tokenizer regex, NFC, byte-level decoder)."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    base = Qwen2Tokenizer()  # empty vocab, but the Qwen normalizer / pre-tokenizer / decoder
    tok: Tokenizer = base.backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BPE_VOCAB,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(navigation_corpus(seed), trainer=trainer)
    model_state = json.loads(tok.to_str())["model"]
    vocab = {t: i for t, i in model_state["vocab"].items() if not t.startswith("<|")}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=TINY_TEXT["max_position_embeddings"],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.eos_token = "<|im_end|>"  # as in Qwen2-VL-*-Instruct: generation ends at <|im_end|>
    expected = list(range(len(vocab), len(vocab) + len(QWEN_SPECIAL_TOKENS)))
    if tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) != expected:
        raise RuntimeError(
            "tiny tokenizer: Qwen special tokens did not get consecutive ids after the BPE vocab"
        )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def _is_complete(path: Path, seed: int) -> bool:
    marker = path / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return info.get("seed") == seed and info.get("version") == BUILD_VERSION


FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # model_type of each tiny family


def build_tiny_qwen2_vl(path: str | Path, seed: int = 0) -> Path:
    """Build (or reuse) the tiny Qwen2-VL at ``path``; see `build_tiny_model`."""
    return build_tiny_model(path, "qwen2_vl", seed)


def _vision_config(family: str, hidden: int) -> dict:
    """The tiny vision tower of ``family`` (its merger projects to the text ``hidden`` size)."""
    common = {
        "depth": TINY_VISION["depth"],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if family == "qwen2_vl":
        return {**TINY_VISION, **common, "hidden_size": hidden, "patch_size": 14}
    width = TINY_VISION["embed_dim"]
    tower = {**common, "hidden_size": width, "num_heads": TINY_VISION["num_heads"], "out_hidden_size": hidden}
    if family == "qwen2_5_vl":
        return {**tower, "intermediate_size": 2 * width, "patch_size": 14, "window_size": 112,
                "fullatt_block_indexes": [0], "tokens_per_second": 2}  # fmt: skip
    return {**tower, "intermediate_size": 2 * width, "patch_size": 16, "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0]}  # fmt: skip


def _family_classes(family: str):
    """(config, model, processor, video processor) classes and the image patch size of ``family``."""
    import transformers as tf

    if family == "qwen2_vl":
        return (
            tf.Qwen2VLConfig,
            tf.Qwen2VLForConditionalGeneration,
            tf.Qwen2VLProcessor,
            tf.Qwen2VLVideoProcessor,
            14,
        )
    if family == "qwen2_5_vl":
        return (tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor,
                tf.Qwen2VLVideoProcessor, 14)  # fmt: skip
    if family == "qwen3_vl":
        return (
            tf.Qwen3VLConfig,
            tf.Qwen3VLForConditionalGeneration,
            tf.Qwen3VLProcessor,
            tf.Qwen3VLVideoProcessor,
            16,
        )
    raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")


def build_tiny_model(path: str | Path, family: str = "qwen2_vl", seed: int = 0) -> Path:
    """Build (or reuse) the tiny ``family`` model (``FAMILIES``) at ``path``; returns ``path``.

    Idempotent: a directory already holding a complete build for ``seed`` (marker file written last) is
    returned untouched. The build happens in a temporary sibling directory that is renamed into place, so a
    crash never leaves a half-written model that looks complete.
    """
    import torch
    from transformers import Qwen2VLImageProcessor

    config_class, model_class, processor_class, video_class, patch = _family_classes(family)
    path = Path(path)
    if _is_complete(path, seed):
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path}: exists and does not hold a complete tiny build for seed {seed}")
    path.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    pixels = {"min_pixels": TINY_MIN_PIXELS, "max_pixels": TINY_MAX_PIXELS}
    if patch != 14:  # 16 px patches: the same 8 x 8 patch grid at 128 x 128
        pixels = {k: v * patch * patch // 196 for k, v in pixels.items()}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, **pixels)
    video_processor = video_class(patch_size=patch, size={"shortest_edge": pixels["min_pixels"],
                                                          "longest_edge": pixels["max_pixels"]})  # fmt: skip
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )

    text = TINY_TEXT
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]  # sums to head_dim / 2
    vocab_size = 64 * -(-len(tokenizer) // 64)
    text_config = {
        **text,
        "vocab_size": vocab_size,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope_section},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if family == "qwen3_vl":
        text_config["head_dim"] = head_dim
        text_config["rope_parameters"]["mrope_interleaved"] = True
    config = config_class(
        text_config=text_config,
        vision_config=_vision_config(family, text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        processor.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / MARKER_FILE).write_text(json.dumps({"seed": seed, "version": BUILD_VERSION}))
        if path.exists():
            path.rmdir()  # empty (checked above)
        try:
            tmp.rename(path)
        except OSError:
            if not _is_complete(path, seed):  # another process may have won the race with the same build
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
