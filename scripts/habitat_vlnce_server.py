"""Serve Habitat VLN-CE (R2R-CE / RxR-CE) to vln-gym trainers over the env protocol. Python 3.8.

Runs where habitat-sim 0.1.7 / habitat-lab 0.1.7 are installed (their Python 3.8 env, usually with the
VLN-CE repo's ``habitat_extensions`` on the path); needs only this file, ``envserver.py`` copied next
to it (from ``vln_gym/remote/``) and numpy. The trainer connects with
``gym.make("VLN-v0", server="HOST:PORT", token=...)``::

    python habitat_vlnce_server.py --config VLN-CE/habitat_extensions/config/vlnce_task.yaml \\
        --split val_seen --port 5555 [--host 0.0.0.0 --token SECRET] [--history-frames 2]

Mapping (VLN-CE's task, our names): actions 0 STOP, 1 MOVE_FORWARD, 2 TURN_LEFT, 3 TURN_RIGHT; the
``rgb`` sensor's frames, newest last, in a ``history_frames`` window with a mask; the episode's
instruction text; ``info`` holds the agent's position, its heading (radians about +y from the agent
rotation's quaternion, ``2 atan2(y, w)``, as ``vln_gym.data.habitat`` reads ``start_rotation``), the goal,
the geodesic distance to it (``sim.geodesic_distance``), the reference path, the episode's geodesic
length, ``collision`` (``sim.previous_step_collided``) and, with a shortest-path follower, the expert's
next action. Rewards and metrics are computed trainer-side (spec ``reward: "trainer"``).

This file was NOT run against habitat-sim here (it cannot be installed on the development machine); its
mapping is tested against a stand-in that implements the habitat calls it makes
(``tests/test_habitat_backend.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

try:  # copied next to this file (the habitat env has no vln_gym) ...
    import envserver
except ImportError:  # ... or run from a vln-gym checkout
    from vln_gym.remote import envserver

STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2, 3
MAX_INSTRUCTION = 4096


def heading_of(rotation: Any) -> float:
    """Heading (radians about +y, 0 faces -z) of a habitat rotation quaternion (``.y``, ``.w``)."""
    return 2.0 * math.atan2(float(rotation.y), float(rotation.w))


def rotation_coeffs(heading: float) -> List[float]:
    """The ``[x, y, z, w]`` quaternion of a rotation by ``heading`` about +y."""
    return [0.0, math.sin(heading / 2.0), 0.0, math.cos(heading / 2.0)]


def _vec3(value: Any) -> Tuple[float, float, float]:
    return (float(value[0]), float(value[1]), float(value[2]))


class HabitatVLNCEBackend:
    """One ``habitat.Env`` (VLN-CE task) behind the env protocol; see the module docstring."""

    def __init__(
        self,
        env: Any,
        history_frames: int = 2,
        max_steps: int = 500,
        success_distance: float = 3.0,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        make_follower: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.env = env
        self.history_frames = int(history_frames)
        self.max_steps = int(max_steps)
        self.success_distance = float(success_distance)
        self.forward_step, self.turn_angle = float(forward_step), float(turn_angle)
        self.follower = make_follower(env.sim) if make_follower is not None else None
        self.by_id = {str(episode.episode_id): index for index, episode in enumerate(env.episodes)}
        self.rng = np.random.default_rng()
        self.frames: List[np.ndarray] = []
        self.image_shape: Optional[Tuple[int, ...]] = None
        self.steps, self.done = 0, True

    def spec(self) -> Dict[str, Any]:
        if self.image_shape is None:
            self._start(self.env.episodes[0], None)  # the rgb sensor's size comes from a first frame
            self.done = True
        frames = [self.history_frames, *self.image_shape]
        return {
            "backend": "habitat VLN-CE",
            "reward": "trainer",
            "observation_space": {
                "type": "Dict",
                "spaces": {
                    "frames": {"type": "Box", "low": 0, "high": 255, "shape": frames, "dtype": "uint8"},
                    "frame_mask": {"type": "MultiBinary", "n": [self.history_frames]},
                    "instruction": {"type": "UnicodeText", "max_length": MAX_INSTRUCTION},
                },
            },
            "action_space": {"type": "Discrete", "n": 4},
            "attributes": {
                "views": "habitat",
                "expert_plan": "next" if self.follower is not None else None,
                "forward_step": self.forward_step,
                "turn_angle": self.turn_angle,
                "success_distance": self.success_distance,
                "max_steps": self.max_steps,
                "history_frames": self.history_frames,
                "image_size": list(self.image_shape[:2]),
                "text_actions": False,
            },
        }

    # ------------------------------------------------------------------ protocol methods
    def reset(self, seed: Optional[int], options: Optional[Dict[str, Any]]) -> Tuple[Any, Any]:
        if seed is not None:
            self.rng = np.random.default_rng(int(seed))
            self.env.seed(int(seed))
        options = options or {}
        if "episode_id" in options:
            if str(options["episode_id"]) not in self.by_id:
                raise ValueError(f"options['episode_id']: no episode {options['episode_id']!r} in this split")
            index = self.by_id[str(options["episode_id"])]
        elif "episode_index" in options:
            index = int(options["episode_index"])
            if not 0 <= index < len(self.env.episodes):
                raise ValueError(f"options['episode_index']: {index} outside 0..{len(self.env.episodes) - 1}")
        else:
            index = int(self.rng.integers(len(self.env.episodes)))
        return self._start(self.env.episodes[index], None)

    def step(self, action: Any) -> Tuple[Any, None, bool, bool, Dict[str, Any]]:
        if self.done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        if isinstance(action, bool) or not isinstance(action, int) or action not in (0, 1, 2, 3):
            raise ValueError(
                f"a discrete action is an int in 0..3 (STOP, FORWARD, LEFT, RIGHT), got {action!r}"
            )
        observations = self.env.step(action)
        self.steps += 1
        terminated = action == STOP
        truncated = not terminated and (self.steps >= self.max_steps or bool(self.env.episode_over))
        self.done = terminated or truncated
        if not self.done:
            self._push(observations["rgb"])
        info = self._info()
        info["actions"] = (action,)
        info["collision"] = bool(getattr(self.env.sim, "previous_step_collided", False))
        return self._observation(), None, terminated, truncated, info

    def get_state(self) -> Dict[str, Any]:
        state = self.env.sim.get_agent_state()
        return {
            "episode_id": str(self.env.current_episode.episode_id),
            "position": list(_vec3(state.position)),
            "heading": heading_of(state.rotation),
            "steps": self.steps,
            "done": self.done,
            "frames": np.stack(self.frames),
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: Dict[str, Any]) -> Tuple[Any, Any]:
        if not isinstance(state, dict) or str(state.get("episode_id")) not in self.by_id:
            raise ValueError("set_state takes a get_state() snapshot of an episode in this split")
        episode = self.env.episodes[self.by_id[str(state["episode_id"])]]
        pose = (list(state["position"]), rotation_coeffs(float(state["heading"])))
        self._start(episode, pose)
        self.steps, self.done = int(state["steps"]), bool(state["done"])
        self.frames = [np.asarray(frame) for frame in state["frames"]][-self.history_frames :]
        self.rng.bit_generator.state = state["rng"]
        return self._observation(), self._info()

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------ helpers
    def _start(self, episode: Any, pose: Optional[Tuple[List[float], List[float]]]) -> Tuple[Any, Any]:
        self.env.episode_iterator = iter([episode])
        observations = self.env.reset()
        if pose is not None:
            observations = self.env.sim.get_observations_at(pose[0], pose[1], keep_agent_at_new_pose=True)
        frame = np.ascontiguousarray(observations["rgb"][..., :3], dtype=np.uint8)
        self.image_shape = frame.shape
        self.frames, self.steps, self.done = [frame], 0, False
        return self._observation(), self._info()

    def _push(self, rgb: Any) -> None:
        self.frames = [*self.frames, np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)][
            -self.history_frames :
        ]

    def _observation(self) -> Dict[str, Any]:
        frames = np.zeros((self.history_frames, *self.image_shape), dtype=np.uint8)
        mask = np.zeros(self.history_frames, dtype=np.int8)
        count = len(self.frames)
        frames[self.history_frames - count :] = np.stack(self.frames)
        mask[self.history_frames - count :] = 1
        instruction = self.env.current_episode.instruction.instruction_text[:MAX_INSTRUCTION]
        return {"frames": frames, "frame_mask": mask, "instruction": instruction}

    def _info(self) -> Dict[str, Any]:
        episode = self.env.current_episode
        state = self.env.sim.get_agent_state()
        position, goal = _vec3(state.position), _vec3(episode.goals[0].position)
        info = {
            "episode_id": str(episode.episode_id),
            "agent_position": position,
            "agent_heading": heading_of(state.rotation),
            "goal_position": goal,
            "distance_to_goal": float(self.env.sim.geodesic_distance(list(position), [list(goal)])),
            "success_distance": self.success_distance,
        }
        if getattr(episode, "reference_path", None):
            info["reference_path"] = tuple(_vec3(p) for p in episode.reference_path)
        geodesic = (getattr(episode, "info", None) or {}).get("geodesic_distance")
        if geodesic is not None:
            info["geodesic_distance"] = float(geodesic)
        if self.follower is not None and not self.done:
            info["expert_actions"] = (int(self.follower.get_next_action(list(goal)) or 0),)
        return info


def habitat_env(config_path: str, split: str, gpu: int) -> Any:  # pragma: no cover - needs habitat-sim
    """A ``habitat.Env`` of VLN-CE's task config (``habitat_extensions`` registers VLN-CE's task)."""
    import habitat

    try:
        import habitat_extensions  # noqa: F401  (VLN-CE's task, sensors and measures)
    except ImportError:
        print(
            "habitat_extensions (VLN-CE) is not importable: habitat-lab's own VLN task only", file=sys.stderr
        )
    config = habitat.get_config(config_path)
    config.defrost()
    config.DATASET.SPLIT = split
    config.SIMULATOR.HABITAT_SIM_V0.GPU_DEVICE_ID = gpu
    config.freeze()
    return habitat.Env(config=config)


def shortest_path_follower(success_distance: float) -> Callable[[Any], Any]:  # pragma: no cover
    def make(sim: Any) -> Any:
        from habitat.tasks.nav.shortest_path_follower import ShortestPathFollower

        return ShortestPathFollower(sim, goal_radius=success_distance, return_one_hot=False)

    return make


def main(argv: Optional[List[str]] = None) -> int:  # pragma: no cover - needs habitat-sim
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="VLN-CE task config (yaml)")
    parser.add_argument("--split", default="val_seen")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=os.environ.get("VLN_GYM_TOKEN"))
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--history-frames", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--success-distance", type=float, default=3.0)
    parser.add_argument("--no-expert", action="store_true", help="no shortest-path follower in info")
    args = parser.parse_args(argv)

    def make_backend() -> HabitatVLNCEBackend:
        follower = None if args.no_expert else shortest_path_follower(args.success_distance)
        return HabitatVLNCEBackend(
            habitat_env(args.config, args.split, args.gpu),
            history_frames=args.history_frames,
            max_steps=args.max_steps,
            success_distance=args.success_distance,
            make_follower=follower,
        )

    envserver.serve(make_backend, args.host, args.port, args.token)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
