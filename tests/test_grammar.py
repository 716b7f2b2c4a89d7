"""One action grammar for the prompt, the env's parser and constrained decoding, for several env settings."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.policy.grammar import ActionGrammar
from agents.policy.model import VLMPolicy
from agents.policy.tiny import ensure_tiny_model
from agents.train.config import PPOConfig
from vln_gym.actions import parse_action
from vln_gym.episode import Episode

SETTINGS = [
    ActionGrammar("word", 1, 0.25, 15.0),
    ActionGrammar("word", 3, 0.25, 15.0),
    ActionGrammar("amount", 1, 0.25, 15.0),
    ActionGrammar("amount", 4, 0.25, 30.0),
    ActionGrammar("amount", 3, 0.5, 45.0),
    ActionGrammar("option", 4, 0.25, 30.0),  # VLN-R1's four lettered options per answer
]


def _env(grammar: ActionGrammar, image: str) -> gym.Env:
    """A one-decision text env in the grammar's units (record mode: pure kinematics, no walls)."""
    episode = Episode("e", "go", (image,), (0.0, 0.0, 0.0), 0.0, (0.0, 0.0, -5.0), 5.0)
    return gym.make(
        "VLN-v0",
        episodes=[episode],
        views="record",
        action_space="text",
        image_size=(4, 4),
        forward_step=grammar.forward_step,
        turn_angle=grammar.turn_angle,
    )


@pytest.mark.parametrize("grammar", SETTINGS, ids=lambda g: f"{g.style}-{g.max_actions}-{g.turn_angle:g}")
def test_every_answer_is_what_the_env_executes(grammar, vln_ego_trajectory):
    env = _env(grammar, str(vln_ego_trajectory / "step_0.jpg"))
    env.reset(seed=0)
    start = env.unwrapped.get_state()
    units = {"forward_step": grammar.forward_step, "turn_angle": grammar.turn_angle}
    for text, actions in grammar.answers.items():
        assert 1 <= len(actions) <= grammar.max_actions and (0 not in actions[:-1])
        assert parse_action(text, **units).actions == actions, text
        env.unwrapped.set_state(start)
        _, _, _, _, info = env.step(text)
        assert tuple(info["actions"]) == actions and not info["invalid_action"], text
    # The prompt's example is an answer the decoder admits, and the prompt names the budget.
    prompt = grammar.prompt()
    example = prompt.rsplit("e.g. ", 1)[-1].removesuffix(".") if "e.g. " in prompt else None
    assert example is None or example in grammar.answers
    assert grammar.max_actions == 1 or str(grammar.max_actions) in prompt
    # Expert plans encode to admitted answers holding the plan's next actions.
    for plan in ((1, 1, 1, 1, 2, 0), (2, 3, 0), (0,), (3, 3, 3, 3, 3)):
        answer = grammar.encode(plan)
        assert answer in grammar.answers
        assert grammar.answers[answer] == tuple(plan[: len(grammar.answers[answer])])


def test_constrained_samples_parse_to_what_the_env_executes_and_score_as_generated():
    grammar = ActionGrammar("amount", 4, 0.25, 30.0)
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), seed=1, constrained_actions=True, action_grammar=grammar
    )
    assert (
        policy.grammar == grammar
        and grammar.prompt() in policy.build_messages(_obs())[1]["content"][-1]["text"]
    )
    texts = []
    for batch in range(20):  # 1,000 samples
        observations = [_obs(seed=batch * 50 + i) for i in range(50)]
        generation = policy.generate(observations, max_new_tokens=policy.trie.max_length)
        texts += generation.texts
        if batch == 0:  # generated log-probs are the scored ones, under the same mask
            scored = policy.evaluate(generation.prompts, generation.response_ids)
            for i, response in enumerate(generation.response_ids):
                torch.testing.assert_close(
                    scored.logprobs[i, : len(response)], generation.logprobs[i], atol=2e-5, rtol=0
                )
    assert len(texts) == 1000 and set(texts) <= set(grammar.answers)
    assert len(set(texts)) > 20  # the samples do spread over the grammar
    units = {"forward_step": 0.25, "turn_angle": 30.0}
    assert all(parse_action(t, **units).actions == grammar.answers[t] for t in texts)


def test_option_style_writes_vln_r1_answers(vln_ego_sample):
    """The VLN-R1 export's own answers are answers of the option grammar (25 cm, 30 degrees, four options)."""
    import json

    grammar = ActionGrammar("option", 4, 0.25, 30.0)
    records = json.loads((vln_ego_sample / "r2r_16_images_4act_debug.json").read_text())
    answers = [record["conversations"][1]["value"] for record in records]
    others = [answer for answer in answers if answer not in grammar.answers]
    assert len(others) == 4  # VLN-R1 pads with "D. Stop" after the first stop; the grammar ends there
    for answer in others:
        head = answer[: answer.index("D. Stop") + len("D. Stop")]
        assert head in grammar.answers and answer.count("D. Stop") > 1


