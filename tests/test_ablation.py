"""Unimodal ablations (agents.eval.ablation): what the agent sees, the sharing of batched agents, the wiring
through evaluate() and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from agents.eval.ablation import Ablated, ablate_observation, ablated_factory
from agents.eval.agent import AgentError
from agents.eval.evaluate import evaluate, main


class Recorder:
    """Remembers each observation; moves forward while its current view has any non-black pixel."""

    name = "recorder"
    action_space = "discrete"

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, obs, info) -> int:
        self.seen.append(obs)
        current = np.asarray(obs["frames"])[np.asarray(obs["frame_mask"]).astype(bool)][-1]
        return 1 if current.any() else 0


def observation() -> dict:
    frames = np.full((3, 4, 4, 3), 7, dtype=np.uint8)
    return {"frames": frames, "frame_mask": np.array([0, 1, 1], dtype=np.int8), "instruction": "go left"}


def test_frames_ablation_blacks_out_frames_and_keeps_mask_shape_and_instruction():
    obs = observation()
    out = ablate_observation(obs, "frames")
    assert out["frames"].shape == obs["frames"].shape and out["frames"].dtype == np.uint8
    assert not out["frames"].any()
    assert np.array_equal(out["frame_mask"], obs["frame_mask"]) and out["instruction"] == "go left"
    assert obs["frames"].all()  # the caller's observation is left as it was


def test_instruction_ablation_empties_only_the_instruction():
    obs = observation()
    out = ablate_observation(obs, "instruction")
    assert out["instruction"] == "" and obs["instruction"] == "go left"
    assert np.array_equal(out["frames"], obs["frames"])


def test_unknown_ablation_is_refused_naming_the_known_ones():
    with pytest.raises(AgentError, match="frames, instruction"):
        Ablated(Recorder(), "pixels")
    with pytest.raises(AgentError, match="unknown ablation 'pixels'"):
        evaluate("oracle", num_episodes=1, ablate="pixels")


def test_ablated_agent_passes_the_stripped_observation_and_keeps_batching():
    inner = Recorder()
    agent = Ablated(inner, "frames")
    assert agent.name == "recorder (no frames)" and agent.action_space == "discrete"
    assert agent.act(observation(), {}) == 0  # black frames: the recorder stops
    assert not inner.seen[0]["frames"].any()
    assert not hasattr(agent, "act_batch")  # the recorder has none

    class Batched(Recorder):
        def act_batch(self, observations, infos):
            return [self.act(o, i) for o, i in zip(observations, infos, strict=True)]

    batched = Ablated(Batched(), "instruction")
    assert batched.act_batch([observation(), observation()], [{}, {}]) == [1, 1]
    assert [o["instruction"] for o in batched.agent.seen] == ["", ""]


def test_factory_keeps_a_shared_agent_shared_and_separate_ones_separate():
    shared = Recorder()
    make = ablated_factory(lambda _index: shared, "frames")
    assert make(0) is make(1) and make(0).agent is shared
    separate = ablated_factory(lambda _index: Recorder(), "frames")
    assert separate(0) is not separate(1)


def test_evaluate_runs_the_agent_without_its_frames():
    seeing = evaluate(Recorder(), num_episodes=3, plots=False)
    blind = evaluate(Recorder(), num_episodes=3, plots=False, ablate="frames")
    assert blind.metrics["agent"] == "recorder (no frames)"
    assert all(record["actions"] == [0] for record in blind.episodes)  # stops at once
    assert all(record["metrics"]["trajectory_length"] > 0.0 for record in seeing.episodes)


def test_cli_rejects_an_unknown_ablation_in_one_line(capsys):
    assert main(["--agent", "oracle", "--ablate", "pixels"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ablate" in err[0]
