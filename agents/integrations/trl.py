"""Training a VLN-v0 policy with trl's ``GRPOTrainer``: prompts from the env, rewards from ``env.step``.

What trl needs, built from our pieces:

- `vln_prompt_dataset`: one row per episode start: the chat prompt ``VLMPolicy`` builds (frames as image
  entries + the instruction + the action format), the frames as PIL images, and ``episode_index``.
- `EnvReward`: a reward function that resets ``VLN-v0`` on the row's episode and steps it with the
  completion; the env owns the reward on both sides (trl passes dataset columns as keyword arguments).
- `constrain_generation`: our action grammar inside trl's generation. trl builds a ``GenerationConfig``
  from ``generation_kwargs``, which cannot carry a logits processor, so the model's ``generate`` is wrapped
  to add ``ActionTrieLogitsProcessor``. trl scores the completions under the unmasked model, so its
  ratios are not the masked sampling distribution (our trainer scores under the same mask).

Not possible through trl's API here (trl 1.16): ``environment_factory`` (multi-turn) needs a chat template
with tool calling, and its ``reset()`` returns text only, so the first frame cannot be given at reset; a
multi-turn VLN episode therefore stays with ``agents.ppo_train``. One decision per prompt works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym


def vln_prompt_dataset(env_kwargs: Mapping[str, Any], num_episodes: int | None = None, max_images: int = 16):
    """A ``datasets.Dataset`` of ``prompt`` (chat messages), ``images`` and ``episode_index`` for the first
    ``num_episodes`` episodes (``None``: all)."""
    from datasets import Dataset
    from PIL import Image

    import vln_gym  # noqa: F401  (registers VLN-v0)
    from agents.policy.prompting import build_messages, valid_frames

    env = gym.make("VLN-v0", **dict(env_kwargs))
    rows: dict[str, list] = {"prompt": [], "images": [], "episode_index": []}
    try:
        for index in range(len(env.unwrapped.episodes) if num_episodes is None else num_episodes):
            obs, _ = env.reset(options={"episode_index": index})
            frames = valid_frames(obs, max_images=max_images)
            rows["prompt"].append(build_messages(obs["instruction"], len(frames)))
            rows["images"].append([Image.fromarray(frame) for frame in frames])
            rows["episode_index"].append(index)
    finally:
        env.close()
    return Dataset.from_dict(rows)


class EnvReward:
    """trl reward function: ``VLN-v0`` reset on the row's ``episode_index``, stepped with the completion."""

    __name__ = "vln_env_reward"

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        import vln_gym  # noqa: F401

        self.env = gym.make("VLN-v0", **dict(env_kwargs))

    def __call__(self, prompts, completions, episode_index, **kwargs) -> list[float]:
        rewards = []
        for completion, index in zip(completions, episode_index, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            self.env.reset(options={"episode_index": int(index)})
            _, reward, _, _, _ = self.env.step(text)
            rewards.append(float(reward))
        return rewards


def constrain_generation(model, processor) -> None:
    """Make ``model.generate`` decode only answers of the action grammar (what ``constrained_actions``
    does in ``VLMPolicy``), for trainers that call ``generate`` themselves."""
    from transformers import LogitsProcessorList

    from agents.policy.constrained import ActionTrieLogitsProcessor, build_action_trie

    tokenizer = processor.tokenizer
    trie = build_action_trie(tokenizer, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    original = model.generate

    def generate(*args, **kwargs):
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(ActionTrieLogitsProcessor(trie, prompt_length=input_ids.shape[1]))
        return original(*args, logits_processor=processors, **kwargs)

    model.generate = generate
