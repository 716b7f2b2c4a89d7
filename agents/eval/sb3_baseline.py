"""Non-language reference point: stable-baselines3 PPO (``MultiInputPolicy``) on the built-in world.

SB3 cannot consume text, so ``SB3ObservationWrapper`` DROPS the instruction and keeps only the frames
(downsampled to ``size x size`` and stacked along channels, oldest first: ``uint8 [size, size, 3 * history]``,
which SB3 treats as an image and feeds to its NatureCNN) and the frame mask (``float32 [history]``).
The agent therefore sees where it is but not where it is told to go: whatever it learns is
instruction-free exploration, the floor that a language policy has to beat.

Train: ``python -m agents.eval.sb3_baseline --timesteps 20000 --out runs/sb3/ppo.zip``; evaluate like any
agent: ``vln-gym evaluate --agent sb3 --checkpoint runs/sb3/ppo.zip --trust-checkpoint`` (SB3 files unpickle).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

import vln_gym  # noqa: F401  (registers VLN-v0)
from agents.eval.agent import AgentError

DEFAULT_SIZE = 64
# Training world: the env's default built-in world (seed 0); evaluation uses agents.eval.evaluate's
# held-out seed.
DEFAULT_TRAIN_ENV_KWARGS: dict[str, Any] = {"image_size": [DEFAULT_SIZE, DEFAULT_SIZE], "max_steps": 100}
# With no data: the first 200 episodes of the training world (seed 0), cheaper to generate than 1000.
DEFAULT_TRAIN_WORLD: dict[str, Any] = {"world_seed": 0, "world_episodes": 200}


def sb3_observation(obs: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
    """Env observation -> SB3 observation: frames resized to ``size`` and stacked on channels, mask as
    float32; the instruction is dropped."""
    frames = np.asarray(obs["frames"], dtype=np.uint8)
    if frames.shape[1:3] != (size, size):
        frames = np.stack(
            [
                np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))
                for frame in frames
            ]
        )
    stacked = np.ascontiguousarray(frames.transpose(1, 2, 0, 3).reshape(size, size, -1))
    return {"frames": stacked, "frame_mask": np.asarray(obs["frame_mask"], dtype=np.float32)}


class SB3ObservationWrapper(gym.ObservationWrapper):
    """VLN-v0 (discrete actions) -> a Dict space SB3's MultiInputPolicy accepts (see module docstring)."""

    def __init__(self, env: gym.Env, size: int = DEFAULT_SIZE):
        super().__init__(env)
        history = env.observation_space["frames"].shape[0]
        self.size = int(size)
        self.observation_space = spaces.Dict(
            {
                "frames": spaces.Box(0, 255, (self.size, self.size, 3 * history), dtype=np.uint8),
                "frame_mask": spaces.Box(0.0, 1.0, (history,), dtype=np.float32),
            }
        )

    def observation(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return sb3_observation(observation, self.size)


def make_sb3_env(env_kwargs: Mapping[str, Any] | None = None, size: int = DEFAULT_SIZE) -> gym.Env:
    """``VLN-v0`` with discrete actions, wrapped for SB3."""
    kwargs = {**DEFAULT_TRAIN_ENV_KWARGS, **dict(env_kwargs or {}), "action_space": "discrete"}
    if "episodes" not in kwargs and "data_files" not in kwargs:
        kwargs = {**DEFAULT_TRAIN_WORLD, **kwargs}
    return SB3ObservationWrapper(gym.make("VLN-v0", **kwargs), size)


def train_sb3(
    out: str | Path,
    *,
    total_timesteps: int = 20_000,
    env_kwargs: Mapping[str, Any] | None = None,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    n_steps: int = 256,
    verbose: int = 0,
) -> Path:
    """Train ``stable_baselines3.PPO("MultiInputPolicy")`` and save it to ``out`` (a ``.zip``)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = make_sb3_env(env_kwargs, size)
    model = PPO(
        "MultiInputPolicy",
        env,
        n_steps=n_steps,
        batch_size=min(64, n_steps),
        ent_coef=0.01,
        seed=seed,
        verbose=verbose,
        device="cpu",
    )
    model.learn(total_timesteps=total_timesteps)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    env.close()
    return path if path.suffix == ".zip" else path.with_suffix(path.suffix + ".zip")


class SB3Agent:
    """A trained SB3 PPO ``.zip`` as an agent (deterministic actions); image size and history length are
    read from the saved observation space, so the env's history_frames must match the training env's."""

    name = "sb3"
    action_space = "discrete"

    def __init__(self, checkpoint: str | Path, *, trust_checkpoint: bool = False):
        path = Path(checkpoint)
        if not path.is_file():
            raise AgentError(f"{path}: checkpoint not found (expected a stable-baselines3 .zip)")
        if not zipfile.is_zipfile(path):
            raise AgentError(f"{path}: not a stable-baselines3 checkpoint (not a zip file)")
        if not trust_checkpoint:
            raise AgentError(
                f"{path}: stable-baselines3 loads checkpoints with pickle, which runs any code a file holds; "
                "pass --trust-checkpoint (trust_checkpoint=True) only for a file you made or trust"
            )
        from stable_baselines3 import PPO

        try:
            self.model = PPO.load(path, device="cpu")
        except (KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as error:
            raise AgentError(
                f"{path}: cannot load as a stable-baselines3 PPO checkpoint ({error})"
            ) from error
        space = self.model.observation_space
        if not isinstance(space, spaces.Dict) or set(space.spaces) != {"frames", "frame_mask"}:
            raise AgentError(
                f"{path}: checkpoint is for another observation space ({space}), not SB3ObservationWrapper's"
            )
        # SB3 saves image spaces channel-first ([C, H, W]); frames are square, so H is the size either way.
        self.size = int(space["frames"].shape[1])
        self.history = int(space["frame_mask"].shape[0])

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> int:
        if len(obs["frame_mask"]) != self.history:
            given = len(obs["frame_mask"])
            raise AgentError(
                f"sb3 checkpoint was trained with history_frames={self.history}, the env gives {given}"
            )
        action, _ = self.model.predict(sb3_observation(obs, self.size), deterministic=True)
        return int(action)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.eval.sb3_baseline``: train and save the SB3 baseline."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.eval.sb3_baseline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="runs/sb3/ppo.zip", help="where to save the model (.zip)")
    parser.add_argument("--timesteps", type=int, default=20_000, help="total env steps")
    parser.add_argument(
        "--env-kwargs", default="{}", help="JSON gym.make('VLN-v0', ...) kwargs (training world)"
    )
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="frame size fed to the CNN (>= 36)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as error:
        print(f"{parser.prog}: error: --env-kwargs is not JSON ({error.msg})", file=sys.stderr)
        return 2
    path = train_sb3(
        args.out,
        total_timesteps=args.timesteps,
        env_kwargs=env_kwargs,
        size=args.size,
        seed=args.seed,
        verbose=1,
    )
    print(f"saved {path}\nevaluate: vln-gym evaluate --agent sb3 --checkpoint {path} --trust-checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
