"""The trl path: GRPOTrainer on VLN-v0 with rewards from env.step and our action grammar in its generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from agents.integrations.trl import EnvReward, constrain_generation, vln_prompt_dataset
from vln_gym.actions import parse_action

ROOT = Path(__file__).resolve().parents[1]
ENV = {"action_space": "text", "max_steps": 1, "image_size": [56, 56], "world_episodes": 8}


def test_constrained_generation_inside_hf_generate_always_parses():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from agents.policy.tiny import ensure_tiny_model

    path = ensure_tiny_model()
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    constrain_generation(model, processor)
    row = vln_prompt_dataset(ENV, num_episodes=1)[0]
    prompt = processor.apply_chat_template(row["prompt"], add_generation_prompt=True)
    inputs = processor(text=[prompt] * 8, images=[row["images"]] * 8, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, max_new_tokens=8)
    texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(parse_action(text).valid for text in texts), texts
    rewards = EnvReward(ENV)([row["prompt"]] * 8, texts, [0] * 8)
    assert len(set(rewards)) > 1  # different answers, different env rewards


def test_trl_grpo_example_runs_one_step_with_reward_variance(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/train_trl_grpo.py", "--steps", "1", "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1
    assert summary["reward_std"][0] > 0 and summary["grad_norm"][0] > 0
