"""trl's ``GRPOTrainer`` on VLN-v0 through `agents.integrations.trl` (rewards from ``env.step``).

    python scripts/train_trl_grpo.py [--model tiny | PATH] [--steps 4] [--out runs/trl-grpo]

``--model`` takes any Qwen2/2.5/3-VL dir, e.g. the tiny model after our supervised warm start:

    vln-gym train --sft_steps 200 --num_iterations 1 --output_dir runs/warm
    python scripts/train_trl_grpo.py --model runs/warm/sft_policy

(``tiny`` builds the untrained tiny model). Each step
samples ``--generations`` constrained answers per prompt, scores each with one env step, and updates a
LoRA adapter. Prints trl's log per step; the last line is one JSON object (reward mean/std, grad norm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ENV_KWARGS = {"action_space": "text", "max_steps": 1, "image_size": [56, 56], "world_episodes": 64}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="model dir, or tiny / tiny-qwen2_5_vl / tiny-qwen3_vl"
    )
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps")
    parser.add_argument("--prompts", type=int, default=4, help="prompts (episode starts) per step")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/trl-grpo")
    args = parser.parse_args(argv)

    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from agents.integrations.trl import EnvReward, constrain_generation, vln_prompt_dataset
    from agents.policy.model import _lora_target
    from agents.ppo_train import resolve_model_path

    torch.set_num_threads(1)
    path = resolve_model_path(args.model)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    constrain_generation(model, processor)
    config = GRPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        max_completion_length=8,
        max_steps=args.steps,
        learning_rate=args.lr,
        beta=0.0,
        temperature=1.0,
        top_k=0,
        bf16=False,
        use_vllm=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[EnvReward(ENV_KWARGS)],
        args=config,
        train_dataset=vln_prompt_dataset(ENV_KWARGS, num_episodes=args.prompts * args.steps),
        processing_class=processor,
        peft_config=LoraConfig(
            r=8, lora_alpha=16, target_modules=_lora_target(LORA_TARGETS, True), bias="none"
        ),
    )
    trainer.train()
    logs = [row for row in trainer.state.log_history if "reward" in row]
    for row in logs:
        print(f"step {row.get('step')}: reward {row['reward']:.3f} +- {row.get('reward_std', 0.0):.3f}, "
              f"grad norm {row.get('grad_norm', float('nan')):.4f}")  # fmt: skip
    summary = {
        "steps": len(logs),
        "reward_mean": [row["reward"] for row in logs],
        "reward_std": [row.get("reward_std") for row in logs],
        "grad_norm": [row.get("grad_norm") for row in logs],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
