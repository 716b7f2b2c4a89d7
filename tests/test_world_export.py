"""Exported datasets: format, determinism, per-step records, loading back, the make-world command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vln_gym.world import export_dataset, generate_episodes
from vln_gym.world.cli import main

KEYS = {
    "format",
    "id",
    "instruction",
    "images",
    "agent_position",
    "agent_heading",
    "goal_position",
    "distance_to_goal",
    "geodesic_distance",
    "reference_path",
    "expert_actions",
    "scene_id",
    "success_distance",
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_is_deterministic_and_complete(tmp_path: Path) -> None:
    a = export_dataset(tmp_path / "a", 3, seed=4, size=(32, 40))
    b = export_dataset(tmp_path / "b", 3, seed=4, size=(32, 40))
    assert a.name == "episodes.jsonl"
    assert _files(a.parent) == _files(b.parent)
    records = [json.loads(line) for line in a.read_text().splitlines()]
    episodes = generate_episodes(seed=4, num_episodes=3)
    assert [r["id"] for r in records] == [e.episode_id for e in episodes]
    for record, episode in zip(records, episodes, strict=True):
        assert set(record) >= KEYS
        assert record["format"] == "vln-gym/1"
        assert record["expert_actions"] == list(episode.expert_actions)
        assert record["images"] == [f"images/{episode.episode_id}/step_0.jpg"]
        image = np.asarray(Image.open(a.parent / record["images"][0]))
        assert image.shape == (32, 40, 3)


def test_per_step_export_loads_back_through_the_data_layer(tmp_path: Path) -> None:
    from vln_gym.data import load_episodes

    path = export_dataset(tmp_path, 2, seed=0, per_step=True, image_format="png", size=(24, 24), history=3)
    loaded = load_episodes(path)
    episodes = generate_episodes(seed=0, num_episodes=2)
    assert len(loaded) == sum(len(e.expert_actions) for e in episodes)
    first = [r for r in loaded if r.trajectory_id == episodes[0].episode_id]
    assert [r.step_index for r in first] == list(range(len(episodes[0].expert_actions)))
    assert first[0].agent_position == episodes[0].agent_position
    assert first[0].expert_actions == episodes[0].expert_actions
    for record in first:
        k = record.step_index
        assert record.episode_id == f"{episodes[0].episode_id}-t{k}"
        assert record.expert_actions == episodes[0].expert_actions[k:]
        assert len(record.images) == min(k + 1, 3)
        assert record.images[-1].endswith(f"step_{k}.png")
        assert Path(record.images[-1]).is_file()
        assert record.reference_path[0] == record.agent_position
        assert record.scene_id == episodes[0].scene_id
    assert first[-1].distance_to_goal <= 0.25


def test_make_world_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "set"
    assert main(["--out", str(out), "--episodes", "2", "--seed", "1", "--size", "16", "--rooms", "2"]) == 0
    assert "wrote 2 records" in capsys.readouterr().out
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 2
    assert main(["--out", str(out), "--episodes", "1", "--rooms", "9"]) == 2
    assert "WorldConfig.rooms=9" in capsys.readouterr().err
