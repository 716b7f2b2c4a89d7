"""The Habitat VLN-CE server backend (scripts/habitat_vlnce_server.py) against a stand-in for habitat.

habitat-sim cannot be installed here, so `StandInHabitatEnv` implements the few habitat-lab 0.1.7 calls
the backend makes (``episodes``, ``episode_iterator``, ``current_episode``, ``reset``, ``step``,
``episode_over``, ``seed``, ``close``; ``sim.get_agent_state``, ``sim.geodesic_distance``,
``sim.get_observations_at``, ``sim.previous_step_collided``) in free space with VLN-CE's kinematics.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vln_gym.data.habitat import heading_from_quaternion
from vln_gym.geometry import apply_action
from vln_gym.remote.client import RemoteVLNEnv
from vln_gym.remote.envserver import serve_in_thread

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "habitat_vlnce_server.py"


def load_backend_module():
    spec = importlib.util.spec_from_file_location("habitat_vlnce_server", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


habitat_server = load_backend_module()


class StandInSim:
    """habitat Simulator calls: pose, geodesic (= straight-line, free space), observations at a pose."""

    def __init__(self, size: int = 24) -> None:
        self.size = size
        self.position, self.heading = (0.0, 0.0, 0.0), 0.0
        self.previous_step_collided = False

    def get_agent_state(self):
        h = self.heading
        rotation = SimpleNamespace(x=0.0, y=math.sin(h / 2), z=0.0, w=math.cos(h / 2))
        return SimpleNamespace(position=np.array(self.position, dtype=np.float32), rotation=rotation)

    def geodesic_distance(self, position_a, positions_b):
        return min(math.dist(position_a, b) for b in positions_b)

    def get_observations_at(self, position, rotation, keep_agent_at_new_pose=False):
        assert keep_agent_at_new_pose and len(rotation) == 4
        self.position = tuple(float(v) for v in np.float32(position))
        self.heading = 2 * math.atan2(rotation[1], rotation[3])
        return self.observations()

    def observations(self):
        """A frame that depends on the pose (so restores and histories are checkable), RGBA like habitat."""
        seed = int(
            abs(hash((round(self.position[0], 3), round(self.position[2], 3), round(self.heading, 3))))
        )
        rgba = np.random.default_rng(seed % 2**32).integers(0, 256, (self.size, self.size, 4), dtype=np.uint8)
        return {"rgb": rgba, "instruction": {"text": "unused"}}


class StandInHabitatEnv:
    """habitat.Env calls, with VLN-CE's actions (0.25 m, 15 degrees) in free space."""

    def __init__(self, episodes: list) -> None:
        self.episodes = episodes
        self.sim = StandInSim()
        self.episode_iterator = iter(episodes)
        self.current_episode = None
        self.episode_over = False
        self.closed = False

    def seed(self, seed: int) -> None:
        self.seeded = seed

    def reset(self):
        self.current_episode = next(self.episode_iterator)
        self.sim.position = tuple(float(v) for v in np.float32(self.current_episode.start_position))
        self.sim.heading = heading_from_quaternion(self.current_episode.start_rotation, "start_rotation")
        self.episode_over = False
        return self.sim.observations()

    def step(self, action: int):
        if action == 0:
            self.episode_over = True
        else:
            position, heading = apply_action(self.sim.position, self.sim.heading, action, 0.25, 15.0)
            self.sim.position = tuple(float(v) for v in np.float32(position))
            self.sim.heading = heading
        return self.sim.observations()

    def close(self) -> None:
        self.closed = True


class GreedyFollower:
    """ShortestPathFollower's call (``get_next_action(goal)``), greedy in free space."""

    def __init__(self, sim) -> None:
        self.sim = sim

    def get_next_action(self, goal):
        x, _, z = self.sim.position
        if math.dist((x, z), (goal[0], goal[2])) < 0.2:
            return 0
        bearing = math.atan2(-(goal[0] - x), -(goal[2] - z))
        turn = (bearing - self.sim.heading + math.pi) % (2 * math.pi) - math.pi
        return 1 if abs(turn) <= math.radians(7.5) else (2 if turn > 0 else 3)


def synthetic_episodes() -> list:
    episodes = []
    for i in range(3):
        heading = 0.3 * i
        start = (1.0 * i, 0.0, 0.0)
        goal = (1.0 * i - 1.0, 0.0, -2.0)
        episodes.append(
            SimpleNamespace(
                episode_id=str(i + 1),
                start_position=list(start),
                start_rotation=[0.0, math.sin(heading / 2), 0.0, math.cos(heading / 2)],
                goals=[SimpleNamespace(position=list(goal), radius=3.0)],
                reference_path=[list(start), list(goal)],
                instruction=SimpleNamespace(instruction_text=f"walk to the door number {i}"),
                info={"geodesic_distance": math.dist(start, goal)},
            )
        )
    return episodes


