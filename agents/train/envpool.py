"""``EnvPool``: ``num_envs`` copies of one env, each addressed on its own (reset, step, snapshot, restore).

Gymnasium's vector envs step every sub-env at once (with autoreset disabled they assert that none has
finished), so a runner that steps only live envs would have to send discarded pad actions. The pool takes
``{env index: action}`` for any subset instead. ``mode="sync"`` keeps the envs in this process;
``mode="async"`` runs one worker process per env (``spawn``, so no forked torch threads), each answering
one command at a time over a pipe. Commands to several envs are all sent before any answer is read, so the
workers run in parallel. In sync mode, served envs (``gym.make("VLN-v0", server=...)``) get the same
overlap from their servers: every request goes out before the first answer is read.

Snapshots are the envs' own ``get_state()`` / ``set_state()`` (``VLNEnv``: plain data, see its docstring).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import gymnasium as gym

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]
Reset = tuple[dict[str, Any], dict[str, Any]]


def make_env(env_id: str, env_kwargs: Mapping[str, Any]) -> gym.Env:
    """One env (importing vln_gym registers VLN-v0); top-level so a worker process can unpickle it. An
    unknown id or a keyword the env does not take is a ``ValueError`` naming it (gymnasium raises its own
    error, or the env's ``TypeError`` with every keyword's value appended)."""
    import vln_gym  # noqa: F401

    try:
        return gym.make(env_id, **dict(env_kwargs))
    except gym.error.Error as error:
        raise ValueError(f"env_id {env_id!r}: {error}") from error
    except TypeError as error:
        cause = error.__cause__ if isinstance(error.__cause__, TypeError) else error
        raise ValueError(f"env_kwargs: cannot make {env_id}: {cause}") from error


def _run_command(env: gym.Env, command: str, args: tuple) -> Any:
    if command == "step":
        obs, reward, terminated, truncated, info = env.step(args[0])
        return obs, float(reward), bool(terminated), bool(truncated), info
    if command == "reset":
        return env.reset(seed=args[0], options=args[1])
    if command == "get_state":
        return env.get_wrapper_attr("get_state")()
    if command == "set_state":
        if not _has_reset(env):  # gymnasium's OrderEnforcing refuses step() before a first reset()
            env.reset()
        return env.get_wrapper_attr("set_state")(args[0])
    if command == "get_attr":
        return env.get_wrapper_attr(args[0])
    if command == "render":
        return env.render()
    raise ValueError(f"unknown env pool command {command!r}")


def _has_reset(env: gym.Env) -> bool:
    try:
        return bool(env.get_wrapper_attr("has_reset"))
    except AttributeError:  # no OrderEnforcing wrapper
        return True


def _worker(env_fn: Callable[[], gym.Env], pipe: Any) -> None:
    """Worker loop: build the env, answer ``(command, args)`` with ``(True, result)`` / ``(False, error)``.
    Ctrl-C is the parent's to handle (it closes the pool): a terminal's SIGINT reaches every process of the
    group, and each worker printed its own KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        env = env_fn()
        pipe.send((True, None))
    except Exception:  # the parent reports it; the worker exits
        pipe.send((False, traceback.format_exc()))
        return
    while True:
        try:
            command, args = pipe.recv()
        except EOFError:
            break
        if command == "close":
            env.close()
            pipe.send((True, None))
            break
        try:
            pipe.send((True, _run_command(env, command, args)))
        except Exception:
            pipe.send((False, traceback.format_exc()))


def _send_ahead(envs: list[gym.Env], command: str, requests: Mapping[int, tuple]) -> None:
    """Served envs (``RemoteVLNEnv``) get every step / reset request before any answer is read, so their
    servers work in parallel while the sync loop collects the answers in order."""
    if command not in ("step", "reset") or len(requests) < 2:
        return
    for i, args in requests.items():
        client = envs[i].unwrapped
        if command == "step" and hasattr(client, "step_async"):
            client.step_async(args[0])
        elif command == "reset" and hasattr(client, "reset_async"):
            client.reset_async(seed=args[0], options=args[1])


class EnvPoolError(RuntimeError):
    """An env failed inside a worker process; the message holds the worker's traceback."""


class EnvPool:
    """``num_envs`` envs from ``env_fns``; every method addresses the envs it is given, and only those."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], mode: str = "sync") -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"env pool mode must be 'sync' or 'async', got {mode!r}")
        if not env_fns:
            raise ValueError("an env pool needs at least one env")
        self.mode = mode
        self.num_envs = len(env_fns)
        self._envs: list[gym.Env] = []
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        if mode == "sync":
            self._envs = [fn() for fn in env_fns]
            return
        context = mp.get_context("spawn")
        for fn in env_fns:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(fn, child), daemon=True)
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
        try:
            self._gather(range(self.num_envs))
        except EnvPoolError:
            self.close()
            raise

    # ------------------------------------------------------------------ transport
    def _gather(self, indices: Iterable[int]) -> dict[int, Any]:
        results: dict[int, Any] = {}
        failure = None
        for i in indices:
            ok, value = self._pipes[i].recv()
            if ok:
                results[i] = value
            else:
                last = value.strip().splitlines()[-1] if value.strip() else "unknown error"
                failure = failure or f"env {i} (worker process): {last}\n{value}"
        if failure:
            raise EnvPoolError(failure)
        return results

    def _call(self, command: str, requests: Mapping[int, tuple]) -> dict[int, Any]:
        if self.mode == "sync":
            _send_ahead(self._envs, command, requests)
            return {i: _run_command(self._envs[i], command, args) for i, args in requests.items()}
        for i, args in requests.items():
            self._pipes[i].send((command, args))
        return self._gather(requests)

    # ------------------------------------------------------------------ env API, per index
    def reset(self, requests: Mapping[int, tuple[int | None, dict[str, Any] | None]]) -> dict[int, Reset]:
        """``{i: (seed, options)}`` -> ``{i: (obs, info)}``."""
        return self._call("reset", {i: (seed, options) for i, (seed, options) in requests.items()})

    def step(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        """``{i: action}`` -> ``{i: (obs, reward, terminated, truncated, info)}``; other envs do nothing."""
        return self._call("step", {i: (action,) for i, action in actions.items()})

    def get_state(self, indices: Iterable[int]) -> dict[int, dict[str, Any]]:
        return self._call("get_state", {i: () for i in indices})

    def set_state(self, states: Mapping[int, Mapping[str, Any]]) -> dict[int, Reset]:
        """``{i: snapshot}`` -> ``{i: (obs, info)}`` of the restored moment."""
        return self._call("set_state", {i: (state,) for i, state in states.items()})

    def render(self, index: int) -> Any:
        """``render()`` of env ``index`` (made with ``render_mode="rgb_array"``)."""
        return self._call("render", {index: ()})[index]

    def get_attr(self, name: str, index: int = 0) -> Any:
        """Attribute ``name`` of env ``index`` (found through its wrappers)."""
        return self._call("get_attr", {index: (name,)})[index]

    def close(self) -> None:
        for env in self._envs:
            env.close()
        for pipe in self._pipes:
            try:
                pipe.send(("close", ()))
                pipe.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
        self._envs, self._pipes, self._processes = [], [], []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_env_pool(env_id: str, env_kwargs: Mapping[str, Any], num_envs: int, mode: str = "sync") -> EnvPool:
    """``num_envs`` copies of ``gym.make(env_id, **env_kwargs)`` (``mode`` = sync | async)."""
    return EnvPool([partial(make_env, env_id, dict(env_kwargs)) for _ in range(num_envs)], mode)
