"""`RemoteVLNEnv`: a Gymnasium env whose simulator runs behind an env server (``vln_gym.remote.envserver``).

``gym.make("VLN-v0", server="host:port")`` returns one. Each instance holds one connection, and the
server gives each connection its own env, so a vector env of N clients to one address runs N envs.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import gymnasium as gym

from vln_gym.remote import envserver
from vln_gym.remote.envserver import Channel, FramingError, RemoteError
from vln_gym.remote.scoring import TrainerScoring
from vln_gym.remote.spaces import space_from_data

CLIENT_OPTIONS = ("token", "frames", "jpeg_quality", "timeout", "connect_timeout", "rewards")


class ServerConnectionError(ConnectionError):
    """The env server could not be reached, or went away (the message says which and what to do)."""


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) -> ``(host, port)``; ValueError otherwise."""
    host, sep, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server must be 'host:port', got {address!r}")
    return host, int(port)


class RemoteVLNEnv(gym.Env[dict[str, Any], Any]):
    """VLN-v0 with the simulator in another process or on another machine.

    ## Arguments

    - ``server``: ``"host:port"`` of ``vln-gym serve`` or any backend served by ``envserver.serve``.
    - ``token``: the server's shared token (required when it binds beyond loopback).
    - ``frames``: ``"raw"`` (uint8, exact) or ``"jpeg"`` (smaller, lossy; the server needs Pillow).
    - ``jpeg_quality`` (90), ``timeout`` (seconds per call, 300), ``connect_timeout`` (seconds of retries
      while the server starts, 30).
    - ``rewards``: for a backend that leaves rewards to the trainer (``reward: "trainer"``, e.g. Habitat),
      anything ``rewards.make_reward`` accepts; a backend that scores itself (our ``VLNEnv``) takes its
      rewards from ``vln-gym serve --env-kwargs``.
    - Any attribute the server reports (``forward_step``, ``views``, ``max_steps``, ...): checked, so a
      trainer configured for 0.25 m steps refuses a server that moves 0.5 m. Env arguments themselves
      belong to the server.

    Spaces, attributes and the episode's privileged ``info`` come from the server. If the server dies,
    ``reset()`` and ``set_state()`` reconnect (a fresh env); ``step()`` raises `ServerConnectionError`.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        frames: str = "raw",
        jpeg_quality: int = 90,
        timeout: float = 300.0,
        connect_timeout: float = 30.0,
        rewards: Any = None,
        render_mode: str | None = None,
        **expected: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError("render_mode: a served env does not render; record its observations' frames")
        if frames not in ("raw", "jpeg"):
            raise ValueError(f"frames must be 'raw' or 'jpeg', got {frames!r}")
        self.address = parse_address(server)
        self.server = server
        self._hello = {"version": envserver.PROTOCOL_VERSION, "token": token or "", "frames": frames}
        if frames == "jpeg":
            self._hello["jpeg_quality"] = int(jpeg_quality)
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self._channel: Channel | None = None
        self._pending: tuple[str, dict[str, Any]] | None = None  # a request sent ahead (step_async)
        self.bytes_sent = self.bytes_received = 0
        spec = self._spec = self._connect()
        self.observation_space = space_from_data(spec.get("observation_space"), "observation_space")
        self.action_space = space_from_data(spec.get("action_space"), "action_space")
        self.backend = str(spec.get("backend", "unknown"))
        self.attributes = dict(spec.get("attributes") or {})
        self.__dict__.update(self.attributes)
        if "image_size" in self.attributes:
            self.image_size = tuple(self.attributes["image_size"])
        self._check_expected(expected)
        self._scoring: TrainerScoring | None = None
        if spec.get("reward") == "trainer":
            success_distance = self.attributes.get("success_distance", 3.0)
            forward_step = self.attributes.get("forward_step", 0.25)
            self._scoring = TrainerScoring(rewards, success_distance, forward_step)
        elif rewards is not None:
            raise ValueError(
                f"rewards: the {self.backend} server computes its own rewards; set them in its --env-kwargs"
            )

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self._call("reset", {"seed": seed, "options": options}, reconnect=True)
        if self._scoring is not None:
            self._scoring.reset(info)
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._call("step", {"action": _plain(action)})
        if self._scoring is not None:
            reward, terms = self._scoring.step(info)
            info["reward_terms"] = terms
            info["success"] = self._scoring.success()
            if terminated or truncated:
                info["metrics"] = self._scoring.metrics()
        return obs, float(reward), bool(terminated), bool(truncated), info

    def step_async(self, action: Any) -> None:
        """Send ``step(action)`` now; the next ``step(action)`` only waits for its answer. Several envs'
        requests sent before any answer is read step their servers in parallel (`RemoteVectorEnv`)."""
        self._send_ahead("step", {"action": _plain(action)})

    def reset_async(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        """Send ``reset(seed=, options=)`` now; the next ``reset`` with the same arguments collects it."""
        self._send_ahead("reset", {"seed": seed, "options": options})

    def get_state(self) -> dict[str, Any]:
        """The server env's snapshot (plus the trainer-side scorer's state, when rewards are scored here)."""
        state = self._call("get_state", {})
        if self._scoring is None:
            return state
        return {"server": state, "scoring": self._scoring.snapshot()}

    def set_state(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._scoring is not None:
            obs, info = self._call("set_state", {"state": state["server"]}, reconnect=True)
            self._scoring.restore(state["scoring"])
            return obs, info
        return tuple(self._call("set_state", {"state": state}, reconnect=True))

    def episode_metrics(self) -> dict[str, Any]:
        if self._scoring is not None:
            return self._scoring.metrics()
        return self._call("episode_metrics", {})

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            channel.send({"method": "close", "args": {}})
            channel.receive()
        except (OSError, EOFError, envserver.ProtocolError):
            pass
        finally:
            channel.close()

    # ------------------------------------------------------------------ transport
    def _connect(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                sock = socket.create_connection(self.address, timeout=self.timeout)
                break
            except OSError as error:
                if time.monotonic() >= deadline:
                    raise ServerConnectionError(
                        f"no env server at {self.server} ({error}); start one with `vln-gym serve --port "
                        f"{self.address[1]}` or check the address"
                    ) from None
                time.sleep(0.2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._channel = Channel(sock)
        try:
            self._send("hello", self._hello)
            return self._answer("hello")
        except (OSError, EOFError, FramingError) as error:
            self._drop()
            raise ServerConnectionError(
                f"the env server at {self.server} closed the connection during the handshake ({error})"
            ) from None

    def _reconnect(self) -> None:
        spec = self._connect()
        if spec != self._spec:
            self._drop()
            raise ServerConnectionError(
                f"the env server at {self.server} came back serving another env (its spaces or attributes "
                "changed); make a new env"
            )

    def _call(self, method: str, args: dict[str, Any], reconnect: bool = False) -> Any:
        sent = self._collect_pending(method, args)
        if not sent:
            self._ensure_connected(method, reconnect)
        try:
            if not sent:
                self._send(method, args)
            return self._answer(method)
        except (OSError, EOFError, FramingError) as error:
            self._drop()
            if not reconnect:
                raise ServerConnectionError(
                    f"{method}(): the env server {self.server} went away ({error}); the episode in flight "
                    "is lost; reset() or set_state() reconnects"
                ) from None
        self._reconnect()
        self._send(method, args)
        return self._answer(method)

    def _ensure_connected(self, method: str, reconnect: bool) -> None:
        if self._channel is None and reconnect:
            self._reconnect()
        if self._channel is None:
            raise ServerConnectionError(
                f"{method}(): not connected to {self.server} (it went away); reset() or set_state() "
                "reconnects"
            )

    def _send_ahead(self, method: str, args: dict[str, Any]) -> None:
        """Send a request now and read its answer in the next call of the same method (same arguments)."""
        if self._pending is not None:
            raise RuntimeError(f"a {self._pending[0]}() request is already in flight: collect it first")
        self._ensure_connected(method, reconnect=method == "reset")
        try:
            self._send(method, args)
        except (OSError, FramingError):
            self._drop()  # the blocking call reconnects (reset) or says the server went away
            return
        self._pending = (method, args)

    def _collect_pending(self, method: str, args: dict[str, Any]) -> bool:
        """Whether this call's request is already in flight; a different one in flight is an error."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        try:
            if pending == (method, args):
                return True
        except ValueError:  # arrays in options: compared as different
            pass
        with contextlib.suppress(Exception):
            self._answer(pending[0])  # keep the connection in step, then refuse
        raise RuntimeError(
            f"{method}(): a {pending[0]}() request with other arguments was sent ahead (step_async / "
            "reset_async) and not collected"
        )

    def _send(self, method: str, args: dict[str, Any]) -> None:
        self.bytes_sent += self._channel.send({"method": method, "args": args})

    def _answer(self, method: str) -> Any:
        answer, size = self._channel.receive()
        self.bytes_received += size
        if not isinstance(answer, dict) or "ok" not in answer:
            raise envserver.ProtocolError(f"{method}: the server's answer is not {{'ok': ...}}")
        if not answer["ok"]:
            error = answer.get("error") or {}
            raise RemoteError(str(error.get("type", "Error")), str(error.get("message", "")))
        return answer.get("result")

    def _drop(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            with contextlib.suppress(OSError):
                channel.close()

    def _check_expected(self, expected: dict[str, Any]) -> None:
        if "action_space" in expected and "text_actions" in self.attributes:  # VLNEnv's argument, by name
            expected = dict(expected)
            served = "text" if self.attributes["text_actions"] else "discrete"
            if expected.pop("action_space") != served:
                raise ValueError(f"action_space: the server at {self.server} takes {served} actions")
        for name, value in expected.items():
            if name not in self.attributes:
                raise TypeError(
                    f"RemoteVLNEnv got {name}={value!r}, which the {self.backend} server does not report "
                    f"(it reports {', '.join(sorted(self.attributes))}); env arguments belong to the "
                    "server (`vln-gym serve --env-kwargs`)"
                )
            served = self.attributes[name]
            if _plain(value) != served and not (isinstance(served, list) and list(value) == served):
                raise ValueError(
                    f"{name}: the server at {self.server} has {served!r}; this run asks {value!r}"
                )

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a RemoteVLNEnv holds a connection; make it inside the worker (pass env_fns)")


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (the wire keeps their type; the env wants the value)."""
    item = getattr(value, "item", None)
    return item() if item is not None and getattr(value, "ndim", 1) == 0 else value
