"""One training iteration side by side on the CPU: our GRPO, our PPO and trl's GRPOTrainer, same work.

    python scripts/bench_train.py                 # default: 8 prompts x 4 generations, 16 new tokens, 5 reps
    python scripts/bench_train.py --variants grpo,trl,trl_compact   # a subset
    python scripts/bench_train.py --quick         # smoke configuration (seconds of work per variant)

Work per iteration, identical for every variant: ``--prompts`` start states x ``--generations`` sampled
completions of at most ``--max-new-tokens`` tokens (no action-constrained decoding: trl has none), each
scored by one ``VLN-v0`` step (the env owns the reward), then one optimizer step on all completions
(minibatch = prompts x generations). Same tiny Qwen2-VL (``agents.policy.tiny``), float32 weights, LoRA r=8 /
alpha=16 on q/k/v/o of the language model (vision tower frozen), AdamW at the same learning rate, no KL
term (trl's default ``beta=0``; ``--kl-coef`` sets both), no gradient checkpointing, the same number of
torch threads. Prompts are the built-in world's: ``vln_gym.world.export_dataset(per_step=True, history=2)``
records with 2 frames at 224x224 + the instruction, loaded by ``VLN-v0`` in record mode (one decision per
episode); trl sees exactly the chat messages ``VLMPolicy`` builds from the same env observations.

- (a) ``grpo``: ``agents.ppo_train`` with ``algo=grpo``, ``num_envs = prompts x generations``,
  ``group_size = generations``.
- (b) ``ppo``: ``agents.ppo_train`` with ``algo=ppo``, ``num_envs = prompts x generations``,
  ``rollout_steps=1`` (value head trained too).
- (c) ``trl``: ``trl.GRPOTrainer`` (``use_vllm=False``), a reward function that resets a ``VLN-v0`` env with
  ``options={"episode_index": i}`` (dataset column) and steps it with the completion text.
- (d) ``trl_compact``: (c) with trl's GPU-style scoring forced. trl 1.x's fused LM head
  (``trl.trainer.utils``) projects only the completion positions (``hidden_states[mask]``) when
  ``_use_triton(device)`` holds (Triton + CUDA/XPU) and every position of prompt + completion otherwise, so
  on the CPU it does several times the LM-head work it does on a GPU. This variant sets
  ``trl.trainer.utils._use_triton`` to ``lambda device: True`` in its own process only; the chunked
  log-prob fold itself (``trl.kernels.chunked_logprob._use_triton``) stays on its torch path. Same values,
  GPU-sized work: the fair reference. Its figures are under ``"trl_compact"`` (``"variants"`` holds the
  frameworks as they run here).

Each variant runs in its own child process (separate peak RSS): setup, one warm-up iteration, then
``--reps`` timed iterations. The parent interleaves the children rep by rep (a b c, c b a, ...), so slow
drift of the shared machine hits every variant alike; a child waits idle while another is timed. An
iteration's wall time runs from the parent's go signal to the end of the optimizer step (trl: its
``on_step_end`` callback; ours: the per-iteration metrics row), so it includes data loading and
bookkeeping; its CPU time is the child's ``time.process_time()`` over the same span (every thread of that
process, nothing of the others), and its context switches tell what the rest of the wall time was: waits
(voluntary: I/O, locks) or preemptions (the shared machine's other processes). Figures: samples/s and
generated tokens/s (medians over reps), CPU seconds per iteration, ratios a/c, b/c, a/d on wall time and
on CPU time, peak RSS per child, and the time split of each iteration:

- ours (``ppo_train``'s own timers): generation (``VLMPolicy.generate`` incl. the processor), env
  (vector-env steps incl. autoreset), scoring (reference log-probs + bootstrap values), update (PPO epochs);
- trl (timers wrapped around its methods): generation (``_generate`` incl. tokenising / image
  processing), env (the reward function), scoring (the rest of ``_generate_and_score_completions``: the
  processor re-run for the loss forward, advantages), data (``get_batch_samples``: dataset rows with
  their images), update (the rest: loss forward + backward + optimizer step);
- other = iteration wall time minus the parts.

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import limit_threads, peak_rss_mb, print_result, summary

VARIANTS = ("grpo", "ppo", "trl", "trl_compact")
REFERENCES = ("trl_compact",)  # reported beside the frameworks, not among them
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# ---------------------------------------------------------------- shared configuration
def bench_dataset(out_dir: Path, records: int, seed: int) -> Path:
    """Built-in-world per-step records with 2 frames each (step 0 of a path has only 1: dropped)."""
    from vln_gym.world import export_dataset

    kept: list[str] = []
    episodes = 2
    while len(kept) < records:
        source = export_dataset(out_dir / f"world-{episodes}", episodes, seed, per_step=True, history=2)
        lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if len(json.loads(line)["images"]) == 2]
        episodes *= 2
    # Spread the kept records over all trajectories (every k-th), so prompts differ in instruction and view.
    step = len(kept) // records
    chosen = kept[::step][:records]
    path = source.parent / "bench.jsonl"
    path.write_text("".join(line + "\n" for line in chosen), encoding="utf-8")
    return path


def env_kwargs(data: Path) -> dict[str, Any]:
    return {
        "data_files": str(data),
        "action_space": "text",
        "history_frames": 2,
        "image_size": [224, 224],
        "max_steps": 1,
    }


# ---------------------------------------------------------------- child side: pacing protocol
def context_switches() -> tuple[int, int]:
    """This process's (voluntary, involuntary) context switches so far: it waited (I/O, a lock, a sleep) or
    the scheduler took the core away (another process wanted it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw, usage.ru_nivcsw


class Pacer:
    """Child end of the protocol: wait for ``go`` on stdin, report one JSON line per iteration on the saved
    stdout (everything else the child prints goes to stderr)."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations
        self.done = 0
        self.started = 0.0
        self.cpu_started = 0.0
        self.switches_started = (0, 0)
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # stray prints (tqdm, trl, transformers) go to the child's log, not the protocol

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def wait(self) -> None:
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise SystemExit(f"bench child: expected 'go' from the parent, got {line!r}")
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.switches_started = context_switches()

    def report(self, figures: dict[str, Any]) -> None:
        wall = time.perf_counter() - self.started
        cpu = time.process_time() - self.cpu_started
        (voluntary, involuntary), (voluntary_0, involuntary_0) = context_switches(), self.switches_started
        waits, preempted = voluntary - voluntary_0, involuntary - involuntary_0
        self.done += 1
        self.send(
            {
                "iteration": self.done,
                "wall_s": wall,
                "cpu_s": cpu,
                "waits": waits,
                "preemptions": preempted,
                "peak_rss_mb": peak_rss_mb(),
                **figures,
            }
        )
        if self.done < self.iterations:
            self.wait()


def run_ours(args: argparse.Namespace, pacer: Pacer) -> None:
    """Our trainer (``agents.ppo_train``) unchanged; its per-iteration metrics row paces the run."""
    import agents.ppo_train as trainer
    from agents.policy.tiny import ensure_tiny_model

    completions = args.prompts * args.generations
    config = trainer.PPOConfig(
        output_dir=str(Path(args.workdir) / f"run-{args.child}"),
        num_iterations=args.reps + 1,
        num_envs=completions,
        seed=args.seed,
        algo=args.child,
        save_every=0,
        model_name_or_path=str(ensure_tiny_model()),
        env_kwargs=env_kwargs(Path(args.data)),
        use_lora=True,
        freeze_vision=True,
        lora_r=8,
        lora_alpha=16,
        sft_steps=0,
        constrained_actions=False,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        rollout_steps=1,
        group_size=args.generations,
        grpo_rounds=1,
        ppo_epochs=1,
        minibatch_size=completions,
        grad_accum=1,
        lr=args.lr,
        lr_schedule="constant",
        kl_coef=args.kl_coef,
        max_grad_norm=1.0,
        tensorboard=False,
        progress=False,
    )

    def on_iteration(metrics: dict[str, Any]) -> None:  # once per iteration, after the update
        pacer.report(
            {
                "samples": metrics["rollout/decisions"],
                "generated_tokens": metrics["rollout/generated_tokens"],
                "split": {
                    "generation": metrics["time/generate"],
                    "scoring": metrics["time/reference"] + metrics["time/bootstrap_values"],
                    "env": metrics["time/env"],
                    "update": metrics["time/update"],
                },
                "reward_mean": metrics["reward/mean"],
            }
        )

    pacer.send({"ready": True})
    pacer.wait()
    trainer.ppo_train(config, on_iteration=on_iteration)


def trl_dataset(data: Path):
    """One row per env record: the chat messages VLMPolicy builds, the 2 frames, the episode index."""
    from agents.integrations.trl import vln_prompt_dataset

    return vln_prompt_dataset(env_kwargs(data))


class TimedEnvReward:
    """`agents.integrations.trl.EnvReward` that also counts its wall time and the generated tokens."""

    __name__ = "vln_env_reward"

    def __init__(self, data: Path) -> None:
        from agents.integrations.trl import EnvReward

        self.reward = EnvReward(env_kwargs(data))
        self.seconds = 0.0
        self.tokens = 0

    def __call__(self, prompts, completions, completion_ids, episode_index, **kwargs) -> list[float]:
        start = time.perf_counter()
        rewards = self.reward(prompts, completions, episode_index)
        self.tokens += sum(len(ids) for ids in completion_ids)
        self.seconds += time.perf_counter() - start
        return rewards


def timed(method: Callable, totals: dict[str, float], key: str) -> Callable:
    """``method`` that adds its wall time to ``totals[key]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


def force_compact_scoring() -> None:
    """Make trl score only the completion positions, as it does on a Triton GPU (see variant (d))."""
    import trl.trainer.utils as trl_utils

    if not callable(getattr(trl_utils, "_use_triton", None)):
        raise SystemExit(
            "trl_compact: trl.trainer.utils._use_triton is gone (trl changed how it picks compact scoring); "
            "find the new switch in trl's fused LM head before comparing"
        )
    trl_utils._use_triton = lambda device: True


def run_trl(args: argparse.Namespace, pacer: Pacer) -> None:
    """trl's GRPOTrainer on the same model, prompts, counts and LoRA; the env reward: ``TimedEnvReward``."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.policy.model import _lora_target
    from agents.policy.tiny import ensure_tiny_model

    if args.child == "trl_compact":
        force_compact_scoring()
    data = Path(args.data)
    model_path = ensure_tiny_model()
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    reward = TimedEnvReward(data)
    config = GRPOConfig(
        output_dir=str(Path(args.workdir) / "run-trl"),
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        max_steps=args.reps + 1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.kl_coef,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_grad_norm=1.0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_vllm=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    totals = {"generate": 0.0, "prepare": 0.0, "data": 0.0}

    class PaceCallback(TrainerCallback):
        def __init__(self) -> None:
            self.last = {"generate": 0.0, "prepare": 0.0, "data": 0.0, "env": 0.0, "tokens": 0}

        def on_step_end(self, _args, state, control, **kwargs):
            now = {**totals, "env": reward.seconds, "tokens": reward.tokens}
            delta = {k: now[k] - self.last[k] for k in now}
            self.last = now
            wall = time.perf_counter() - pacer.started
            pacer.report(
                {
                    "samples": args.prompts * args.generations,
                    "generated_tokens": delta["tokens"],
                    "split": {
                        "generation": delta["generate"],
                        "scoring": delta["prepare"] - delta["generate"] - delta["env"],
                        "env": delta["env"],
                        "update": wall - delta["prepare"] - delta["data"],
                        "data": delta["data"],
                    },
                }
            )

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=trl_dataset(data),
        processing_class=processor,
        peft_config=LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=_lora_target(LORA_TARGETS, freeze_vision=True),
            bias="none",
        ),
        callbacks=[PaceCallback()],
    )
    trainer._generate = timed(trainer._generate, totals, "generate")
    trainer._generate_and_score_completions = timed(
        trainer._generate_and_score_completions, totals, "prepare"
    )
    trainer.get_batch_samples = timed(trainer.get_batch_samples, totals, "data")
    pacer.send({"ready": True})
    pacer.wait()
    trainer.train()


def child_main(args: argparse.Namespace) -> int:
    limit_threads(args.threads)
    pacer = Pacer(args.reps + 1)
    if args.child in ("trl", "trl_compact"):
        run_trl(args, pacer)
    else:
        run_ours(args, pacer)
    pacer.send({"done": True, "peak_rss_mb": peak_rss_mb()})
    return 0


# ---------------------------------------------------------------- parent side
class Child:
    """One variant's process: ``go`` on its stdin, JSON reports from its stdout, its stderr in a log file."""

    def __init__(self, variant: str, argv: list[str], workdir: Path) -> None:
        self.variant = variant
        self.log_path = workdir / f"{variant}.log"
        self.log = self.log_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", variant, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )

    def receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(
                f"bench child {self.variant!r} exited (code {self.process.returncode}); log tail:\n{tail}"
            )
        return json.loads(line)

    def go(self) -> dict[str, Any]:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.receive()

    def finish(self) -> float:
        """Wait for the child's final message and its exit; returns its peak RSS (MiB)."""
        done = self.receive()
        if not done.get("done"):
            raise RuntimeError(f"bench child {self.variant!r}: expected done, got {done}")
        self.process.stdin.close()
        if self.process.wait(timeout=120) != 0:
            raise RuntimeError(f"bench child {self.variant!r} exited with {self.process.returncode}")
        return float(done["peak_rss_mb"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def variant_figures(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the timed reps (the warm-up report is dropped by the caller)."""
    samples_per_s = [r["samples"] / r["wall_s"] for r in reports]
    cpu = summary([r["cpu_s"] for r in reports]) if all("cpu_s" in r for r in reports) else None
    tokens_per_s = [r["generated_tokens"] / r["wall_s"] for r in reports]
    wall = summary([r["wall_s"] for r in reports])
    split = {key: summary([r["split"][key] for r in reports])["median"] for key in reports[0]["split"]}
    split["other"] = max(wall["median"] - sum(split.values()), 0.0)
    return {
        "samples_per_iteration": reports[0]["samples"],
        "iteration_s": wall,
        "samples_per_s": summary(samples_per_s)["median"],
        "samples_per_s_range": [min(samples_per_s), max(samples_per_s)],
        "cpu_s": cpu,
        "samples_per_cpu_s": None if cpu is None else reports[0]["samples"] / cpu["median"],
        **{
            f"{name}_per_iteration": summary([r[name] for r in reports])["median"]
            for name in ("waits", "preemptions")
            if all(name in r for r in reports)
        },
        "generated_tokens_per_s": summary(tokens_per_s)["median"],
        "generated_tokens_per_iteration": summary([r["generated_tokens"] for r in reports])["median"],
        "split_s": split,
        "split_share": {k: v / wall["median"] for k, v in split.items()},
    }


def ratios(measured: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Ours over each trl variant measured: samples/s (wall), CPU seconds per iteration (trl's / ours, so
    higher is better for ours too) and peak RSS (ours / trl's, lower is better)."""
    result: dict[str, float] = {}
    for theirs in ("trl", "trl_compact"):
        for ours in ("grpo", "ppo"):
            if theirs not in measured or ours not in measured:
                continue
            a, c = measured[ours], measured[theirs]
            result[f"ratio_{ours}_over_{theirs}"] = a["samples_per_s"] / c["samples_per_s"]
            result[f"cpu_ratio_{ours}_over_{theirs}"] = c["cpu_s"]["median"] / a["cpu_s"]["median"]
            result[f"rss_ratio_{ours}_over_{theirs}"] = a["peak_rss_mb"] / c["peak_rss_mb"]
    return result


def parent_main(args: argparse.Namespace) -> int:
    limit_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}, choose from {list(VARIANTS)}")
    from agents.policy.tiny import ensure_tiny_model

    ensure_tiny_model()  # build once here, not concurrently in the children
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        workdir = Path(tmp)
        data = bench_dataset(workdir / "data", args.records, args.seed)
        print(f"dataset: {data} ({args.records} records, 2 frames each)")
        shared = [
            "--data", str(data), "--workdir", str(workdir), "--prompts", str(args.prompts),
            "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens),
            "--reps", str(args.reps), "--threads", str(args.threads), "--lr", str(args.lr),
            "--kl-coef", str(args.kl_coef), "--seed", str(args.seed),
        ]  # fmt: skip
        children = {v: Child(v, shared, workdir) for v in variants}
        reports: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        peaks: dict[str, float] = {}
        try:
            for child in children.values():
                ready = child.receive()
                if not ready.get("ready"):
                    raise RuntimeError(f"bench child {child.variant!r}: expected ready, got {ready}")
            for rep in range(args.reps + 1):
                order = variants if rep % 2 == 0 else variants[::-1]
                for variant in order:
                    report = children[variant].go()
                    label = "warm-up" if rep == 0 else f"rep {rep}"
                    print(
                        f"{variant:>4} {label:>7}: {report['wall_s']:.3f} s, {report['samples']} samples, "
                        f"{report['generated_tokens']} tokens, split "
                        + ", ".join(f"{k} {v:.3f}" for k, v in report["split"].items()),
                        flush=True,
                    )
                    reports[variant].append(report)
                    if rep == args.reps:  # let it exit (and free the CPU) before the next variant runs
                        peaks[variant] = children[variant].finish()
        finally:
            for child in children.values():
                child.close()
    measured = {v: {**variant_figures(reports[v][1:]), "peak_rss_mb": peaks[v]} for v in variants}
    figures = {v: f for v, f in measured.items() if v not in REFERENCES}
    result: dict[str, Any] = {
        "benchmark": "bench_train",
        "config": {
            "prompts": args.prompts,
            "generations": args.generations,
            "max_new_tokens": args.max_new_tokens,
            "minibatch": args.prompts * args.generations,
            "reps": args.reps,
            "warmup": 1,
            "threads": args.threads,
            "kl_coef": args.kl_coef,
            "model": "tiny Qwen2-VL (agents.policy.tiny), float32, LoRA r=8 alpha=16 q/k/v/o",
            "frames": "2 x 224x224",
        },
        "variants": figures,
        **{v: measured[v] for v in REFERENCES if v in measured},
    }
    result.update(ratios(measured))
    if "grpo" in figures:
        result["env_share_grpo"] = figures["grpo"]["split_share"]["env"]
    result["total_s"] = time.perf_counter() - started
    print()
    for variant, fig in measured.items():
        print(
            f"{variant:>11}: {fig['samples_per_s']:.2f} samples/s, "
            f"{fig['generated_tokens_per_s']:.1f} tokens/s, "
            f"iteration {fig['iteration_s']['median']:.3f} s (CPU {fig['cpu_s']['median']:.3f} s), "
            f"{fig.get('waits_per_iteration', 0):.0f} waits / "
            f"{fig.get('preemptions_per_iteration', 0):.0f} preemptions per iteration, "
            f"peak RSS {fig['peak_rss_mb']:.0f} MiB, split "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in fig["split_share"].items())
        )
    for key, value in result.items():
        if key.startswith(("ratio_", "cpu_ratio_", "rss_ratio_")) or key == "env_share_grpo":
            print(f"{key}: {value:.3f}")
    print_result(result)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="start states per iteration")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (GRPO group)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5, help="timed iterations per variant (after 1 warm-up)")
    parser.add_argument("--records", type=int, default=64, help="built-in-world records in the prompt pool")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--kl-coef", type=float, default=0.0, help="KL weight (ours kl_coef, trl beta)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sets 2 prompts x 2 generations, 4 tokens, 1 rep, 8 records",
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.generations, args.max_new_tokens, args.reps, args.records = 2, 2, 4, 1, 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
