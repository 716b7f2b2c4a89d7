"""Supervised warm start on the built-in world's expert answers (as VLN-R1 does before RL).

The expert's next action (``info["expert_actions"][0]``, privileged, never in the observation) labels the
observation the agent sees at that moment. `collect_expert_pairs` walks episodes along the expert's path;
with ``explore > 0`` it sometimes takes a random move instead (the label stays the expert's action at the
pose reached), so the data also covers poses off the expert's path, where a learned policy ends up
(DAgger-style state coverage). `supervised_warm_start` then minimises the mean token NLL of the expert's
answer text (its next action as a word, or with an `ActionGrammar` a chunk of its next actions) for a
number of shuffled passes, and `expert_accuracy` measures how often greedy decoding answers the expert's
actions on pairs from other (held-out) worlds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.train import ppo
from agents.train.envpool import EnvPool
from agents.train.runner import EpisodeRunner, ExpertActor
from vln_gym.actions import format_action, parse_action

ScoreFn = Callable[[Sequence[Any], Sequence[torch.Tensor]], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class ExpertPair:
    """One supervised sample: what the agent saw, the expert's next action there, and the expert's answer
    (default: that action as a word; with an action grammar, a chunk of the expert's next actions)."""

    observation: dict[str, Any]
    action: int
    answer: str = ""

    def __post_init__(self) -> None:
        if not self.answer:
            object.__setattr__(self, "answer", format_action(int(self.action)))


@dataclass
class SFTReport:
    """What a warm start did: losses per step, and held-out figures before / after when measured."""

    steps: int
    samples: int
    losses: list[float] = field(default_factory=list)
    heldout_loss_before: float | None = None
    heldout_loss_after: float | None = None
    heldout_accuracy_before: float | None = None
    heldout_accuracy_after: float | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | None]:
        """Flat figures for logs (``sft/...`` keys)."""
        return {
            "sft/steps": self.steps,
            "sft/samples": self.samples,
            "sft/loss_first": self.losses[0] if self.losses else None,
            "sft/loss_last": self.losses[-1] if self.losses else None,
            "sft/heldout_loss_before": self.heldout_loss_before,
            "sft/heldout_loss_after": self.heldout_loss_after,
            "sft/heldout_accuracy_before": self.heldout_accuracy_before,
            "sft/heldout_accuracy_after": self.heldout_accuracy_after,
            "sft/seconds": self.seconds,
        }


def collect_expert_pairs(
    pool: EnvPool,
    count: int,
    *,
    seeds: Sequence[int],
    explore: float = 0.0,
    rng: np.random.Generator | None = None,
    encode: Callable[[Sequence[int]], str] | None = None,
) -> list[ExpertPair]:
    """``count`` (observation, expert action) pairs from a text-action env pool, on the episode runner.

    Env ``i`` starts its first episode with ``seeds[i]`` and later ones from its own RNG; each step, each
    env's pair is recorded and the env then takes the expert's action, or with probability ``explore`` a
    random move (never STOP). ``encode`` turns the expert's plan into its answer (`ActionGrammar.encode`;
    default: the next action as a word). Raises ``ValueError`` when the env does not report
    ``info["expert_actions"]`` (dataset modes without expert actions).
    """
    if len(seeds) != pool.num_envs:
        raise ValueError(f"{len(seeds)} seeds for {pool.num_envs} envs")
    actor = ExpertActor(
        explore,
        np.random.default_rng(0) if rng is None else rng,
        needed_by="the supervised warm start (sft_steps > 0; --sft_steps 0 for data without expert actions)",
        encode=encode,
    )
    runner = EpisodeRunner(pool)
    pairs: list[ExpertPair] = []
    while len(pairs) < count:
        idle = [i for i in range(pool.num_envs) if not runner.live[i]]
        runner.reset({i: (None if runner.episodes_started[i] else int(seeds[i]), None) for i in idle})
        steps, _ = runner.step(actor)
        pairs.extend(ExpertPair(step.observation, *step.output) for step in steps)
    return pairs[:count]


def answer_ids(policy, answer: int | str) -> torch.Tensor:
    """Token ids of an answer text (an action id: its word), ending with the policy's end token."""
    text = format_action(int(answer)) if isinstance(answer, int) else answer
    tokens = policy.processor.tokenizer.encode(text, add_special_tokens=False)
    return torch.tensor([*tokens, policy.eos_token_id], dtype=torch.long)


