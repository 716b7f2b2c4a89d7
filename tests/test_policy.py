"""VLMPolicy on the tiny Qwen2-VL: mRoPE, per-sample pixels, constrained decoding, save/load, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from agents.policy.constrained import ActionTrieLogitsProcessor, TokenTrie, apply_mask, response_mask
from agents.policy.model import VLMPolicy
from agents.policy.tiny import FAMILIES, build_tiny_model
from vln_gym.actions import ACTION_PROMPT, ACTION_WORDS, parse_action

torch.set_num_threads(1)

INSTRUCTIONS = (
    "Walk past the sofa and stop at the kitchen door.",
    "Turn left.",
    "Go straight down the hallway, then enter the bedroom on the right and wait next to the bed.",
    "Exit the bathroom.",
)


@pytest.fixture(scope="module", params=FAMILIES, ids=FAMILIES)
def tiny_path(request, tmp_path_factory):
    """The tiny model of each Qwen-VL family (test ids name it: ``-k qwen3_vl``)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / request.param, request.param)


@pytest.fixture(scope="module")
def policy(tiny_path):
    """A fresh LoRA policy; tests must not modify it."""
    return VLMPolicy.from_pretrained(str(tiny_path), seed=0)


def make_obs(valid: int, *, history: int = 4, seed: int = 0, instruction: str | None = None) -> dict:
    """An env observation with ``valid`` real frames in the last slots (zeros + mask 0 in front)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((history, 224, 224, 3), np.uint8)
    mask = np.zeros(history, np.int8)
    if valid:
        frames[history - valid :] = rng.integers(0, 256, (valid, 224, 224, 3), dtype=np.uint8)
        mask[history - valid :] = 1
    text = instruction if instruction is not None else INSTRUCTIONS[seed % len(INSTRUCTIONS)]
    return {"frames": frames, "frame_mask": mask, "instruction": text}


def perturb(parameters, seed: int = 0, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            p.add_(torch.randn(p.shape, generator=generator) * scale)


# ------------------------------------------------------------------ prompts


def test_prompt_has_one_image_per_valid_frame_and_the_action_format(policy):
    obs = make_obs(3, seed=1)
    messages = policy.build_messages(obs)
    images = [c for m in messages for c in m["content"] if c["type"] == "image"]
    assert len(images) == 3
    (prompt,) = policy.prepare([obs])
    text = policy.processor.tokenizer.decode(prompt.input_ids)
    assert obs["instruction"] in text and ACTION_PROMPT in text
    assert text.count("<|vision_start|>") == 3
    assert int((prompt.input_ids == policy.image_token_id).sum()) == 3 * 16
    assert prompt.image_grid_thw.tolist() == [[1, 8, 8]] * 3
    assert prompt.pixel_values.shape[0] == 3 * 64
    assert text.endswith("<|im_start|>assistant\n")


def test_prepare_keeps_pixels_per_sample(policy):
    observations = [make_obs(1, seed=2), make_obs(3, seed=3)]
    together = policy.prepare(observations)
    alone = [policy.prepare([obs])[0] for obs in observations]
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a.input_ids, b.input_ids)
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert torch.equal(a.image_grid_thw, b.image_grid_thw)


# ------------------------------------------------------------------ mRoPE


def test_logits_equal_bare_model_with_3d_positions(policy, tiny_path):
    observations = [make_obs(1, seed=0), make_obs(3, seed=2), make_obs(2, seed=1)]
    prompts = policy.prepare(observations)
    out = policy(prompts)
    inputs = out.model_inputs
    mask = inputs["attention_mask"].bool()
    batch, length = inputs["input_ids"].shape
    assert not mask.all()  # the batch is padded
    assert inputs["position_ids"].shape == (3, batch, length)
    fallback = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    assert not torch.equal(inputs["position_ids"][0][mask], fallback[mask])
    assert not torch.equal(inputs["position_ids"][1], inputs["position_ids"][2])  # h and w differ on images

    bare = AutoModelForImageTextToText.from_pretrained(tiny_path).eval()
    kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "image_grid_thw", "mm_token_type_ids")}
    pixel_values = torch.cat([p.pixel_values for p in prompts])
    with torch.no_grad():
        expected = bare(**kwargs, pixel_values=pixel_values).logits
        one_d = bare(**kwargs, pixel_values=pixel_values, position_ids=fallback).logits
    torch.testing.assert_close(out.logits[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert (one_d[mask] - expected[mask]).abs().max() > 1e-3  # 1-D positions would change the logits


# ------------------------------------------------------------------ generation <-> evaluation


@pytest.mark.parametrize("constrained", [False, True])
def test_generate_logprobs_and_values_equal_evaluate(tiny_path, constrained):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=3, constrained_actions=constrained)
    observations = [make_obs(n, seed=n) for n in (1, 4, 2, 3)]
    generation = policy.generate(observations, max_new_tokens=6)
    lengths = [len(r) for r in generation.response_ids]
    scored = policy.evaluate(generation.prompts, generation.response_ids)
    assert scored.mask.sum(-1).tolist() == lengths
    for i, n in enumerate(lengths):
        torch.testing.assert_close(scored.logprobs[i, :n], generation.logprobs[i], atol=2e-5, rtol=0)
        torch.testing.assert_close(scored.values[i, :n], generation.values[i], atol=2e-5, rtol=0)
    torch.testing.assert_close(policy.prompt_values(generation.prompts), scored.values[:, 0].detach())


def test_generate_at_temperature_matches_evaluate_at_same_temperature(policy):
    generation = policy.generate(
        [make_obs(2, seed=5), make_obs(1, seed=6)], temperature=0.7, max_new_tokens=4
    )
    hot = policy.evaluate(generation.prompts, generation.response_ids, temperature=0.7)
    plain = policy.evaluate(generation.prompts, generation.response_ids)
    for i, response in enumerate(generation.response_ids):
        torch.testing.assert_close(
            hot.logprobs[i, : len(response)], generation.logprobs[i], atol=2e-5, rtol=0
        )
    assert not torch.allclose(hot.logprobs[plain.mask.bool()], plain.logprobs[plain.mask.bool()])


def test_greedy_generation_equals_hf_generate(policy):
    observations = [make_obs(2, seed=7), make_obs(1, seed=8), make_obs(4, seed=9)]
    ours = policy.generate(observations, do_sample=False, max_new_tokens=5)
    inputs = policy.model_inputs(ours.prompts)
    inputs.pop("position_ids")
    inputs.pop("mm_encoder_outputs", None)
    inputs["pixel_values"] = torch.cat([p.pixel_values for p in ours.prompts])
    with torch.no_grad():
        theirs = policy.model.get_base_model().generate(**inputs, do_sample=False, max_new_tokens=5)
    prompt_len = inputs["input_ids"].shape[1]
    for i, response in enumerate(ours.response_ids):
        assert theirs[i, prompt_len : prompt_len + len(response)].tolist() == response.tolist()


def test_cached_image_features_give_the_same_scores(policy):
    generation = policy.generate([make_obs(3, seed=10), make_obs(1, seed=11)], max_new_tokens=3)
    assert all(p.image_embeds is not None for p in generation.prompts)
    assert generation.prompts[0].image_embeds.shape == (3 * 16, 64)
    fresh = [dataclasses.replace(p, image_embeds=None) for p in generation.prompts]
    cached = policy.evaluate(generation.prompts, generation.response_ids)
    recomputed = policy.evaluate(fresh, generation.response_ids)
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-6, rtol=0)


def test_constrained_sampling_always_parses(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=4, constrained_actions=True)
    observations = [make_obs(1, history=1, seed=i) for i in range(100)]
    texts = policy.generate(observations, max_new_tokens=8).texts
    assert all(parse_action(text).valid for text in texts)
    assert set(texts) <= set(ACTION_WORDS)
    assert len(set(texts)) >= 3  # sampling, not a fixed answer
    free = VLMPolicy.from_pretrained(str(tiny_path), seed=4)
    assert not all(parse_action(t).valid for t in free.generate(observations[:20], max_new_tokens=8).texts)


def test_constrained_evaluate_rejects_out_of_grammar_responses(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), constrained_actions=True)
    prompts = policy.prepare([make_obs(1)])
    with pytest.raises(ValueError, match="outside the action grammar"):
        policy.evaluate(prompts, [torch.tensor([5])])
    with pytest.raises(ValueError, match="response 0: contains an image/video placeholder token"):
        policy.evaluate(prompts, [torch.tensor([policy.image_token_id])])


def test_seeded_sampling_is_reproducible_and_act_is_greedy(tiny_path):
    observations = [make_obs(2, seed=12), make_obs(1, seed=13)]
    first = VLMPolicy.from_pretrained(str(tiny_path), seed=5).generate(observations, max_new_tokens=4)
    second = VLMPolicy.from_pretrained(str(tiny_path), seed=5).generate(observations, max_new_tokens=4)
    assert [r.tolist() for r in first.response_ids] == [r.tolist() for r in second.response_ids]
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=5)
    greedy = policy.generate(observations[:1], do_sample=False).texts[0]
    assert policy.act(observations[0]) == greedy == policy.act(observations[0], {"episode_id": "x"})


# ------------------------------------------------------------------ gradients: minibatch split is exact


def _loss(policy: VLMPolicy, prompts, responses) -> torch.Tensor:
    out = policy.evaluate(prompts, responses)
    mask = out.mask.float()
    return ((out.logprobs + 0.1 * out.entropy + out.values) * mask).sum()


def test_gradients_of_a_batch_equal_sum_over_micro_batches(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), use_lora=False, freeze_vision=False, seed=6)
    image_counts = (1, 4, 2, 3, 3, 1, 4, 2)
    prompts = policy.prepare([make_obs(n, seed=i) for i, n in enumerate(image_counts)])
    generator = torch.Generator().manual_seed(0)
    responses = [torch.randint(0, 500, (int(n),), generator=generator) for n in (3, 1, 5, 2, 4, 4, 1, 2)]
    params = policy.trainable_parameters()
    assert any("visual" in name for name, p in policy.named_parameters() if p.requires_grad)

    full = torch.autograd.grad(_loss(policy, prompts, responses), params)
    summed = [torch.zeros_like(p) for p in params]
    for start in range(0, 8, 2):
        part = torch.autograd.grad(
            _loss(policy, prompts[start : start + 2], responses[start : start + 2]), params
        )
        summed = [s + g for s, g in zip(summed, part, strict=True)]
    for g_full, g_sum in zip(full, summed, strict=True):
        torch.testing.assert_close(g_full, g_sum, atol=1e-5, rtol=1e-4)
    assert sum(g.abs().sum() for g in full) > 0


# ------------------------------------------------------------------ parameters, reference, save / load


def test_lora_trains_only_adapter_and_value_head(policy):
    names = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n or n.startswith("value_head.") for n in names)
    assert not any("visual" in n for n in names)
    assert any("lora_" in n for n in names)
    head = policy.value_head_parameters()
    assert all(p.dtype == torch.float32 and p.requires_grad for p in head)
    assert head[0].shape == (1, 64)  # text_config.hidden_size
    assert {id(p) for p in head} <= {id(p) for p in policy.trainable_parameters()}


def test_reference_logprobs_ignore_the_adapter(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), seed=7)
    generation = policy.generate([make_obs(2, seed=14), make_obs(1, seed=15)], max_new_tokens=4)
    before = policy.evaluate(generation.prompts, generation.response_ids).logprobs.detach()
    torch.testing.assert_close(policy.reference_logprobs(generation.prompts, generation.response_ids), before)
    perturb([p for n, p in policy.named_parameters() if "lora_B" in n], scale=0.5)
    after = policy.evaluate(generation.prompts, generation.response_ids)
    mask = after.mask.bool()
    assert (after.logprobs.detach() - before)[mask].abs().max() > 1e-3
    torch.testing.assert_close(policy.reference_logprobs(generation.prompts, generation.response_ids), before)


def test_full_finetuning_reference_is_a_frozen_copy(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), use_lora=False, seed=8)
    assert not any("visual" in n for n, p in policy.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in policy.reference_model.parameters())
    prompts = policy.prepare([make_obs(2, seed=16)])
    responses = [torch.tensor([5, 17, 40])]
    before = policy.evaluate(prompts, responses).logprobs.detach()
    perturb(policy.model.model.language_model.parameters(), scale=0.1)
    assert (policy.evaluate(prompts, responses).logprobs.detach() - before).abs().max() > 1e-3
    torch.testing.assert_close(policy.reference_logprobs(prompts, responses), before)


@pytest.mark.parametrize("use_lora", [True, False])
def test_save_and_reload_gives_identical_outputs(tiny_path, tmp_path, use_lora):
    policy = VLMPolicy.from_pretrained(str(tiny_path), use_lora=use_lora, seed=9, constrained_actions=True)
    perturb(policy.trainable_parameters(), seed=1)
    prompts = policy.prepare([make_obs(3, seed=17), make_obs(1, seed=18)])
    responses = [torch.tensor([3, 9]), torch.tensor([11])]
    with torch.no_grad():
        expected = policy(prompts, responses)
    policy.save_pretrained(tmp_path / "saved")
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"policy_config.json", "value_head.safetensors", "tokenizer.json"} <= files
    assert ("adapter_model.safetensors" in files) == use_lora and ("model.safetensors" in files) != use_lora
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)

    reloaded = VLMPolicy.from_pretrained(str(tmp_path / "saved"))
    assert reloaded.config.constrained_actions and reloaded.config.use_lora == use_lora
    with torch.no_grad():
        got = reloaded(prompts, responses)
    torch.testing.assert_close(got.logits, expected.logits, atol=0, rtol=0)
    torch.testing.assert_close(got.values, expected.values, atol=0, rtol=0)
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == {
        n for n, p in policy.named_parameters() if p.requires_grad
    }
    if not use_lora:  # the full save is also a plain HF checkpoint
        plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "saved")
        torch.testing.assert_close(plain.lm_head.weight, policy.model.lm_head.weight)
        assert not VLMPolicy.from_pretrained(
            str(tmp_path / "saved"), constrained_actions=False
        ).config.constrained_actions


# ------------------------------------------------------------------ bad input


def test_observation_without_valid_frames_is_a_clear_error(policy):
    with pytest.raises(ValueError, match=r"observation 1: .*no valid frame"):
        policy.prepare([make_obs(1), make_obs(0)])


def test_too_many_images_is_a_clear_error(tiny_path):
    policy = VLMPolicy.from_pretrained(str(tiny_path), max_images=2)
    with pytest.raises(ValueError, match=r"3 valid frames exceed max_images=2"):
        policy.generate([make_obs(3)])


def test_prompt_over_context_length_is_a_clear_error(policy):
    long_instruction = " ".join(["walk forward past the red door"] * 1200)
    with pytest.raises(ValueError, match="context length 4096"):
        policy.prepare([make_obs(1, instruction=long_instruction)])
    medium = " ".join(["walk"] * 3900)
    with pytest.raises(ValueError, match="max_new_tokens=200 exceeds the model's context length"):
        policy.generate([make_obs(1, instruction=medium)], max_new_tokens=200)


def test_malformed_observation_names_the_field(policy):
    obs = make_obs(1)
    with pytest.raises(ValueError, match="missing field 'instruction'"):
        policy.prepare([{k: v for k, v in obs.items() if k != "instruction"}])
    with pytest.raises(ValueError, match="'frames' must be uint8"):
        policy.prepare([{**obs, "frames": obs["frames"].astype(np.float32)}])
    with pytest.raises(ValueError, match="'frame_mask' has shape"):
        policy.prepare([{**obs, "frame_mask": np.ones(2, np.int8)}])


def test_mismatched_pixels_are_rejected_before_the_model(policy):
    (prompt,) = policy.prepare([make_obs(2)])
    broken = dataclasses.replace(prompt, pixel_values=prompt.pixel_values[:64])
    with pytest.raises(ValueError, match="prompt 0: pixel_values has 64 patches"):
        policy.evaluate([broken], [torch.tensor([1])])


def test_max_pixels_overrides_the_image_budget(tiny_path):
    patch = VLMPolicy.from_pretrained(str(tiny_path)).processor.image_processor.patch_size
    policy = VLMPolicy.from_pretrained(str(tiny_path), max_pixels=(4 * patch) ** 2)
    (prompt,) = policy.prepare([make_obs(2)])
    # 224x224 -> 4x4 patches (14 px for Qwen2/2.5-VL, 16 px for Qwen3-VL) -> 2x2 merge -> 4 tokens per image
    assert prompt.image_grid_thw.tolist() == [[1, 4, 4], [1, 4, 4]]
    assert int((prompt.input_ids == policy.image_token_id).sum()) == 2 * 4
    assert policy.generate([make_obs(2)], max_new_tokens=2).response_ids[0].numel() >= 1


def test_token_trie_and_masks_on_hand_built_sequences():
    trie = TokenTrie([[1, 2, 9], [1, 3, 9], [4, 9]])
    assert sorted(trie.allowed([])) == [1, 4]
    assert sorted(trie.allowed([1])) == [2, 3]
    assert trie.allowed([1, 2, 9]) == []
    with pytest.raises(ValueError, match="token 2 at response position 0"):
        trie.allowed([2])
    mask = response_mask(trie, [torch.tensor([4, 9]), torch.tensor([1, 3, 9])], 3, 10)
    assert mask.shape == (2, 3, 10)
    assert mask[0, 0].nonzero().flatten().tolist() == [1, 4]
    assert mask[0, 1].nonzero().flatten().tolist() == [9]
    assert mask[0, 2].all()  # padding
    assert mask[1, 1].nonzero().flatten().tolist() == [2, 3]
    logits = apply_mask(torch.zeros(2, 3, 10), mask)
    probs = logits.softmax(-1)
    assert probs[1, 1, 2].item() == pytest.approx(0.5) and probs[1, 1, 0].item() == 0.0


def test_trie_logits_processor_constrains_hf_generate(policy):
    from transformers import LogitsProcessorList

    prompts = policy.prepare([make_obs(1, seed=s) for s in range(12)])
    inputs = policy.model_inputs(prompts)
    inputs.pop("position_ids")
    inputs["pixel_values"] = torch.cat([p.pixel_values for p in prompts])
    prompt_len = inputs["input_ids"].shape[1]
    processor = LogitsProcessorList([ActionTrieLogitsProcessor(policy.trie, prompt_len)])
    torch.manual_seed(0)  # HF generate samples from the global RNG: seed it so the test is repeatable
    with torch.no_grad():
        out = policy.model.get_base_model().generate(
            **inputs, logits_processor=processor, do_sample=True, max_new_tokens=8
        )
    texts = policy.processor.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
    assert all(text in ACTION_WORDS for text in texts)
    assert "stop" in texts and len(set(texts)) >= 3  # rows finish at different steps


def test_trie_complete_marks_finished_answers():
    trie = TokenTrie([[1, 2, 9], [4, 9]])
    assert trie.complete([4, 9]) and trie.complete([4, 9, 0, 0])
    assert not trie.complete([1, 2]) and not trie.complete([]) and not trie.complete([7])


def test_min_pixels_raises_the_image_budget(tiny_path):
    patch = VLMPolicy.from_pretrained(str(tiny_path)).processor.image_processor.patch_size
    policy = VLMPolicy.from_pretrained(
        str(tiny_path), min_pixels=(16 * patch) ** 2, max_pixels=(16 * patch) ** 2
    )
    (prompt,) = policy.prepare([make_obs(1)])
    assert prompt.image_grid_thw.tolist() == [[1, 16, 16]]  # 224x224 -> 16x16 patches, not the default 8x8
    with pytest.raises(ValueError, match=r"min_pixels .* must be <= max_pixels"):
        VLMPolicy.from_pretrained(str(tiny_path), min_pixels=2 * 56 * 56, max_pixels=56 * 56)