def test_the_grammar_survives_save_and_load_and_needs_room_to_answer(tmp_path):
    grammar = ActionGrammar("amount", 2, 0.5, 45.0)
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), constrained_actions=True, action_grammar=grammar
    )
    policy.save_pretrained(tmp_path / "p")
    assert VLMPolicy.from_pretrained(str(tmp_path / "p")).grammar == grammar
    with pytest.raises(ValueError, match="cannot hold the action grammar's longest answer"):
        policy.generate([_obs()], max_new_tokens=2)
    # the config's default (None) is the grammar's longest answer, whatever the tokenizer makes of it
    assert PPOConfig().max_new_tokens is None and policy.trie.max_length > 4
    texts = policy.generate([_obs(seed) for seed in range(8)], max_new_tokens=None).texts
    assert all(text in grammar.answers for text in texts)
    with pytest.raises(ValueError, match=r"PPOConfig.max_new_tokens: must be >= 1 \(got 0\)"):
        PPOConfig(max_new_tokens=0)


def test_config_builds_the_grammar_in_the_env_units():
    config = PPOConfig(
        env_kwargs={"action_space": "text", "world_config": "medium", "max_steps": 20},
        action_style="amount",
        max_actions_per_turn=4,
    )
    assert config.action_grammar() == {
        "style": "amount",
        "max_actions": 4,
        "forward_step": 0.25,
        "turn_angle": 30.0,
    }
    assert PPOConfig().action_grammar() is None  # one bare word per answer
    with pytest.raises(ValueError, match="max_steps 11 x 1 action"):  # 2.75 m < medium's nearest 3 m
        PPOConfig(env_kwargs={"action_space": "text", "world_config": "medium", "max_steps": 11})
    PPOConfig(  # the same budget with up to 4 actions per answer reaches them
        env_kwargs={"action_space": "text", "world_config": "medium", "max_steps": 11}, max_actions_per_turn=4
    )


def _obs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    return {
        "frames": frames,
        "frame_mask": np.ones(2, np.int8),
        "num_frames": 2,
        "instruction": "Walk to the door.",
    }


def test_evaluate_runs_a_chunk_policy_with_room_for_its_longest_answer(tmp_path):
    """The evaluation agent used to call generate with 16 new tokens, shorter than a 4-action answer."""
    from agents.eval.evaluate import evaluate

    grammar = ActionGrammar("amount", 4, 0.25, 30.0)
    policy = VLMPolicy.from_pretrained(
        str(ensure_tiny_model()), constrained_actions=True, action_grammar=grammar
    )
    assert policy.trie.max_length > 16
    policy.save_pretrained(tmp_path / "p")
    env_kwargs = {"world_config": "medium", "max_steps": 3, "image_size": [32, 32], "action_space": "text"}
    result = evaluate("policy", checkpoint=tmp_path / "p", env_kwargs=env_kwargs, num_episodes=2, plots=False)
    answers = [output for record in result.episodes for output in record["outputs"]]
    assert answers and all(answer in grammar.answers for answer in answers)


def test_history_sampling_keeps_recent_frames_and_spaces_the_older_ones(tmp_path):
    from agents.policy.prompting import sample_history

    assert sample_history(5, 16, 4) == [0, 1, 2, 3, 4]  # fits: every frame
    assert sample_history(20, 8, 4) == [0, 5, 10, 15, 16, 17, 18, 19]  # 4 spaced from the start + last 4
    assert sample_history(20, 8, 8) == list(range(12, 20))
    policy = VLMPolicy.from_pretrained(str(ensure_tiny_model()), max_images=4, recent_frames=2)
    obs = {**_obs(), "frames": np.stack([np.full((56, 56, 3), i, np.uint8) for i in range(10)])}
    obs["frame_mask"] = np.ones(10, np.int8)
    (prompt,) = policy.prepare([obs])
    assert prompt.image_grid_thw.shape[0] == 4  # 2 spaced older frames + the last 2
    policy.save_pretrained(tmp_path / "p")
    assert VLMPolicy.from_pretrained(str(tmp_path / "p")).config.recent_frames == 2
    with pytest.raises(ValueError, match="sample them: recent_frames"):
        VLMPolicy.from_pretrained(str(ensure_tiny_model()), max_images=4).prepare([obs])
