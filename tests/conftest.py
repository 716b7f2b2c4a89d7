"""Shared fixtures. Tests run offline on the CPU with few threads (two pytest workers share 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def vln_ego_sample() -> Path:
    """The real R2R-CE trajectory from VLN-Ego (copied from shared/data): root of the sample."""
    return FIXTURES / "vln-ego-sample"


@pytest.fixture(scope="session")
def vln_ego_trajectory(vln_ego_sample: Path) -> Path:
    """The sample's one trajectory folder (step_N.jpg, action_list.json, instruction.txt)."""
    return vln_ego_sample / "rgb_images_r2r_debug" / "ep_2849" / "traj_1871"