def nll(score: ScoreFn, prompts: Sequence[Any], answers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean token negative log-likelihood of ``answers`` (the value head joins the graph at weight 0, so
    DDP sees every trainable parameter used)."""
    logprobs, _, values, mask = score(prompts, answers)
    return -ppo.masked_mean(logprobs.float(), mask.to(logprobs.device)) + 0.0 * values.float().sum()


@torch.no_grad()
def heldout_loss(policy, pairs: Sequence[ExpertPair], batch_size: int = 32) -> float:
    """Token-weighted mean NLL of the expert answers over all pairs (no grad, eval mode)."""
    was_training = policy.training
    policy.eval()
    total = tokens = 0.0
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            prompts = policy.prepare([p.observation for p in chunk])
            out = policy.evaluate(prompts, [answer_ids(policy, p.answer) for p in chunk])
            mask = out.mask.to(out.logprobs.device).float()
            total += float(-(out.logprobs.float() * mask).sum())
            tokens += float(mask.sum())
    finally:
        policy.train(was_training)
    return total / max(tokens, 1.0)


@torch.no_grad()
def expert_accuracy(policy, pairs: Sequence[ExpertPair], batch_size: int = 32) -> float:
    """Fraction of pairs where the policy's greedy answer parses to exactly the expert answer's actions."""
    grammar = policy.grammar
    units = {"forward_step": grammar.forward_step, "turn_angle": grammar.turn_angle}
    longest = max(8, policy.trie.max_length)
    hits = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        texts = policy.generate([p.observation for p in chunk], do_sample=False, max_new_tokens=longest).texts
        for text, pair in zip(texts, chunk, strict=True):
            parsed = parse_action(text, **units)
            hits += int(parsed.valid and parsed.actions == parse_action(pair.answer, **units).actions)
    return hits / max(len(pairs), 1)


def supervised_warm_start(
    policy,
    pairs: Sequence[ExpertPair],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    max_grad_norm: float = 1.0,
    heldout: Sequence[ExpertPair] | None = None,
    score: ScoreFn | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> SFTReport:
    """``steps`` AdamW steps (cosine-decayed ``lr``) on minibatches of ``batch_size`` pairs, drawn in
    shuffled passes over ``pairs``; only the model's trainable weights move (not the value head).

    ``score(prompts, answers) -> (logprobs, entropy, values, mask)`` defaults to ``policy.evaluate``
    (pass a DDP-wrapped scorer under accelerate, with ``backward = accelerator.backward``). With
    ``heldout`` pairs, the report holds their loss and greedy expert-action accuracy before and after.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not pairs:
        raise ValueError("supervised_warm_start: no expert pairs")
    started = time.perf_counter()
    if score is None:

        def score(prompts, answers):
            out = policy.evaluate(prompts, answers)
            return out.logprobs, out.entropy, out.values, out.mask

    backward = backward or (lambda loss: loss.backward())
    answers = {text: answer_ids(policy, text) for text in {pair.answer for pair in pairs}}
    report = SFTReport(steps=steps, samples=len(pairs))
    if heldout:
        report.heldout_loss_before = heldout_loss(policy, heldout, batch_size)
        report.heldout_accuracy_before = expert_accuracy(policy, heldout, batch_size)
    value_ids = {id(p) for p in policy.value_head_parameters()}
    params = [p for p in policy.trainable_parameters() if id(p) not in value_ids]
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / steps, 1.0)))
    )
    generator = torch.Generator().manual_seed(int(seed))
    order: list[int] = []
    policy.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(pairs), generator=generator).tolist()
        index, order = order[:batch_size], order[batch_size:]
        batch = [pairs[i] for i in index]  # prepared per step: caching every prompt's pixels costs GBs
        prompts = policy.prepare([p.observation for p in batch])
        loss = nll(score, prompts, [answers[p.answer] for p in batch])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"supervised warm start: loss is {float(loss)} at step {step}")
        backward(loss)
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        report.losses.append(float(loss.detach()))
        if log is not None and (step + 1) % max(1, steps // 5) == 0:
            log(f"SFT step {step + 1}/{steps}: loss {report.losses[-1]:.3f}")
    policy.eval()
    if heldout:
        report.heldout_loss_after = heldout_loss(policy, heldout, batch_size)
        report.heldout_accuracy_after = expert_accuracy(policy, heldout, batch_size)
    report.seconds = time.perf_counter() - started
    return report


def pairs_summary(pairs: Sequence[ExpertPair]) -> Mapping[int, int]:
    """Count of each expert action among ``pairs`` (for logs: the class balance of the data)."""
    counts = {a: 0 for a in range(4)}
    for pair in pairs:
        counts[pair.action] += 1
    return counts
