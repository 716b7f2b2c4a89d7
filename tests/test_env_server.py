"""Env servers: the wire codec, `vln-gym serve` over loopback, the `RemoteVLNEnv` client, hostile input."""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vln_gym  # noqa: F401  (registers VLN-v0)
from vln_gym.remote import envserver
from vln_gym.remote.client import RemoteVLNEnv, ServerConnectionError
from vln_gym.remote.envserver import Channel, ProtocolError, RemoteError, pack, serve_in_thread
from vln_gym.remote.local import VLNBackend

WORLD = {"world_config": "easy", "world_episodes": 30, "image_size": (48, 48), "history_frames": 3}
SERVER_MODULE = Path(envserver.__file__)


def start_server(env_kwargs: dict, *extra: str) -> tuple[subprocess.Popen, str]:
    """``vln-gym serve --port 0`` in a subprocess (a process per connection); ``(process, "host:port")``."""
    command = [
        sys.executable,
        "-m",
        "agents.cli",
        "serve",
        "--port",
        "0",
        "--env-kwargs",
        json.dumps(env_kwargs),
    ]
    process = subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r} {process.stderr.read()}")
    return process, line.split()[-1]


@pytest.fixture(scope="module")
def served_world():
    process, address = start_server(WORLD)
    yield address
    os.killpg(process.pid, signal.SIGKILL)  # the server and its per-connection children
    process.wait(timeout=10)


@pytest.fixture()
def thread_server():
    server, address = serve_in_thread(partial(VLNBackend, WORLD))
    yield server, address
    server.shutdown()
    server.server_close()


