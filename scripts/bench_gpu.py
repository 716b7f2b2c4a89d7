"""GPU benchmark of VLMPolicy at Qwen2-VL-2B size: rollout tokens/s, PPO update samples/s, memory, MFU.

    python scripts/bench_gpu.py                          # CUDA, Qwen2-VL-2B dims, random bf16 weights, LoRA
    python scripts/bench_gpu.py --device cpu --tiny      # the same code path on the tiny model (smoke run)

The model is built from a hand-written ``Qwen2VLConfig`` with the dimensions of Qwen2-VL-2B-Instruct (text:
hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960, vocab 151936, mrope_section [16, 24, 24],
tied embeddings; vision: depth 32, embed_dim 1280, 16 heads, merger hidden 1536, patch 14, merge 2) and
random weights, constructed directly in bf16 on the device (no fp32 copy, no download). The tokenizer and
processor are the tiny model's (``agents.policy.tiny``): its token ids fit in the 2B vocabulary; the image
processor gets Qwen2-VL-2B-Instruct's pixel budget (min 3136, max 12845056 pixels), so a 224x224 frame becomes
16x16 patches = 64 merged image tokens, as with the real checkpoint. ``--tiny`` keeps the tiny model's own
config and processor.

Measured on a batch of ``--batch`` (16) prompts with 2 random frames at 224x224 + an instruction:
- rollout: ``VLMPolicy.generate`` (processor, vision tower, prefill, KV-cache decoding of
  ``--max-new-tokens`` sampled tokens); figure = generated tokens / wall time;
- update: one PPO step = ``VLMPolicy.evaluate`` (with grad; image features cached by generate, as in the
  trainer) + ``agents.train.ppo`` clipped policy / value losses + backward + grad clipping + AdamW step;
  figure = samples / wall time;
- peak GPU memory (``torch.cuda.max_memory_allocated``) per phase and overall; on CPU the peak RSS;
- MFU of the update phase (see ``update_flops``): model FLOPs / update time / peak FLOP/s, with the peak
  989 TFLOP/s (H100 / H200 SXM, bf16 dense) unless ``--peak-tflops`` says otherwise (null on CPU).

The last output line is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import limit_threads, peak_rss_mb, print_result, summary, synthetic_observations

# Qwen2-VL-2B-Instruct dimensions (config.json of the hub checkpoint).
QWEN2_VL_2B_TEXT = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
QWEN2_VL_2B_VISION = {
    "depth": 32,
    "embed_dim": 1280,
    "num_heads": 16,
    "hidden_size": 1536,
    "mlp_ratio": 4,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "in_channels": 3,
}
QWEN2_VL_2B_MROPE_SECTION = [16, 24, 24]
QWEN2_VL_MIN_PIXELS = 56 * 56
QWEN2_VL_MAX_PIXELS = 14 * 14 * 4 * 16384  # 12845056
# Dense bf16 tensor-core peaks (no sparsity), in FLOP/s.
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12}


def qwen2_vl_2b_config(tiny_config):
    """A ``Qwen2VLConfig`` with Qwen2-VL-2B dimensions and the tiny tokenizer's special token ids."""
    from transformers import Qwen2VLConfig

    text = tiny_config.text_config
    return Qwen2VLConfig(
        text_config={
            **QWEN2_VL_2B_TEXT,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": QWEN2_VL_2B_MROPE_SECTION,
            },
            "bos_token_id": text.bos_token_id,
            "eos_token_id": text.eos_token_id,
            "pad_token_id": text.pad_token_id,
        },
        vision_config=dict(QWEN2_VL_2B_VISION),
        image_token_id=tiny_config.image_token_id,
        video_token_id=tiny_config.video_token_id,
        vision_start_token_id=tiny_config.vision_start_token_id,
        vision_end_token_id=tiny_config.vision_end_token_id,
        tie_word_embeddings=True,
    )


