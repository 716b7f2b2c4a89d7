"""Process a repeated prompt once: which observations / prompts of a batch are the same, and the KV cache
of the distinct ones spread back over the batch.

A GRPO group starts ``group_size`` episodes from one state, so its members' first observations are equal:
``VLMPolicy.generate`` then runs the processor, the vision tower and the prompt forward once per distinct
observation and expands the KV cache along the batch dimension (`spread_cache`), and its members share one
``PromptInputs`` object, which scoring recognises (`distinct_prompts`) to run the shared prompt once with
every response attending to its cache. Sharing is exact: the same computation per row, once.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

_PLAIN = (str, bytes, int, float, bool, type(None), np.generic)


def _fingerprint(obs: Any) -> Hashable | None:
    """A cheap key that equal observations share (arrays by shape and dtype), or None when the observation
    holds something this module does not compare (then it is never shared)."""
    if not isinstance(obs, Mapping):
        return None
    key = []
    for name in sorted(obs, key=str):
        value = obs[name]
        if isinstance(value, np.ndarray):
            key.append((name, value.shape, value.dtype.str))
        elif isinstance(value, _PLAIN):
            key.append((name, value))
        else:
            return None
    return tuple(key)


_SAMPLE_STRIDE = 1021  # a prime, so the sample does not line up with rows or channels


def _equal_arrays(a: np.ndarray, b: np.ndarray) -> bool:
    """Elementwise equality; a strided sample first, so two different frames cost microseconds."""
    if a.size > 16 * _SAMPLE_STRIDE and not np.array_equal(
        a.ravel()[::_SAMPLE_STRIDE], b.ravel()[::_SAMPLE_STRIDE]
    ):
        return False
    return np.array_equal(a, b)


def _same(a: Mapping, b: Mapping) -> bool:
    """Field-by-field equality of two observations with the same fingerprint."""
    return all(
        _equal_arrays(a[name], b[name]) if isinstance(a[name], np.ndarray) else bool(a[name] == b[name])
        for name in a
    )


def distinct_observations(observations: Sequence[Any]) -> tuple[list[int], list[int]]:
    """``(first, rows)``: ``first`` lists the index of the first occurrence of each distinct observation (in
    order), ``rows[i]`` is the position in ``first`` of observation ``i``'s copy. Two observations are the
    same when they have the same fields and every field is equal (arrays elementwise), so whatever a prompt is
    built from is equal too; an observation holding anything but arrays and plain values is never shared."""
    first: list[int] = []
    rows: list[int] = []
    seen: dict[Hashable, list[int]] = {}
    for index, obs in enumerate(observations):
        key = _fingerprint(obs)
        candidates = seen.setdefault(key, []) if key is not None else []
        row = next((j for j in candidates if _same(observations[first[j]], obs)), None)
        if row is None:
            row = len(first)
            first.append(index)
            candidates.append(row)
        rows.append(row)
    return first, rows


def distinct_prompts(prompts: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """``(unique, rows)`` by identity: the distinct objects in order of first appearance and, per prompt, the
    position of its object in ``unique``. ``generate`` hands the members of a group one shared object."""
    unique: list[Any] = []
    position: dict[int, int] = {}
    rows = []
    for prompt in prompts:
        row = position.get(id(prompt))
        if row is None:
            row = position[id(prompt)] = len(unique)
            unique.append(prompt)
        rows.append(row)
    return unique, rows


def spread_cache(cache, rows: torch.Tensor) -> None:
    """Expand a KV cache of the distinct prompts to one row per batch member, in place (``rows[i]`` = the
    cache row member ``i`` reads). Differentiable: gradients of the copies add up on the shared row."""
    cache.batch_select_indices(rows)
