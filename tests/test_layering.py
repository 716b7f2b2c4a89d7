"""Lower layers never import upper ones: `vln_gym` and `rewards` work with `agents` unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_AGENTS = """
import importlib, pkgutil, sys

class BlockAgents:
    def find_spec(self, name, path=None, target=None):
        if name == "agents" or name.startswith("agents."):
            raise ImportError(f"vln_gym imported {name}")
        return None

sys.meta_path.insert(0, BlockAgents())
import vln_gym, rewards
names = []
for package in (vln_gym, rewards):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
        names.append(module.name)
import gymnasium as gym
env = gym.make("VLN-v0", image_size=(16, 16), world_episodes=2)
env.reset(seed=0)
env.step(1)
print(len(names))
"""


def test_vln_gym_and_rewards_import_without_agents():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_AGENTS], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) >= 20  # every submodule was imported, not just the package


def test_no_import_string_names_agents():
    """Not even by import string: no module of vln_gym or rewards mentions ``agents.``."""
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("vln_gym", "rewards")
        for path in (ROOT / package).rglob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in ("agents.", "import agents"))
    ]
    assert offenders == []