def build_policy(args: argparse.Namespace, device, dtype):
    """Random-weight Qwen2-VL (built in ``dtype`` directly on ``device``) + LoRA + value head: a VLMPolicy."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from agents.policy.model import PolicyConfig, VLMPolicy, _lora_target
    from agents.policy.tiny import ensure_tiny_model
    from agents.policy.value_head import ValueHead, hidden_size_of

    tiny_path = ensure_tiny_model()
    tiny_config = AutoConfig.from_pretrained(tiny_path)
    config = tiny_config if args.tiny else qwen2_vl_2b_config(tiny_config)
    processor = AutoProcessor.from_pretrained(tiny_path)
    if not args.tiny:
        size = dict(processor.image_processor.size)
        size.update(shortest_edge=QWEN2_VL_MIN_PIXELS, longest_edge=QWEN2_VL_MAX_PIXELS)
        processor.image_processor.size = size
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            config, dtype=dtype, attn_implementation=args.attn_implementation
        )
        model = get_peft_model(
            model,
            LoraConfig(
                r=args.lora_r,
                lora_alpha=2 * args.lora_r,
                lora_dropout=0.0,
                target_modules=_lora_target(targets, freeze_vision=True),
                bias="none",
            ),
        )
        value_head = ValueHead(hidden_size_of(config))
    policy_config = PolicyConfig(
        base_model="qwen2-vl-2b-random" if not args.tiny else str(tiny_path),
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_target_modules=targets,
    )
    policy = VLMPolicy(model, processor, value_head, policy_config, seed=args.seed).to(device)
    return policy, config


def linear_params_per_layer(text_config) -> int:
    """Weights of one decoder layer's matmuls: q, k, v, o projections and the gated MLP (biases excluded)."""
    hidden = text_config.hidden_size
    head_dim = getattr(text_config, "head_dim", None) or hidden // text_config.num_attention_heads
    q_dim = text_config.num_attention_heads * head_dim
    kv_dim = text_config.num_key_value_heads * head_dim
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    return attention + 3 * hidden * text_config.intermediate_size


def update_flops(text_config, sequence_lengths: list[int], response_tokens: int) -> dict[str, float]:
    """Model FLOPs of one update on sequences of the given real lengths (padding not counted).

    forward = 2 * N_layers * T                      (decoder matmuls, N_layers = linear weights of all layers)
            + sum over layers and sequences of 2 * d * L^2   (causal QK^T and AV, d = heads * head_dim)
            + 2 * d_model * V * T_response          (lm_head: evaluate applies it to response positions only)
    LoRA (frozen base): forward + backward through activations = 2 * forward (weight gradients only for the
    adapters, negligible): ``lora`` below, used for ``update_mfu``. Full fine-tuning convention (6N-style,
    weight gradients too): 3 * forward: ``full_ft``. The vision tower is not run in the update (its features
    are cached by generate) and is not counted.
    """
    layers = text_config.num_hidden_layers
    head_dim = (
        getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    )
    attn_dim = text_config.num_attention_heads * head_dim
    tokens = sum(sequence_lengths)
    dense = 2.0 * linear_params_per_layer(text_config) * layers * tokens
    attention = layers * sum(2.0 * attn_dim * length**2 for length in sequence_lengths)
    lm_head = 2.0 * text_config.hidden_size * text_config.vocab_size * response_tokens
    forward = dense + attention + lm_head
    return {"forward": forward, "lora": 2.0 * forward, "full_ft": 3.0 * forward}