def same(a, b) -> bool:
    """Equal values of equal types all the way down (arrays: dtype, shape and bytes)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


# ---------------------------------------------------------------------------------------------- codec
def test_codec_round_trips_types_exactly():
    value = {
        "t": (1, 2.5, (3,)),
        "l": [True, None, "é😀"],
        "nan": math.nan,
        "inf": -math.inf,
        "f32": np.float32(0.1),
        "i64": np.int64(-7),
        "frames": np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3),
        "f64": np.linspace(0, 1, 7),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "big": 2**100,
    }
    data = pack(value)
    _, header_length, payload_length = struct.unpack("!4sIQ", data[:16])
    decoded = envserver.unpack(data[16 : 16 + header_length], bytearray(data[16 + header_length :]))
    assert payload_length == len(data) - 16 - header_length
    assert same(decoded, value)
    assert decoded["frames"].flags.writeable


def split(data: bytes) -> tuple[bytes, bytearray]:
    _, header_length, _ = struct.unpack("!4sIQ", data[:16])
    return data[16 : 16 + header_length], bytearray(data[16 + header_length :])


def test_long_unchanged_tuples_go_once_per_connection():
    path = tuple((float(i), 0.0, -float(i)) for i in range(50))
    sent, received = {}, {}
    first = pack({"info": {"reference_path": path}}, memo=sent)
    again = pack({"info": {"reference_path": path}}, memo=sent)
    assert len(again) < len(first) / 5
    assert envserver.unpack(*split(first), memo=received)["info"]["reference_path"] == path
    assert envserver.unpack(*split(again), memo=received)["info"]["reference_path"] == path
    with pytest.raises(ProtocolError, match="never sent here"):
        envserver.unpack(*split(again))  # a fresh connection has no record
    mutable = tuple([float(i)] for i in range(10))  # lists inside: never remembered
    assert len(pack({"p": mutable}, memo=sent)) == len(pack({"p": mutable}, memo=sent))
    other = tuple(float(i) for i in range(20))
    with pytest.raises(ProtocolError):
        pack({"p": other, "bad": {1, 2}}, memo=sent)  # not sent, so not remembered either
    assert '"__t"' in split(pack({"p": other}, memo=sent))[0].decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a"}, "keys must be str"),
        ({"__t": 1}, "reserved"),
        ({1, 2}, "cannot send a set"),
        (np.array(["x"]), "dtype"),
        (object(), "cannot send"),
    ],
)
def test_codec_refuses_what_it_cannot_carry(value, message):
    with pytest.raises(ProtocolError, match=message):
        pack({"v": value})


def header_message(header: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!4sIQ", b"VLNG", len(header), len(payload)) + header + payload


@pytest.mark.parametrize(
    ("header", "payload", "message"),
    [
        (b"{not json", b"", "not valid JSON"),
        (b'{"body": 1}', b"", "exactly 'body' and 'blobs'"),
        (b'{"body": {"__a": 0}, "blobs": []}', b"", "names no blob"),
        (b'{"body": 1, "blobs": [["object", [1], 8, "raw"]]}', b"x" * 8, "not allowed"),
        (b'{"body": 1, "blobs": [["uint8", [3], 4, "raw"]]}', b"xxxx", "needs 3 bytes"),
        (b'{"body": 1, "blobs": [["uint8", [4], 9, "raw"]]}', b"xxxx", "do not fit"),
        (b'{"body": 1, "blobs": [["uint8", [2], 2, "raw"]]}', b"xxxx", "no blob claims"),
        (b'{"body": 1, "blobs": [["uint8", [-1], 0, "raw"]]}', b"", "non-negative"),
        (b'{"body": 1, "blobs": [["uint8", [1, 1, 1], 1, "pickle"]]}', b"x", "unknown codec"),
        (b'{"body": {"__np": ["float64", "x"]}, "blobs": []}', b"", "is not a float64"),
        (b'{"body": NaN, "blobs": []}', b"", "non-finite"),
        (b'{"body": {"__f": "1e999"}, "blobs": []}', b"", "nan, inf or -inf"),
        (b"[" * 100000 + b"]" * 100000, b"", "not valid JSON|deeper"),
    ],
)
def test_malformed_messages_are_protocol_errors(header, payload, message):
    with pytest.raises(ProtocolError, match=message):
        envserver.unpack(header, bytearray(payload))


# ---------------------------------------------------------------------------------------------- server
def raw_connection(address: str) -> tuple[socket.socket, Channel]:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock, Channel(sock)


def hello(channel: Channel, **extra) -> dict:
    channel.send({"method": "hello", "args": {"version": envserver.PROTOCOL_VERSION, **extra}})
    return channel.receive()[0]


def test_server_answers_malformed_requests_and_keeps_serving(thread_server):
    _, address = thread_server
    sock, channel = raw_connection(address)
    channel.send({"method": "step", "args": {"action": 1}})
    assert "say hello first" in channel.receive()[0]["error"]["message"]
    sock.sendall(header_message(b"{broken"))
    assert channel.receive()[0]["error"]["type"] == "ProtocolError"
    assert hello(channel)["ok"]
    for request, expected in [
        ({"method": "__import__", "args": {}}, "unknown method"),
        ({"method": "reset", "args": []}, "'args' must be an object"),
        (["reset"], "a request is"),
        ({"method": "hello", "args": {"version": 1}}, "already connected"),
    ]:
        channel.send(request)
        assert expected in channel.receive()[0]["error"]["message"]
    channel.send({"method": "reset", "args": {"seed": 0, "options": None}})
    assert channel.receive()[0]["ok"]
    channel.send({"method": "step", "args": {"action": 7}})  # the env's own error comes back
    answer = channel.receive()[0]
    assert answer["error"]["type"] == "ValueError" and "0..3" in answer["error"]["message"]
    channel.send({"method": "set_state", "args": {"state": "x"}})
    assert "snapshot" in channel.receive()[0]["error"]["message"]
    channel.send({"method": "step", "args": {"action": 1}})
    assert channel.receive()[0]["ok"]
    sock.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80\x04\x95" + b"pickle" * 10,  # a pickle is not a message
        struct.pack("!4sIQ", b"VLNG", envserver.MAX_HEADER_BYTES + 1, 0),
        struct.pack("!4sIQ", b"VLNG", 2, envserver.MAX_PAYLOAD_BYTES + 1),
    ],
)
def test_broken_framing_is_answered_then_closed(thread_server, garbage):
    _, address = thread_server
    sock, channel = raw_connection(address)
    sock.sendall(garbage)
    answer = channel.receive()[0]
    assert answer["error"]["type"] == "FramingError"
    with pytest.raises(EOFError):
        channel.receive()
    env = RemoteVLNEnv(address)  # the server survives
    assert env.reset(seed=0)[1]["episode_id"]
    env.close()


def test_a_message_stalled_midway_times_out_and_frees_the_worker(thread_server, monkeypatch):
    """A peer that sends part of a prefix and stops held a server worker forever; idling between
    messages stays allowed."""
    monkeypatch.setattr(envserver, "MESSAGE_TIMEOUT_S", 0.5)
    _, address = thread_server
    sock, _ = raw_connection(address)
    sock.sendall(b"VL")  # two bytes of a 16-byte prefix, then nothing
    sock.settimeout(10)
    started = time.monotonic()
    assert sock.recv(1) == b""  # the server gave up on the message and closed the connection
    assert time.monotonic() - started < 5
    idle = RemoteVLNEnv(address)
    idle.reset(seed=0)
    time.sleep(1.0)  # longer than the message timeout, between messages
    assert idle.step(1)[4]["episode_id"]
    idle.close()


def test_token_is_required_beyond_loopback_and_checked():
    with pytest.raises(ValueError, match="needs a shared token"):
        envserver.check_binding("0.0.0.0", None)
    server, address = serve_in_thread(partial(VLNBackend, WORLD), token="s3cret")
    try:
        with pytest.raises(RemoteError, match="PermissionError"):
            RemoteVLNEnv(address, token="wrong")
        env = RemoteVLNEnv(address, token="s3cret")
        assert env.reset(seed=1)[1]["episode_id"]
        env.close()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- client
def test_loopback_trajectories_equal_in_process(served_world):
    """World mode, 3 seeds: byte-identical observations, rewards and infos through a forking server."""
    remote = gym.make("VLN-v0", server=served_world)
    local = gym.make("VLN-v0", **WORLD)
    for seed in range(3):
        assert same(remote.reset(seed=seed), local.reset(seed=seed))
        rng = np.random.default_rng(seed)
        for t in range(60):
            action = 1 if t % 3 else int(rng.integers(1, 4))
            result = remote.step(action)
            assert same(result, local.step(action)), f"seed {seed}, step {t}"
            if result[2] or result[3]:
                break
        state = remote.unwrapped.get_state()
        assert same(state, local.unwrapped.get_state())
    remote.close()


def test_snapshots_restore_over_the_wire(served_world):
    env = RemoteVLNEnv(served_world)
    env.reset(seed=5)
    for action in (1, 2, 1):
        info = env.step(action)[4]
    state = env.get_state()
    first = [env.step(a) for a in (1, 3, 1)]
    _, restored_info = env.set_state(state)
    assert restored_info["agent_position"] == info["agent_position"]
    assert same([env.step(a) for a in (1, 3, 1)], first)
    env.close()


def test_client_passes_check_env_and_checks_its_arguments(served_world):
    env = RemoteVLNEnv(served_world, forward_step=0.5, image_size=(48, 48))
    check_env(env, skip_render_check=True)
    assert env.views == "world" and env.history_frames == 3 and env.image_size == (48, 48)
    env.close()
    with pytest.raises(ValueError, match=r"forward_step: the server .* has 0.5; this run asks 0.25"):
        RemoteVLNEnv(served_world, forward_step=0.25)
    with pytest.raises(TypeError, match="env arguments belong to the server"):
        gym.make("VLN-v0", server=served_world, world_episodes=5)
    with pytest.raises(ValueError, match="takes discrete actions"):
        RemoteVLNEnv(served_world, action_space="text")
    with pytest.raises(ValueError, match="computes its own rewards"):
        RemoteVLNEnv(served_world, rewards="success")
    with pytest.raises(ValueError, match="host:port"):
        RemoteVLNEnv("localhost")


def test_vector_envs_of_clients_match_in_process(served_world):
    make_remote = partial(gym.make, "VLN-v0", server=served_world)
    make_local = partial(gym.make, "VLN-v0", **WORLD)
    for vector in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv):
        remote, local = vector([make_remote] * 2), vector([make_local] * 2)
        obs_r, _ = remote.reset(seed=[3, 4])
        obs_l, _ = local.reset(seed=[3, 4])
        assert np.array_equal(obs_r["frames"], obs_l["frames"])
        for _ in range(4):
            step_r, step_l = remote.step(np.array([1, 2])), local.step(np.array([1, 2]))
            assert np.array_equal(step_r[0]["frames"], step_l[0]["frames"])
            assert np.array_equal(step_r[1], step_l[1])
        remote.close(), local.close()


def test_remote_vector_env_overlaps_requests_and_matches_in_process(served_world):
    from vln_gym.remote.vector import RemoteVectorEnv

    remote = RemoteVectorEnv(served_world, num_envs=3)
    local = gym.vector.SyncVectorEnv([partial(gym.make, "VLN-v0", **WORLD)] * 3)
    (obs_remote, info_remote), (obs_local, info_local) = remote.reset(seed=7), local.reset(seed=7)
    assert np.array_equal(obs_remote["frames"], obs_local["frames"])
    assert list(obs_remote["instruction"]) == list(obs_local["instruction"])
    assert info_remote.keys() == info_local.keys()
    assert all(list(info_remote[k]) == list(info_local[k]) for k in info_local)
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(40):  # long enough for episodes to end: autoreset runs through reset_async
        actions = rng.integers(0, 4, 3)
        result_remote, result_local = remote.step(actions), local.step(actions)
        assert all(np.array_equal(a, b) for a, b in zip(result_remote[1:4], result_local[1:4], strict=True))
        assert np.array_equal(result_remote[0]["frames"], result_local[0]["frames"])
        finished += int(np.sum(result_remote[2] | result_remote[3]))
    assert finished > 0
    remote.close(), local.close()


def test_a_request_sent_ahead_must_be_the_one_collected(served_world):
    env = RemoteVLNEnv(served_world)
    env.reset(seed=0)
    env.step_async(1)
    with pytest.raises(RuntimeError, match="already in flight"):
        env.step_async(2)
    with pytest.raises(RuntimeError, match="other arguments was sent ahead"):
        env.step(2)
    env.step_async(3)
    assert env.step(3)[4]["actions"] == (3,)  # the connection stayed in step
    env.close()


def test_jpeg_frames_are_close_and_smaller(served_world):
    raw, jpeg = RemoteVLNEnv(served_world), RemoteVLNEnv(served_world, frames="jpeg", jpeg_quality=95)
    obs_raw, info_raw = raw.reset(seed=2)
    obs_jpeg, info_jpeg = jpeg.reset(seed=2)
    assert same(info_raw, info_jpeg) and obs_jpeg["frames"].shape == obs_raw["frames"].shape
    difference = np.abs(obs_jpeg["frames"].astype(int) - obs_raw["frames"].astype(int))
    assert difference.mean() < 3.0
    assert jpeg.bytes_received < raw.bytes_received
    assert same(raw.get_state(), jpeg.get_state())  # snapshots stay exact
    raw.close(), jpeg.close()


def test_a_dead_server_is_a_clear_error_and_reset_reconnects():
    process, address = start_server(WORLD)
    env = RemoteVLNEnv(address, connect_timeout=20)
    env.reset(seed=0)
    os.killpg(process.pid, signal.SIGKILL)  # the server and the child serving this connection
    process.wait()
    with pytest.raises(ServerConnectionError, match="went away"):
        env.step(1)
    with pytest.raises(ServerConnectionError, match="reconnects"):
        env.step(1)
    port = address.rsplit(":", 1)[1]
    for env_kwargs, works in ((WORLD, True), ({**WORLD, "history_frames": 1}, False)):
        command = ["serve", "--port", port, "--env-kwargs", json.dumps(env_kwargs)]
        restarted = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            if works:  # reconnected (retrying while the server starts), same env: carry on
                assert env.reset(seed=0)[1]["episode_id"]
                env.step(1)
            else:
                with pytest.raises(ServerConnectionError, match="another env"):
                    env.reset(seed=0)
        finally:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait()
        env._drop()  # the killed server's connection
    env.close()
    with pytest.raises(ServerConnectionError, match="no env server at"):
        RemoteVLNEnv(address, connect_timeout=0.5)


class TrainerScoredBackend(VLNBackend):
    """A stand-in simulator that reports poses but no reward (as the Habitat backend does)."""

    def spec(self) -> dict:
        return {**super().spec(), "reward": "trainer"}

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        info = {k: v for k, v in info.items() if k not in ("reward_terms", "metrics", "success")}
        info["geodesic_distance"] = self.env._episode.geodesic_distance
        return obs, None, terminated, truncated, info

    def reset(self, seed, options):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "success_distance": self.env._success_distance}


def test_trainer_side_rewards_and_metrics_equal_the_envs():
    server, address = serve_in_thread(partial(TrainerScoredBackend, WORLD))
    remote, local = RemoteVLNEnv(address), gym.make("VLN-v0", **WORLD)
    try:
        for seed in (0, 1):
            remote.reset(seed=seed), local.reset(seed=seed)
            for t in range(80):
                action = 0 if t == 40 else 1 + t % 3
                _, r_remote, term, trunc, info_remote = remote.step(action)
                _, r_local, _, _, info_local = local.step(action)
                assert r_remote == pytest.approx(r_local) and info_remote["reward_terms"] == pytest.approx(
                    info_local["reward_terms"]
                )
                if term or trunc:
                    for key in ("success", "spl", "navigation_error", "trajectory_length", "ndtw"):
                        assert info_remote["metrics"][key] == pytest.approx(info_local["metrics"][key])
                    break
    finally:
        remote.close()
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- python 3.8
def test_server_module_py38_stdlib_and_numpy_only():
    """The server module is valid Python 3.8 (vermin) and imports nothing beyond the stdlib and numpy."""
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    result = subprocess.run(
        [vermin, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations", str(SERVER_MODULE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tree = ast.parse(SERVER_MODULE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - sys.stdlib_module_names - {"numpy", "PIL", "__future__"} == set()
    assert "pickle" not in imported and "marshal" not in imported


def test_server_module_compiles_under_a_real_python38():
    python38 = shutil.which(
        "python3.8", path=os.environ.get("PATH", "") + ":/root/.pyenv/versions/3.8.18/bin"
    )
    if python38 is None:
        pytest.skip("no python3.8 on this machine (vermin still checks the syntax)")
    result = subprocess.run(
        [
            python38,
            "-c",
            f"import ast; ast.parse(open({str(SERVER_MODULE)!r}).read(), feature_version=(3, 8))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYENV_VERSION": "3.8.18"},
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------- training
def test_ppo_iteration_against_two_served_envs(tmp_path):
    """A PPO iteration whose two envs are served (thread server: one env per connection)."""
    from agents.ppo_train import PPOConfig, ppo_train

    served = {**WORLD, "image_size": (28, 28), "action_space": "text"}
    server, address = serve_in_thread(partial(VLNBackend, served))
    try:
        with pytest.raises(ValueError, match="needs forward_step and turn_angle"):
            PPOConfig(env_kwargs={"server": address})
        config = PPOConfig(
            output_dir=str(tmp_path / "run"),
            env_kwargs={"server": address, "action_space": "text", "forward_step": 0.5, "turn_angle": 45.0},
            num_iterations=1,
            num_envs=2,
            rollout_steps=3,
            minibatch_size=3,
            sft_steps=0,
            max_new_tokens=4,
            progress=False,
            tensorboard=False,
        )
        result = ppo_train(config)
    finally:
        server.shutdown()
        server.server_close()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["rollout/decisions"] == 6 and rows[0]["optimizer_steps"] > 0
    assert math.isfinite(rows[0]["loss/policy"]) and rows[0]["episode/count"] >= 1
    assert result is not None


def test_bench_server_smoke():
    """scripts/bench_server.py runs end to end and ends with its JSON line (tiny sizes)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_server.py"
    command = [sys.executable, str(script), "--seconds", "0.3", "--envs", "1", "2", "--image-size", "24"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "bench_server" and figures["remote_vector_2_steps_per_s"] > 0
    assert 0 < figures["bytes_per_step_jpeg"] < figures["bytes_per_step_raw"]
