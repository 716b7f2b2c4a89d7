"""VLN-v0 through gym.make_vec: async copies (shared memory carries Unicode text) equal sequential envs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import vln_gym  # noqa: F401
from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, STOP
from vln_gym.spaces import UnicodeText, decode_code_points, encode_code_points


@pytest.fixture()
def episodes(tmp_path: Path) -> list[Episode]:
    out = []
    for k in range(6):
        image = tmp_path / f"{k}.png"
        Image.new("RGB", (40, 36), (30 * k, 255 - 30 * k, 7 * k)).save(image)
        out.append(
            Episode(
                episode_id=f"e{k}",
                instruction=f"第{k}步: walk to the चौराहा 🚪 #{k}",
                images=(str(image),),
                agent_position=(0.1 * k, 0.0, 0.0),
                agent_heading=0.3 * k,
                goal_position=(0.0, 0.0, -1.0),
                distance_to_goal=1.0,
                expert_actions=(MOVE_FORWARD, STOP),
            )
        )
    return out


def test_unicode_code_points_round_trip():
    space = UnicodeText(16)
    for text in ("", "abc", "向前走 😀", "आगे\x00", "x" * 16):
        codes = encode_code_points(space, text)
        assert codes.shape == (16,) and decode_code_points(codes) == text
    with pytest.raises(ValueError):
        encode_code_points(space, "x" * 17)


def _sequential(episodes, seed: int, actions: np.ndarray, **kwargs) -> list:
    """Reference: N plain envs, seeded like make_vec (seed + i), autoreset on the step after the end."""
    envs = [gym.make("VLN-v0", episodes=episodes, **kwargs) for _ in range(actions.shape[1])]
    results = [env.reset(seed=seed + i) for i, env in enumerate(envs)]
    records = [[(obs["frames"], obs["instruction"], 0.0, False, False)] for obs, _ in results]
    done = [False] * len(envs)
    for row in actions:
        for i, env in enumerate(envs):
            if done[i]:
                obs, _ = env.reset()
                reward, terminated, truncated = 0.0, False, False
            else:
                obs, reward, terminated, truncated, _ = env.step(int(row[i]))
            done[i] = terminated or truncated
            records[i].append((obs["frames"], obs["instruction"], reward, terminated, truncated))
    return records


def test_async_vector_env_equals_sequential(episodes):
    kwargs = {"image_size": (36, 40), "max_steps": 2, "history_frames": 2}
    rng = np.random.default_rng(0)
    actions = rng.integers(1, 4, size=(7, 4))
    expected = _sequential(episodes, 11, actions, **kwargs)
    vec = gym.make_vec("VLN-v0", num_envs=4, vectorization_mode="async", episodes=episodes, **kwargs)
    try:
        obs, _ = vec.reset(seed=11)
        got = [[(obs["frames"][i], obs["instruction"][i], 0.0, False, False)] for i in range(4)]
        for row in actions:
            obs, reward, terminated, truncated, _info = vec.step(row)
            for i in range(4):
                got[i].append(
                    (
                        obs["frames"][i],
                        obs["instruction"][i],
                        float(reward[i]),
                        bool(terminated[i]),
                        bool(truncated[i]),
                    )
                )
    finally:
        vec.close()
    for i in range(4):
        for step, (want, have) in enumerate(zip(expected[i], got[i], strict=True)):
            assert np.array_equal(want[0], have[0]), (i, step)
            assert want[1:] == pytest.approx(have[1:]), (i, step)
    assert any(row[3] for env in got for row in env)  # episodes did end and autoreset


def test_sync_vector_env_text_actions(episodes):
    vec = gym.make_vec(
        "VLN-v0",
        num_envs=2,
        vectorization_mode="sync",
        episodes=episodes,
        image_size=(36, 40),
        action_space="text",
    )
    obs, info = vec.reset(seed=0)
    assert obs["frames"].shape == (2, 2, 36, 40, 3)
    assert all("🚪" in text for text in obs["instruction"])
    obs, _reward, terminated, _, info = vec.step(("move forward", "gibberish"))
    assert info["invalid_action"].tolist() == [False, True]
    assert terminated.tolist() == [True, True]
    vec.close()


def test_shared_text_batch_is_live_and_copies_to_tuples():
    import copy
    import multiprocessing as mp

    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    space = UnicodeText(12)
    memory = create_shared_memory(space, n=2, ctx=mp)
    batch = read_from_shared_memory(space, memory, n=2)
    write_to_shared_memory(space, 0, "左转 ok", memory)
    write_to_shared_memory(space, 1, "", memory)
    assert batch[0] == "左转 ok" and batch[1] == "" and len(batch) == 2
    snapshot = copy.deepcopy({"instruction": batch})["instruction"]
    write_to_shared_memory(space, 0, "changed", memory)
    assert snapshot == ("左转 ok", "") and type(snapshot) is tuple
    assert batch[0] == "changed"  # the batch itself stays a live view, like numpy views of shared memory


def test_unicode_text_space_contains_and_samples():
    space = UnicodeText(20, seed=3)
    assert "नमस्ते 😀" in space and "" in space
    assert "x" * 21 not in space and b"bytes" not in space and 5 not in space
    samples = [space.sample() for _ in range(50)]
    assert all(s in space for s in samples) and len(set(samples)) > 40
    assert UnicodeText(20, seed=3).sample() == UnicodeText(20, seed=3).sample()
