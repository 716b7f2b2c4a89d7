"""Perception probe: do a level's frames say where the goal is, beyond what the instruction says?

    python scripts/probe_perception.py [--level easy|medium] [--pairs 8000] [--steps 1500]
        [--world-episodes N] [--eval-episodes 100] [--seed 0]

Outside the VLM policy, three agents act on the level's held-out episodes (world seed 1000, as
``scripts/bench_learning.py`` scores them), all through one straight-line plan per decision: turn towards a
goal estimate in whole turns, walk its distance in whole steps, STOP (one chunked answer of up to 8
actions, replanned at every decision):

- ``true_goal``: the plan from the privileged goal position: what the plan itself can reach;
- ``vision``: a small CNN over the first and the current frame, with a bag of the instruction's words and
  the number of views so far, regressing the goal's position in the agent's frame (privileged labels,
  training only) on (observation, goal) pairs collected along noisy expert paths (10% random moves) in the
  training world seed 0 (``--world-episodes`` of them; the preset's 2000 by default);
- ``blind``: the same network, data and budget, shown black frames: what text and step count alone give.

``vision - blind`` is what perception learns from these frames in this budget; ``true_goal - vision`` is
what it leaves. Figures: success per agent, the RMS error (metres) of each estimate over the held-out
decisions, CPU seconds of collection and of each training. The last output line is one JSON object.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402  (after the thread limits)
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import vln_gym  # noqa: E402, F401  (registers VLN-v0)
from agents import presets  # noqa: E402
from agents.policy.grammar import ActionGrammar  # noqa: E402
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, heading_towards, wrap_angle  # noqa: E402

EXPLORE = 0.1  # chance of a random move while collecting (as the warm start collects)
OPENING_WORDS = 5  # the instruction's first words get features of their own (the opening turn)
BATCH = 64
Estimate = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[float, float]]


def goal_in_agent_frame(info: Mapping[str, Any]) -> tuple[float, float]:
    """The goal's ``(left, forward)`` offset in metres from the agent's pose (privileged ``info``)."""
    delta = wrap_angle(heading_towards(info["agent_position"], info["goal_position"]) - info["agent_heading"])
    (ax, _, az), (gx, _, gz) = info["agent_position"], info["goal_position"]
    distance = math.hypot(gx - ax, gz - az)
    return distance * math.sin(delta), distance * math.cos(delta)


def plan_towards(left: float, forward: float, grammar: ActionGrammar) -> str:
    """The answer that turns towards ``(left, forward)`` in whole turns, walks there in whole steps, stops."""
    turns = round(math.degrees(math.atan2(left, forward)) / grammar.turn_angle)
    steps = max(0, round(math.hypot(left, forward) / grammar.forward_step))
    turn = [TURN_LEFT] * turns if turns > 0 else [TURN_RIGHT] * -turns
    return grammar.encode([*turn, *[MOVE_FORWARD] * steps, STOP])


def two_frames(obs: Mapping[str, Any]) -> np.ndarray:
    """The episode's first and current frames stacked on the channel axis (H x W x 6, uint8)."""
    valid = np.asarray(obs["frames"])[np.asarray(obs["frame_mask"]).astype(bool)]
    return np.concatenate([valid[0], valid[-1]], axis=-1)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@dataclass
class TextFeatures:
    """Bag of words, the opening words apart, and the number of views so far (one-hot)."""

    vocabulary: dict[str, int]
    max_views: int

    def __call__(self, instruction: str, views: int) -> np.ndarray:
        size = len(self.vocabulary)
        out = np.zeros(2 * size + self.max_views, dtype=np.float32)
        for position, word in enumerate(words(instruction)):
            index = self.vocabulary.get(word)
            if index is not None:
                out[index] += 1.0
                if position < OPENING_WORDS:
                    out[size + index] = 1.0
        out[2 * size + min(views, self.max_views) - 1] = 1.0
        return out


@dataclass
class Pairs:
    frames: np.ndarray  # N x H x W x 6 uint8
    texts: list[tuple[str, int]]  # (instruction, views so far)
    goals: np.ndarray  # N x 2 float32: (left, forward) metres


def collect(env_kwargs: dict[str, Any], grammar: ActionGrammar, count: int, seed: int) -> Pairs:
    """``count`` (observation, goal offset) pairs along the expert's answers, a random move at times."""
    env = gym.make("VLN-v0", **env_kwargs)
    rng = np.random.default_rng(seed)
    frames, texts, goals = [], [], []
    episode = 0
    while len(goals) < count:
        obs, info = env.reset(seed=seed * 1_000_003 + episode)
        episode += 1
        done = False
        while not done and len(goals) < count:
            frames.append(two_frames(obs))
            texts.append((obs["instruction"], int(np.asarray(obs["frame_mask"]).sum())))
            goals.append(goal_in_agent_frame(info))
            if rng.random() < EXPLORE:
                answer = grammar.phrase(int(rng.choice([MOVE_FORWARD, TURN_LEFT, TURN_RIGHT])))
            else:
                answer = grammar.encode(info["expert_actions"])
            obs, _, terminated, truncated, info = env.step(answer)
            done = terminated or truncated
    env.close()
    return Pairs(np.stack(frames), texts, np.asarray(goals, dtype=np.float32))


