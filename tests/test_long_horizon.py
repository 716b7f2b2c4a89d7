"""Episodes that span PPO iterations, exact resume with episodes in flight, GRPO from mid-episode states, and
the env pool / runner that step only live envs."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_ppo_train import MECHANICS, decision

from agents.ppo_train import PPOConfig, ppo_train
from agents.train.batch import grpo_targets, ppo_targets
from agents.train.envpool import make_env_pool
from agents.train.rollout import Decision, collect_grpo, collect_ppo
from agents.train.runner import EpisodeRunner

torch.set_num_threads(1)
# Short goals (1-4 m), so a 10-decision budget reaches them (PPOConfig refuses budgets that cannot).
WORLD = {
    "action_space": "text",
    "image_size": [32, 32],
    "world_episodes": 16,
    "history_frames": 2,
    "world_config": {"min_path_length": 1.0, "max_path_length": 4.0},
}


class NoStop(gym.ActionWrapper):
    """Any answer that would STOP turns left instead, so episodes run to their step limit."""

    def action(self, action: str) -> str:
        return "turn left" if "stop" in action.lower() else action


def no_stop_env(**kwargs):
    return NoStop(gym.make("VLN-v0", **kwargs))


if "NoStopVLN-v0" not in gym.registry:
    gym.register("NoStopVLN-v0", entry_point=no_stop_env)


@pytest.fixture(scope="module")
def policy():
    from agents.policy.model import VLMPolicy
    from agents.ppo_train import resolve_model_path

    return VLMPolicy.from_pretrained(resolve_model_path("tiny"), constrained_actions=True, seed=0)


class Scripted:
    """An actor answering a fixed action per env index."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def act(self, indices, observations, infos):
        self.calls.append(list(indices))
        return [(self.answers[i], i) for i in indices]


# ---------------------------------------------------------------- pool and runner
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_runner_steps_only_live_envs(mode):
    pool = make_env_pool("VLN-v0", WORLD, 2, mode)
    try:
        runner = EpisodeRunner(pool)
        runner.reset({0: (1, None), 1: (1, None)})
        assert runner.infos[0]["episode_id"] == runner.infos[1]["episode_id"]  # same seed, same episode
        actor = Scripted({0: "stop", 1: "move forward"})
        steps, ends = runner.step(actor)
        assert [s.terminated for s in steps] == [True, False] and [e.env_index for e in ends] == [0]
        assert "metrics" in steps[0].info and steps[0].info["actions"] == (0,)
        before = pool.get_state([0])[0]
        runner.step(actor)
        assert actor.calls[-1] == [1]  # the finished env is asked nothing and stepped not at all
        assert pool.get_state([0])[0]["steps"] == before["steps"] == 1
        assert pool.get_state([1])[1]["steps"] == 2
        with pytest.raises(RuntimeError, match="finished envs"):
            runner.step(actor, [0])
    finally:
        pool.close()


def test_async_workers_leave_ctrl_c_to_the_parent():
    """A terminal's Ctrl-C reaches every process of the group: the workers ignore it (each printed a
    traceback and died) and the parent, which closes the pool, decides."""
    import os
    import signal

    pool = make_env_pool("VLN-v0", WORLD, 1, "async")
    try:
        os.kill(pool._processes[0].pid, signal.SIGINT)
        assert pool.reset({0: (0, None)})[0][1]["episode_id"]  # the worker is alive and answers
    finally:
        pool.close()


def test_async_pool_reports_the_worker_error():
    from agents.train.envpool import EnvPoolError

    pool = make_env_pool("VLN-v0", WORLD, 1, "async")
    try:
        pool.reset({0: (0, None)})
        with pytest.raises(EnvPoolError, match=r"env 0 \(worker process\): ValueError: options"):
            pool.reset({0: (0, {"episode_index": 10_000})})
    finally:
        pool.close()


