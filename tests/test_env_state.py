"""`VLNEnv.get_state` / `set_state`: a snapshot restores the env so that the next steps are bit-identical,
in all three view modes; the world-mode env pickles and deep-copies."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vln_gym.env import VLNEnv

SIZE = (24, 24)
TEXTS = ("move forward", "turn left", "turn right", "stop", "move forward, turn left", "nonsense")


@pytest.fixture(scope="module")
def envs(vln_ego_trajectory):
    data = {"data_files": str(vln_ego_trajectory), "format": "vln-ego", "image_size": SIZE}
    return {
        "world": VLNEnv(image_size=SIZE, max_steps=30, action_space="text", world_episodes=20),
        "trajectory": VLNEnv(views="trajectory", max_steps=30, action_space="text", **data),
        "record": VLNEnv(views="record", max_steps=3, action_space="text", **data),
    }


def _run(env: VLNEnv, actions) -> list[tuple]:
    """(frames, mask, reward, terminated, truncated, info) per step until the episode ends."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs["frames"], obs["frame_mask"], reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def _assert_same(first: list[tuple], second: list[tuple]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a[0].tobytes() == b[0].tobytes() and np.array_equal(a[1], b[1])
        assert a[2:5] == b[2:5]
        assert repr(a[5]) == repr(b[5])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(["world", "trajectory", "record"]),
    seed=st.integers(0, 2**16),
    prefix=st.lists(st.sampled_from(TEXTS[:3] + TEXTS[4:]), max_size=6),
    rest=st.lists(st.sampled_from(TEXTS), min_size=1, max_size=8),
)
def test_snapshot_then_restore_replays_identically(envs, mode, seed, prefix, rest):
    env = envs[mode]
    env.reset(seed=seed)
    if mode == "record":
        prefix = prefix[:1]
    for action in prefix:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset(seed=seed)
            break
    state = env.get_state()
    pickled = pickle.loads(pickle.dumps(state))
    original = _run(env, rest)
    obs, info = env.set_state(state)
    assert repr(info["agent_position"]) == repr(tuple(state["position"]))
    assert obs["frames"][-1].tobytes() == state["frames"][-1].tobytes()
    _assert_same(original, _run(env, rest))
    env.reset(seed=seed + 1)  # elsewhere, then back through the pickled copy
    env.set_state(pickled)
    _assert_same(original, _run(env, rest))


def test_restore_into_another_env_and_the_rng_state(envs):
    """A snapshot moves between envs made with the same arguments; the env RNG (episode picks) follows it."""
    source = envs["world"]
    target = VLNEnv(image_size=SIZE, max_steps=30, action_space="text", world_episodes=20)
    source.reset(seed=5)
    source.step("move forward")
    state = source.get_state()
    target.reset(seed=99)
    target.set_state(state)
    _assert_same(_run(source, ["turn left", "move forward"]), _run(target, ["turn left", "move forward"]))
    assert source.reset()[1]["episode_id"] == target.reset()[1]["episode_id"]


def test_bad_snapshots_are_refused(envs):
    env = envs["world"]
    env.reset(seed=0)
    state = env.get_state()
    with pytest.raises(ValueError, match="episode_index"):
        env.set_state({**state, "episode_index": 10_000})
    with pytest.raises(ValueError, match="frames"):
        env.set_state({**state, "frames": np.zeros((1, 8, 8, 3), dtype=np.uint8)})
    with pytest.raises(RuntimeError, match="reset"):
        VLNEnv(image_size=SIZE, world_episodes=2).get_state()
    with pytest.raises(ValueError, match=r"needs a get_state\(\) snapshot \(a dict\), got NoneType"):
        env.set_state(None)
    partial = {key: value for key, value in state.items() if key not in ("path", "frames")}
    with pytest.raises(ValueError, match="the snapshot lacks path, frames"):
        env.set_state(partial)


def test_unknown_reset_options_are_refused(envs):
    """A misspelt key (``episode`` for ``episode_index``) would start a random episode without a word."""
    env = envs["world"]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['episode'\]; known: episode_index"):
        env.reset(options={"episode": 1})
    assert env.reset(options={"episode_index": 1})[1]["episode_id"] == env.episodes[1].episode_id
    assert env.reset(options={})[1]["episode_id"]


def test_world_env_pickles_and_deep_copies(envs):
    env = envs["world"]
    env.reset(seed=1)
    env.step("move forward")
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        _assert_same(
            _run(copy.deepcopy(env), ["turn left", "move forward"]),
            _run(clone, ["turn left", "move forward"]),
        )
