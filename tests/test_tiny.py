"""The tiny offline Qwen2-VL: loads through the Auto classes with consistent tokens, template and config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from agents.policy.tiny import (
    MARKER_FILE,
    QWEN_SPECIAL_TOKENS,
    build_tiny_qwen2_vl,
    default_tiny_path,
    ensure_tiny_model,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def processor(tiny_path):
    return AutoProcessor.from_pretrained(tiny_path)


@pytest.fixture(scope="module")
def model(tiny_path):
    return AutoModelForImageTextToText.from_pretrained(tiny_path).eval()


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_auto_classes_load_qwen2_vl_types(processor, model):
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert model.config.model_type == "qwen2_vl"


def test_special_token_ids_match_config(processor, model):
    tokenizer, config = processor.tokenizer, model.config
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(QWEN_SPECIAL_TOKENS)))  # Qwen order, consecutive
    as_id = dict(zip(QWEN_SPECIAL_TOKENS, ids, strict=True))
    assert config.image_token_id == as_id["<|image_pad|>"] == processor.image_token_id
    assert config.video_token_id == as_id["<|video_pad|>"]
    assert config.vision_start_token_id == as_id["<|vision_start|>"]
    assert config.vision_end_token_id == as_id["<|vision_end|>"]
    assert tokenizer.eos_token == "<|im_end|>" and config.text_config.eos_token_id == as_id["<|im_end|>"]
    assert tokenizer.pad_token_id == as_id["<|endoftext|>"]
    assert config.text_config.vocab_size >= len(tokenizer)
    # each special token is one token, never split by BPE
    assert tokenizer.encode("<|im_start|>assistant\n<|im_end|>", add_special_tokens=False)[0] == ids[1]


def test_mrope_section_sums_to_half_head_dim(model):
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2


def test_tokenizer_round_trips_navigation_and_unicode_text(processor):
    tokenizer = processor.tokenizer
    for text in ["Walk past the sofa, then turn left 30 degrees.", "move forward 75 cm", "←↑→ Küche 台所"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # trained merges: a frequent navigation word is one token, not bytes
    assert len(tokenizer.encode(" forward", add_special_tokens=False)) == 1


def test_chat_template_is_qwen2_vl_and_expands_image_tokens(processor):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Go left."}],
        }
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
        "Go left.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    batch = processor(text=[text], images=[_frame(0), _frame(1)], return_tensors="pt")
    # 224x224 -> 112x112 (max_pixels) -> 8x8 patches of 14 px per image; 2x2 merge -> 16 tokens per image
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]
    assert batch["pixel_values"].shape == (128, 3 * 2 * 14 * 14)
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 32


def test_forward_backward_and_hf_generate_on_two_images(processor, model):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Stop."}]}
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[_frame(2), _frame(3)], return_tensors="pt")
    out = model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    out.logits.logsumexp(-1).sum().backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    model.zero_grad()
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] <= batch["input_ids"].shape[1] + 3
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_build_is_idempotent_and_refuses_foreign_directories(tiny_path, tmp_path):
    weights = tiny_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_qwen2_vl(tiny_path) == tiny_path
    assert weights.stat().st_mtime_ns == before
    assert json.loads((tiny_path / MARKER_FILE).read_text())["seed"] == 0
    with pytest.raises(FileExistsError, match="seed 1"):
        build_tiny_qwen2_vl(tiny_path, seed=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="foreign"):
        build_tiny_qwen2_vl(foreign)


def test_same_seed_gives_same_weights_and_cache_path_follows_env(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("VLN_GYM_CACHE", str(tmp_path / "cache"))
    assert default_tiny_path() == tmp_path / "cache" / "tiny-qwen2-vl"
    other = ensure_tiny_model()
    assert other == default_tiny_path()
    from safetensors.torch import load_file

    first, second = load_file(tiny_path / "model.safetensors"), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tiny_path / "tokenizer.json").read_text() == (other / "tokenizer.json").read_text()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_families_load_through_the_auto_classes(tmp_path, family):
    from agents.policy.tiny import build_tiny_model

    path = build_tiny_model(tmp_path / family, family)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert model.config.model_type == family
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    processor = AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "go"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[_frame(0)], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16  # 8 x 8 patches, 2 x 2 merge


def test_unknown_family_and_unserved_model_types_are_one_clear_line(tmp_path):
    from transformers import BertConfig

    from agents.policy.model import check_model_type
    from agents.policy.tiny import build_tiny_model, tiny_family

    with pytest.raises(ValueError, match="unknown tiny model family 'llava'"):
        build_tiny_model(tmp_path / "x", "llava")
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(
        ValueError, match="model_type 'bert' is not served; VLMPolicy serves qwen2_vl, qwen2_5_vl"
    ):
        check_model_type(tmp_path / "bert")
    assert [tiny_family(n) for n in ("tiny", "tiny-qwen3_vl", "tiny-llava", "Qwen/Qwen2-VL-2B")] == [
        "qwen2_vl",
        "qwen3_vl",
        None,
        None,
    ]