def r2r_episodes(split: Path, count: int) -> tuple[list, dict]:
    data = json.loads(gzip.decompress((split / "val_seen.json.gz").read_bytes()))
    gt = json.loads(gzip.decompress((split / "val_seen_gt.json.gz").read_bytes()))
    episodes = []
    for record in data["episodes"][:count]:
        episodes.append(
            SimpleNamespace(
                episode_id=str(record["episode_id"]),
                start_position=record["start_position"],
                start_rotation=record["start_rotation"],
                goals=[SimpleNamespace(**goal) for goal in record["goals"]],
                reference_path=record["reference_path"],
                instruction=SimpleNamespace(**record["instruction"]),
                info=record["info"],
            )
        )
    return episodes, gt


def serve_stand_in(episodes, **backend_kwargs):
    made = []

    def make_backend():
        env = StandInHabitatEnv(episodes)
        made.append(env)
        return habitat_server.HabitatVLNCEBackend(env, **backend_kwargs)

    server, address = serve_in_thread(make_backend)
    return server, address, made


def test_mapping_poses_frames_and_trainer_side_rewards():
    episodes = synthetic_episodes()
    server, address, made = serve_stand_in(episodes, history_frames=3, make_follower=GreedyFollower)
    env = RemoteVLNEnv(address, rewards=None)
    try:
        assert env.observation_space["frames"].shape == (3, 24, 24, 3) and env.views == "habitat"
        obs, info = env.reset(seed=0, options={"episode_id": "2"})
        assert obs["instruction"] == "walk to the door number 1" and obs["frame_mask"].tolist() == [0, 0, 1]
        assert info["agent_heading"] == pytest.approx(0.3) and info["agent_position"] == pytest.approx(
            (1, 0, 0)
        )
        assert info["distance_to_goal"] == pytest.approx(math.dist((1, 0, 0), (0, 0, -2)))
        assert env.observation_space.contains(obs)
        total, steps = 0.0, 0
        while True:  # follow the expert the backend reports
            obs, reward, terminated, truncated, info = env.step(info["expert_actions"][0])
            total, steps = total + reward, steps + 1
            if terminated or truncated:
                break
        assert terminated and info["success"] and info["metrics"]["success"] == 1.0
        assert info["metrics"]["distance_kind"] == "geodesic" and total > 0
        assert 0.5 < info["metrics"]["spl"] <= 1.0 and obs["frame_mask"].tolist() == [1, 1, 1]
        with pytest.raises(Exception, match="episode_id"):
            env.reset(options={"episode_id": "nope"})
    finally:
        env.close()
        server.shutdown()
        server.server_close()
    assert made and made[-1].closed  # the server closed the simulator with the connection


def test_snapshots_restore_the_simulator_pose_and_frames():
    server, address, _ = serve_stand_in(synthetic_episodes(), make_follower=GreedyFollower)
    env = RemoteVLNEnv(address)
    try:
        env.reset(seed=3)
        for action in (1, 2, 1):
            env.step(action)
        state = env.get_state()
        first = [env.step(a) for a in (1, 3, 1)]
        metrics_first = env.episode_metrics()
        env.reset(seed=9)  # elsewhere, then back
        env.set_state(state)
        again = [env.step(a) for a in (1, 3, 1)]
        for a, b in zip(first, again, strict=True):
            assert np.array_equal(a[0]["frames"], b[0]["frames"]) and a[1] == b[1]
            assert a[4]["agent_position"] == b[4]["agent_position"]
        # the trainer-side path is restored too (a snapshot is not mutated by the steps after it)
        assert len(state["scoring"]["path"]) == 4
        assert env.episode_metrics() == metrics_first
    finally:
        env.close()
        server.shutdown()
        server.server_close()


def test_real_r2r_ce_episodes_replay_their_gt_actions_to_success(r2r_ce_split):
    """Headings from start_rotation and VLN-CE's action convention: the gt actions reach the goal."""
    episodes, gt = r2r_episodes(r2r_ce_split, 3)
    server, address, _ = serve_stand_in(episodes)
    env = RemoteVLNEnv(address)
    try:
        for episode in episodes:
            _, info = env.reset(options={"episode_id": episode.episode_id})
            assert info["agent_heading"] == pytest.approx(
                heading_from_quaternion(episode.start_rotation, "start_rotation")
            )
            for action in gt[episode.episode_id]["actions"]:
                _, _, terminated, truncated, info = env.step(int(action))
                if terminated or truncated:
                    break
            assert terminated and info["success"], (episode.episode_id, info["distance_to_goal"])
    finally:
        env.close()
        server.shutdown()
        server.server_close()


def test_habitat_backend_module_py38():
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run(
        [str(vermin), "-t=3.8-", "--no-tips", "--violations", "--eval-annotations", str(SCRIPT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