def peak_flops(device, override_tflops: float | None) -> tuple[float | None, str]:
    """Peak bf16 dense FLOP/s of ``device`` and where the figure comes from."""
    import torch

    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown (not a CUDA device)"
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if all(part in name for part in key.split()):
            return PEAK_FLOPS[key], f"{key} bf16 dense ({name})"
    return None, f"unknown for {name!r} (pass --peak-tflops)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda | cpu | cuda:N")
    parser.add_argument("--tiny", action="store_true", help="tiny model dims instead of Qwen2-VL-2B")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--batch", type=int, default=16, help="prompts per rollout / update")
    parser.add_argument("--frames", type=int, default=2, help="frames per prompt")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--minibatch", type=int, default=16, help="samples per micro-batch of the update")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--attn-implementation", default="sdpa", help="sdpa | eager | flash_attention_2")
    parser.add_argument("--rollout-reps", type=int, default=3)
    parser.add_argument("--update-reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch intra-op)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    limit_threads(args.threads)

    import torch

    from agents.train import ppo

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available (use --device cpu --tiny)")
    dtype = getattr(torch, args.dtype)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def peak_gib() -> float | None:
        return torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None

    start = time.perf_counter()
    policy, config = build_policy(args, device, dtype)
    sync()
    build_s = time.perf_counter() - start
    text_config = config.text_config
    total_params = sum(p.numel() for p in policy.parameters())
    trainable = policy.trainable_parameters()
    print(
        f"model built in {build_s:.1f} s: {total_params / 1e9:.3f} B parameters, "
        f"{sum(p.numel() for p in trainable) / 1e6:.2f} M trainable (LoRA r={args.lora_r} + value head)"
    )
    model_memory = torch.cuda.memory_allocated(device) / 2**30 if cuda else None
    observations = synthetic_observations(
        args.batch, frames=args.frames, size=(args.image_size, args.image_size), seed=args.seed
    )

    # --- rollout: batched KV-cache generation (one warm-up)
    reset_peak()
    rollout_times, rollout_tokens = [], []
    for rep in range(args.rollout_reps + 1):
        sync()
        start = time.perf_counter()
        generation = policy.generate(observations, max_new_tokens=args.max_new_tokens)
        sync()
        elapsed = time.perf_counter() - start
        tokens = sum(len(ids) for ids in generation.response_ids)
        if rep > 0:
            rollout_times.append(elapsed)
            rollout_tokens.append(tokens)
        print(f"rollout rep {rep}{' (warm-up)' if rep == 0 else ''}: {tokens} tokens in {elapsed:.3f} s")
    rollout_peak = peak_gib()

    # --- update: evaluate + PPO losses + backward + AdamW step on the last generation
    prompts, responses = generation.prompts, generation.response_ids
    old_logprobs = torch.nn.utils.rnn.pad_sequence(generation.logprobs, batch_first=True).float()
    old_values = torch.nn.utils.rnn.pad_sequence(generation.values, batch_first=True).float()
    generator = torch.Generator().manual_seed(args.seed)
    advantages = torch.randn(args.batch, 1, generator=generator).expand_as(old_logprobs).contiguous()
    returns = old_values + torch.randn(old_values.shape, generator=generator)
    value_ids = {id(p) for p in policy.value_head_parameters()}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if id(p) not in value_ids], "lr": 1e-5},
            {"params": policy.value_head_parameters(), "lr": 1e-4},
        ]
    )
    prompt_len = max(len(p.input_ids) for p in prompts)
    response_len = max(len(r) for r in responses)
    sequence_lengths = [len(p.input_ids) + len(r) for p, r in zip(prompts, responses, strict=True)]
    response_tokens = sum(len(r) for r in responses)

    def update_step() -> float:
        policy.train()
        total = 0.0
        for begin in range(0, args.batch, args.minibatch):
            rows = slice(begin, begin + args.minibatch)
            out = policy.evaluate(prompts[rows], responses[rows])
            length = out.logprobs.shape[1]
            mask = out.mask
            old, adv = old_logprobs[rows, :length].to(device), advantages[rows, :length].to(device)
            weight = mask.sum() / response_tokens  # token mean over the whole batch
            policy_loss = ppo.clipped_policy_loss(out.logprobs, old, adv, mask, 0.2)
            value_loss = ppo.clipped_value_loss(
                out.values, old_values[rows, :length].to(device), returns[rows, :length].to(device), mask, 0.2
            )
            loss = (policy_loss + 0.5 * value_loss) * weight
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(total):
            raise FloatingPointError(f"update loss is not finite: {total}")
        return total

    reset_peak()
    update_times = []
    for rep in range(args.update_reps + 1):
        sync()
        start = time.perf_counter()
        loss = update_step()
        sync()
        elapsed = time.perf_counter() - start
        if rep > 0:
            update_times.append(elapsed)
        print(f"update rep {rep}{' (warm-up)' if rep == 0 else ''}: loss {loss:.4f} in {elapsed:.3f} s")
    update_peak = peak_gib()

    flops = update_flops(text_config, sequence_lengths, response_tokens)
    peak, peak_source = peak_flops(device, args.peak_tflops)
    update_s = summary(update_times)["median"]
    rollout_s = summary(rollout_times)["median"]
    tokens_per_s = [t / s for t, s in zip(rollout_tokens, rollout_times, strict=True)]
    result: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "model": "tiny" if args.tiny else "qwen2-vl-2b-dims (random weights)",
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
        "params_b": total_params / 1e9,
        "trainable_params_m": sum(p.numel() for p in trainable) / 1e6,
        "lora_r": args.lora_r,
        "batch": args.batch,
        "frames": args.frames,
        "image_size": args.image_size,
        "prompt_tokens_max": prompt_len,
        "max_new_tokens": args.max_new_tokens,
        "response_tokens_max": response_len,
        "build_s": build_s,
        "rollout_s": rollout_s,
        "rollout_tokens_per_s": summary(tokens_per_s)["median"],
        "rollout_tokens_per_s_range": [min(tokens_per_s), max(tokens_per_s)],
        "update_s": update_s,
        "update_samples_per_s": args.batch / update_s,
        "update_tokens": sum(sequence_lengths),
        "update_minibatch": args.minibatch,
        "update_model_flops_lora": flops["lora"],
        "update_model_flops_full_ft": flops["full_ft"],
        "flops_formula": (
            "forward = 2*N_layers*T + layers*sum_seq(2*d*L^2) + 2*d_model*V*T_resp; "
            "LoRA update = 2*forward (activation grads only), full-FT convention = 3*forward; "
            "T = real prompt+response tokens, vision tower excluded (features cached by generate)"
        ),
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        "update_mfu": flops["lora"] / update_s / peak if peak else None,
        "update_mfu_full_ft_convention": flops["full_ft"] / update_s / peak if peak else None,
        "model_memory_gib": model_memory,
        "rollout_peak_gpu_gib": rollout_peak,
        "update_peak_gpu_gib": update_peak,
        "peak_gpu_gib": max(rollout_peak, update_peak) if cuda else None,
        "peak_rss_mb": peak_rss_mb(),
        "reps": {"rollout": args.rollout_reps, "update": args.update_reps, "warmup": 1},
    }
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