class GoalNet(nn.Module):
    """Frames -> 3 strided convolutions -> 2 x 2 pooled map; text features -> 128; both -> (left, forward)."""

    def __init__(self, text_width: int) -> None:
        super().__init__()
        self.vision = nn.Sequential(
            nn.Conv2d(6, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.text = nn.Sequential(nn.Linear(text_width, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(64 * 4 + 128, 256), nn.ReLU(), nn.Linear(256, 2))

    def forward(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pixels = frames.permute(0, 3, 1, 2).float() / 255.0
        return self.head(torch.cat([self.vision(pixels), self.text(text)], dim=-1))


def train(pairs: Pairs, features: TextFeatures, steps: int, seed: int, blind: bool) -> tuple[GoalNet, float]:
    """A `GoalNet` fitted by ``steps`` AdamW steps of mean squared error; with its CPU seconds."""
    torch.manual_seed(seed)
    started = time.process_time()
    frames = torch.from_numpy(np.zeros_like(pairs.frames) if blind else pairs.frames)
    text = torch.from_numpy(np.stack([features(*t) for t in pairs.texts]))
    goals = torch.from_numpy(pairs.goals)
    net = GoalNet(text.shape[1])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(goals), (BATCH,), generator=generator)
        loss = nn.functional.mse_loss(net(frames[batch], text[batch]), goals[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval(), time.process_time() - started


def net_estimate(net: GoalNet, features: TextFeatures, blind: bool) -> Estimate:
    @torch.no_grad()
    def estimate(obs: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[float, float]:
        frames = two_frames(obs)[None]
        text = features(obs["instruction"], int(np.asarray(obs["frame_mask"]).sum()))[None]
        out = net(torch.from_numpy(np.zeros_like(frames) if blind else frames), torch.from_numpy(text))
        return float(out[0, 0]), float(out[0, 1])

    return estimate


def score(estimate: Estimate, env_kwargs: dict[str, Any], grammar: ActionGrammar) -> dict[str, float]:
    """Success of the straight-line plan from ``estimate`` on every held-out episode, and the estimate's
    RMS error (metres) over the decisions taken."""
    env = gym.make("VLN-v0", **env_kwargs)
    successes, errors = [], []
    for index in range(len(env_kwargs["episodes"])):
        obs, info = env.reset(options={"episode_index": index})
        done = False
        while not done:
            left, forward = estimate(obs, info)
            errors.append(math.dist((left, forward), goal_in_agent_frame(info)))
            obs, _, terminated, truncated, info = env.step(plan_towards(left, forward, grammar))
            done = terminated or truncated
        successes.append(float(info["success"]))
    env.close()
    return {"success": float(np.mean(successes)), "rms_error_m": float(np.sqrt(np.mean(np.square(errors))))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=sorted(presets.LEVEL_ENV_KWARGS), default="easy")
    parser.add_argument("--pairs", type=int, default=8000, help="training (observation, goal) pairs")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each network")
    parser.add_argument(
        "--world-episodes", type=int, help="training world's episodes (default: the preset's)"
    )
    parser.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_kwargs = presets.level_env_kwargs(args.level)
    if args.world_episodes:
        train_kwargs["world_episodes"] = args.world_episodes
    grammar = ActionGrammar("amount", 8, train_kwargs["forward_step"], train_kwargs["turn_angle"])
    heldout = presets.heldout_env_kwargs(args.eval_episodes, level=args.level)
    started = time.process_time()
    pairs = collect(train_kwargs, grammar, args.pairs, args.seed)
    collect_s = time.process_time() - started
    vocabulary = sorted({word for text, _ in pairs.texts for word in words(text)})
    features = TextFeatures({word: i for i, word in enumerate(vocabulary)}, int(train_kwargs["max_steps"]))
    figures: dict[str, Any] = {
        "level": args.level,
        "pairs": args.pairs,
        "steps": args.steps,
        "world_episodes": train_kwargs["world_episodes"],
        "eval_episodes": args.eval_episodes,
        "seed": args.seed,
        "collect_cpu_s": round(collect_s, 1),
    }
    agents: dict[str, Estimate] = {"true_goal": lambda obs, info: goal_in_agent_frame(info)}
    for name, blind in (("vision", False), ("blind", True)):
        net, seconds = train(pairs, features, args.steps, args.seed, blind)
        agents[name] = net_estimate(net, features, blind)
        figures[f"{name}_train_cpu_s"] = round(seconds, 1)
    for name, estimate in agents.items():
        result = score(estimate, heldout, grammar)
        figures.update({f"{name}_{key}": round(value, 3) for key, value in result.items()})
        print(f"{name:10s} success {result['success']:.3f}  RMS error {result['rms_error_m']:.2f} m")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
