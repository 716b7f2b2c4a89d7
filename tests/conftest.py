"""Shared fixtures. Tests run offline on the CPU with few threads (two pytest workers share 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def r2r_ce_split() -> Path:
    """The real Habitat VLN-CE R2R val_seen split folder in ../shared (never copied); skip when absent."""
    folder = SHARED_DATA / "r2r-ce-sample" / "val_seen"
    if not (folder / "val_seen.json.gz").is_file():
        pytest.skip(f"{folder} is absent (the shared R2R-CE sample)")
    return folder


@pytest.fixture(scope="session")
def vln_ego_sample() -> Path:
    """The real R2R-CE trajectory from VLN-Ego (copied from shared/data): root of the sample."""
    return FIXTURES / "vln-ego-sample"


@pytest.fixture(scope="session")
def vln_ego_trajectory(vln_ego_sample: Path) -> Path:
    """The sample's one trajectory folder (step_N.jpg, action_list.json, instruction.txt)."""
    return vln_ego_sample / "rgb_images_r2r_debug" / "ep_2849" / "traj_1871"


@pytest.fixture(scope="session")
def no_expert_env_kwargs(vln_ego_trajectory: Path) -> dict:
    """Trajectory-mode text env kwargs of one real frame whose record has no expert actions."""
    from vln_gym.episode import Episode

    episode = Episode(
        episode_id="e0",
        instruction="walk",
        images=(str(vln_ego_trajectory / "step_0.jpg"),),
        agent_position=(0.0, 0.0, 0.0),
        agent_heading=0.0,
        goal_position=(0.0, 0.0, -1.0),
        distance_to_goal=1.0,
        trajectory_id="t",
        step_index=0,
    )
    return {"episodes": [episode], "views": "trajectory", "action_space": "text", "image_size": (32, 32)}


def make_episodes(trajectory: Path, count: int = 6) -> list:
    """Short replay episodes on the VLN-Ego frames: goal 0, 0.5 or 1.0 m ahead."""
    from vln_gym.episode import Episode

    return [
        Episode(
            episode_id=f"e{i}",
            instruction="walk to the door and stop",
            images=(str(trajectory / f"step_{i}.jpg"),),
            agent_position=(0.0, 0.0, 0.0),
            agent_heading=0.0,
            goal_position=(0.0, 0.0, -0.5 * (i % 3)),
            distance_to_goal=0.5 * (i % 3),
            expert_actions=(1,) * (2 * (i % 3)) + (0,),
            trajectory_id="t",
            step_index=i,
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def env_kwargs(vln_ego_trajectory: Path) -> dict:
    """Trajectory-mode text env kwargs over `make_episodes` (3 decisions per episode, 56 x 56 frames)."""
    return {
        "episodes": make_episodes(vln_ego_trajectory),
        "views": "trajectory",
        "action_space": "text",
        "max_steps": 3,
        "image_size": (56, 56),
        "success_distance": 0.3,
    }
