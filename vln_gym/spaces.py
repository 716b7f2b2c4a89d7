"""`UnicodeText`: a Gymnasium space for arbitrary Unicode strings (instructions, text actions).

``gymnasium.spaces.Text`` only holds characters from a fixed charset, so Chinese, Hindi or emoji
instructions would fall outside it. ``UnicodeText`` holds any ``str`` of at most ``max_length``
characters. It is a ``Sequence`` of Unicode code points (``Discrete(0x110000)``) whose values are plain
``str`` objects, which is what both checkers need:

- Gymnasium's ``check_env`` only asks that values are ``in`` the space and equal across seeded resets.
- Stable-Baselines3's ``check_env`` recognises a variable-length ``Sequence`` inside a ``Dict``: it warns
  that SB3 policies cannot consume it and skips its numeric return-value checks (a ``str`` can never be a
  numpy array, which those checks require of any other leaf space).

The module also registers shared-memory handlers so ``AsyncVectorEnv`` works with its default
``shared_memory=True``: each string travels as ``max_length`` int32 code points padded with -1.
``AsyncVectorEnv`` reads its shared memory once, at construction, and relies on the result staying live
(numpy views do); a tuple of ``str`` would stay frozen at that first read, so the reader returns a
``SharedTextBatch`` that decodes on access and deep-copies (the vector env's default ``copy=True``) into
a plain tuple of ``str``.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

MAX_CODE_POINT = 0x110000
_PAD = -1
# Characters sample() draws from: printable ASCII plus a few non-Latin scripts and an emoji.
DEFAULT_SAMPLE_CHARSET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.<>/'\"!?-_()"
    + "前后左右停止走"
    + "आगेबाएँ"
    + "é😀"
)


class UnicodeText(spaces.Sequence):
    """Any Python ``str`` with ``min_length <= len(s) <= max_length`` (any Unicode code points)."""

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 0,
        sample_charset: str = DEFAULT_SAMPLE_CHARSET,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not 0 <= int(min_length) <= int(max_length):
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length} and {max_length}")
        if not sample_charset:
            raise ValueError("sample_charset must not be empty")
        self.max_length = int(max_length)
        self.min_length = int(min_length)
        self.sample_charset = sample_charset
        super().__init__(spaces.Discrete(MAX_CODE_POINT), seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string from ``sample_charset``; ``mask`` / ``probability`` are not supported."""
        if mask is not None or probability is not None:
            raise NotImplementedError("UnicodeText.sample does not support mask or probability")
        upper = min(self.max_length, self.min_length + 32)
        length = int(self.np_random.integers(self.min_length, upper + 1))
        picks = self.np_random.integers(0, len(self.sample_charset), size=length)
        return "".join(self.sample_charset[int(i)] for i in picks)

    def to_jsonable(self, sample_n: Sequence[str]) -> list[str]:  # type: ignore[override]
        return list(sample_n)

    def from_jsonable(self, sample_n: Iterable[str]) -> list[str]:  # type: ignore[override]
        return [str(sample) for sample in sample_n]

    def __repr__(self) -> str:
        return f"UnicodeText(min_length={self.min_length}, max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UnicodeText)
            and other.min_length == self.min_length
            and other.max_length == self.max_length
        )

    def __hash__(self) -> int:
        return hash((UnicodeText, self.min_length, self.max_length))


def encode_code_points(space: UnicodeText, value: str) -> np.ndarray:
    """``value`` as ``max_length`` int32 code points, padded with -1."""
    if not space.contains(value):
        raise ValueError(f"{value!r} is not in {space}")
    codes = np.full(space.max_length, _PAD, dtype=np.int32)
    if value:
        codes[: len(value)] = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return codes


def decode_code_points(codes: np.ndarray) -> str:
    """Inverse of :func:`encode_code_points`."""
    valid = np.asarray(codes[codes != _PAD], dtype="<u4")
    return valid.tobytes().decode("utf-32-le", "surrogatepass")


class SharedTextBatch(Sequence):
    """Live view of ``n`` strings in shared memory; ``copy``/``deepcopy`` give a ``tuple`` of ``str``."""

    def __init__(self, codes: np.ndarray) -> None:
        self._codes = codes  # int32 [n, max_length], a view of the shared buffer

    def __len__(self) -> int:
        return self._codes.shape[0]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.to_tuple()[index]
        return decode_code_points(self._codes[index])

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_tuple())

    def to_tuple(self) -> tuple[str, ...]:
        return tuple(decode_code_points(row) for row in self._codes)

    def __copy__(self) -> tuple[str, ...]:
        return self.to_tuple()

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return self.to_tuple()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SharedTextBatch | tuple | list):
            return self.to_tuple() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SharedTextBatch({self.to_tuple()!r})"


@create_shared_memory.register(UnicodeText)
def _create_unicode_shared_memory(space: UnicodeText, n: int = 1, ctx: Any = mp) -> Any:
    return ctx.Array(np.dtype(np.int32).char, n * space.max_length)


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_from_shared_memory(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTextBatch:
    return SharedTextBatch(
        np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length))
    )


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_to_shared_memory(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    size = space.max_length
    destination = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)
    np.copyto(destination[index * size : (index + 1) * size], encode_code_points(space, value))
