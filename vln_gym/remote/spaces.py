"""Gymnasium spaces as plain data for the env-server handshake, and back.

The forms (``{"type": "Box", "low": 0, "high": 255, "shape": [2, 224, 224, 3], "dtype": "uint8"}``,
``Discrete``, ``MultiBinary``, ``Dict``, ``UnicodeText``) are what a Python-3.8 backend without
gymnasium writes by hand (see ``scripts/habitat_vlnce_server.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from vln_gym.spaces import UnicodeText


def space_to_data(space: spaces.Space) -> dict[str, Any]:
    """A space as plain data (Box bounds collapse to one number when they are uniform)."""
    if isinstance(space, UnicodeText):
        return {"type": "UnicodeText", "max_length": space.max_length, "min_length": space.min_length}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_data(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": _uniform(space.low),
            "high": _uniform(space.high),
            "shape": list(space.shape),
            "dtype": space.dtype.name,
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": [int(n) for n in np.atleast_1d(space.n)]}
    raise TypeError(f"cannot describe a {type(space).__name__} for the env server")


def space_from_data(data: Any, where: str = "space") -> spaces.Space:
    """The space ``data`` describes; ``ValueError`` naming ``where`` for anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError(f"{where}: expected {{'type': ..., ...}}, got {data!r:.80}")
    kind = data["type"]
    try:
        if kind == "UnicodeText":
            return UnicodeText(int(data["max_length"]), min_length=int(data.get("min_length", 0)))
        if kind == "Dict":
            return spaces.Dict({k: space_from_data(v, f"{where}.{k}") for k, v in data["spaces"].items()})
        if kind == "Box":
            return spaces.Box(data["low"], data["high"], tuple(data["shape"]), dtype=np.dtype(data["dtype"]))
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiBinary":
            n = data["n"]
            return spaces.MultiBinary(n[0] if isinstance(n, list) and len(n) == 1 else n)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{where}: bad {kind} description {data!r:.80} ({error})") from None
    raise ValueError(f"{where}: unknown space type {kind!r}")


def _uniform(bound: np.ndarray) -> Any:
    flat = bound.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return bound