# ---------------------------------------------------------------- PPO across iterations
def test_ppo_episode_spans_five_rollouts(policy):
    """max_steps 40, rollout_steps 8: one episode continues through 5 rollouts and truncates in the fifth;
    every cut bootstraps, the truncation bootstraps, nothing is reset in between."""
    pool = make_env_pool("NoStopVLN-v0", {**WORLD, "max_steps": 40}, 1)
    runner = EpisodeRunner(pool)
    generate = {"max_new_tokens": 8}
    ids, steps = [], []
    try:
        for iteration in range(5):
            streams, stats = collect_ppo(policy, runner, 8, generate, seed=0)
            stream = streams[0]
            assert len(stream) == 8 and stats.carried_over == (1 if iteration else 0)
            ids.append({d.info["episode_id"] for d in stream})
            if iteration < 4:
                assert stream[-1].segment_end and not stream[-1].done
                assert stream[-1].bootstrap_value != 0.0
                steps.append(pool.get_state([0])[0]["steps"])
        assert stream[-1].truncated and not stream[-1].terminated and stream[-1].bootstrap_value != 0.0
        assert stats.episode_lengths == [40]
        assert steps == [8, 16, 24, 32]  # decisions 9..40 came from the same episode, never reset
        assert len(set.union(*ids)) == 1
        assert int(runner.episodes_started[0]) == 1
    finally:
        pool.close()


def _decision(value: float, reward: float, **flags) -> Decision:
    return decision([value], reward, **flags)


def test_cut_episode_targets_equal_the_uncut_ones_by_hand():
    """Episode of 4 one-token decisions (values .5 .4 .3 .2, rewards 1 0 0 2, terminated), cut after 2.

    gamma .9, lam 1: the second segment's advantages are those of the uncut rollout (GAE looks forward, and
    the future after the cut is the same); the first segment's are the uncut ones with the tail beyond the
    cut replaced by the bootstrap V(s_2) = .3. With lam 0 (one-step TD) both cuts equal the uncut rollout."""
    values, rewards = [0.5, 0.4, 0.3, 0.2], [1.0, 0.0, 0.0, 2.0]
    uncut = [
        [_decision(v, r, terminated=k == 3) for k, (v, r) in enumerate(zip(values, rewards, strict=True))]
    ]
    first = [[_decision(0.5, 1.0), _decision(0.4, 0.0, segment_end=True, bootstrap=0.3)]]
    second = [[_decision(0.3, 0.0), _decision(0.2, 2.0, terminated=True)]]
    config = PPOConfig(gamma=0.9, lam=1.0)
    reward_tokens = lambda stream: [torch.tensor([d.reward]) for d in stream[0]]  # noqa: E731
    full, _ = ppo_targets(uncut, reward_tokens(uncut), config)
    head, head_returns = ppo_targets(first, reward_tokens(first), config)
    tail, _ = ppo_targets(second, reward_tokens(second), config)
    # by hand: returns of the uncut episode 1 + .9^3 * 2 = 2.458, .9^2 * 2 = 1.62, 1.8, 2
    assert [float(a) for a in full] == pytest.approx([2.458 - 0.5, 1.62 - 0.4, 1.8 - 0.3, 2.0 - 0.2])
    assert [float(a) for a in tail] == pytest.approx([float(full[2]), float(full[3])])
    assert [float(r) for r in head_returns] == pytest.approx([1.0 + 0.81 * 0.3, 0.9 * 0.3])
    assert [float(a) for a in head] == pytest.approx([1.0 + 0.81 * 0.3 - 0.5, 0.9 * 0.3 - 0.4])
    td = PPOConfig(gamma=0.9, lam=0.0)
    full_td = ppo_targets(uncut, reward_tokens(uncut), td)[0]
    cut_td = (
        ppo_targets(first, reward_tokens(first), td)[0] + ppo_targets(second, reward_tokens(second), td)[0]
    )
    assert [float(a) for a in cut_td] == pytest.approx([float(a) for a in full_td])


def _config(tmp_path: Path, **overrides) -> PPOConfig:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "env_id": "NoStopVLN-v0",
        "env_kwargs": {**WORLD, "max_steps": 10},
        "num_envs": 2,
        "rollout_steps": 4,
        "minibatch_size": 4,
        "num_iterations": 4,
        "save_every": 0,
        "progress": False,
        "tensorboard": False,
        "lr": 5e-3,
        **MECHANICS,
    }
    settings.update(overrides)
    return PPOConfig(**settings)


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "tokens_per_s"} for r in rows]


def test_resume_with_episodes_in_flight_is_exact(tmp_path):
    """4 iterations = 2 + resume + 2, metric for metric, while 10-step episodes span 4-step rollouts (the
    resume point cuts episodes in the middle)."""
    ppo_train(_config(tmp_path / "full"))
    split = _config(tmp_path / "split", save_every=2, keep_checkpoints=0)
    ppo_train(split)
    checkpoint = tmp_path / "split" / "run" / "checkpoint-000002"
    assert (checkpoint / "envs-rank0.json").is_file() and (checkpoint / "envs-rank0.npz").is_file()
    saved = json.loads((checkpoint / "envs-rank0.json").read_text())
    assert all(s is not None and s["steps"] == 8 for s in saved["snapshots"])  # both episodes in flight
    ppo_train(_config(tmp_path / "split", resume_from=str(checkpoint)))
    full, resumed = _rows(tmp_path / "full" / "run"), _rows(tmp_path / "split" / "run")
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4]
    assert resumed == full
    assert [r["episode/carried_over"] for r in full] == [0, 2, 2, 2]
    assert full[2]["episode/max_length"] == 10 and full[2]["episode/count"] == 2  # finished after the cut


# ---------------------------------------------------------------- GRPO from mid-episode states
def test_grpo_groups_start_from_one_expert_prefix_state(policy):
    pool = make_env_pool("VLN-v0", {**WORLD, "max_steps": 30}, 4)
    runner = EpisodeRunner(pool)
    try:
        episodes, _ = collect_grpo(
            policy,
            runner,
            [5, 6],
            2,
            {"max_new_tokens": 8},
            start="expert_prefix",
            prefix_steps=[3, 2],
            turn_budget=4,
        )
        firsts = [episode[0] for episode in episodes]
        for g in (0, 1):
            a, b = firsts[2 * g], firsts[2 * g + 1]
            assert a.group == b.group == g
            assert torch.equal(a.prompt.input_ids, b.prompt.input_ids)
            assert torch.equal(a.prompt.pixel_values, b.prompt.pixel_values)  # identical observations
        assert all(1 <= len(episode) <= 4 for episode in episodes)  # the decision budget holds
        # the prefix moved the group away from its reset state: step counts start after the prefix
        states = pool.get_state(range(4))
        assert all(states[i]["steps"] >= len(episodes[i]) + 2 for i in range(4))
        advantages, _ = grpo_targets(episodes, PPOConfig(algo="grpo", group_size=2, num_envs=4))
        per_member, k = [], 0
        for episode in episodes:
            per_member.append(float(advantages[k][0]))
            k += len(episode)
        assert per_member[0] + per_member[1] == pytest.approx(0.0, abs=1e-5)
        assert per_member[2] + per_member[3] == pytest.approx(0.0, abs=1e-5)
    finally:
        pool.close()


def test_grpo_prefix_stops_before_the_experts_stop(policy, vln_ego_trajectory):
    """A prefix longer than the expert's plan replays up to (not including) the expert's STOP: the members
    still have an episode to play, from one state."""
    kwargs = {
        "data_files": str(vln_ego_trajectory),
        "format": "vln-ego",
        "views": "trajectory",
        "action_space": "text",
        "image_size": [32, 32],
    }
    pool = make_env_pool("VLN-v0", kwargs, 2)
    try:
        runner = EpisodeRunner(pool)
        episodes, _ = collect_grpo(
            policy,
            runner,
            [0],
            2,
            {"max_new_tokens": 8},
            start="expert_prefix",
            prefix_steps=[500],
            turn_budget=2,
        )
        assert len(episodes) == 2 and all(episodes)
        assert torch.equal(episodes[0][0].prompt.pixel_values, episodes[1][0].prompt.pixel_values)
    finally:
        pool.close()


def test_grpo_expert_prefix_needs_expert_actions(policy, no_expert_env_kwargs):
    pool = make_env_pool("VLN-v0", no_expert_env_kwargs, 2)
    try:
        with pytest.raises(ValueError, match=r"grpo_start='expert_prefix' \(use grpo_start='reset'"):
            collect_grpo(
                policy,
                EpisodeRunner(pool),
                [0],
                2,
                {"max_new_tokens": 8},
                start="expert_prefix",
                prefix_steps=[2],
            )
    finally:
        pool.close()


def test_grpo_training_from_expert_prefixes(tmp_path):
    config = _config(
        tmp_path,
        env_id="VLN-v0",
        algo="grpo",
        num_envs=4,
        group_size=2,
        num_iterations=1,
        grpo_turn_budget=3,
        grpo_prefix_max=4,
    )
    result = ppo_train(config)
    assert result["optimizer_steps"] >= 1 and np.isfinite(result["loss/policy"])
    assert result["rollout/decisions"] <= 4 * 3
