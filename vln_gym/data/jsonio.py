"""Streaming record readers that know where each record is: jsonl lines, JSON array elements, Parquet rows.

Both accept a UTF-8 BOM (stripped; the first record is kept) and Windows line endings. Unparseable
input becomes a `Problem` in the stream instead of an exception, so validation reports every line.

Records are parsed by msgspec (several times faster than the standard library) whenever it accepts
them; what it refuses (bad JSON, but also ``NaN`` / ``Infinity``, lone surrogate escapes, ``1e400``) is
parsed again by the standard library's `json`, which gives either the same value as before or the error
message with its column. So the values and the problems are those of `json.loads`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from vln_gym.data.problems import Location, Problem

BOM = b"\xef\xbb\xbf"
Item = tuple[Location, Any] | Problem
REFUSED = object()  # `fast_loads` could not parse the input: parse it with `json`
_DECODER = msgspec.json.Decoder()
_RAW_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])
_ELEMENT_GAP = re.compile(rb"[ \t\r\n]*,?[ \t\r\n]*")


def fast_loads(data: bytes) -> Any:
    """The value of the JSON document ``data`` (equal to `json.loads`' value), or `REFUSED`."""
    try:
        return _DECODER.decode(data)
    except (ValueError, RecursionError):  # msgspec.DecodeError and UnicodeDecodeError are ValueErrors
        return REFUSED


def json_error_message(text: str, error: json.JSONDecodeError) -> str:
    where = f"{error.msg}{'' if error.msg.endswith(' at') else ' at'} column {error.colno}"
    # The scanner only reports an unterminated string when it reached the end of the text.
    if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
        return f"truncated JSON ({where})"
    return f"invalid JSON ({where})"


def _utf8_problem(path: str, line: int, error: UnicodeDecodeError) -> Problem:
    return Problem(path, line, "json", f"not valid UTF-8 (byte {error.object[error.start]:#04x})")


TOO_DEEP = "JSON nested too deeply (Python's recursion limit): not a dataset record"


def _first_char(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096)
    return head.removeprefix(BOM).lstrip()[:1].decode("ascii", errors="replace")


def iter_json_records(path: Path) -> Iterator[Item]:
    """Records of a ``.jsonl`` file, or of a ``.json`` file (a JSON array, one object, or one per line)."""
    name = str(path)
    try:
        first = _first_char(path)
    except FileNotFoundError:
        yield Problem(name, None, "file", "file not found")
        return
    except OSError as error:
        yield Problem(name, None, "file", f"cannot read file ({error.strerror or error})")
        return
    if not first:
        yield Problem(name, None, "file", "empty file: no records")
        return
    is_json = path.suffix.lower() == ".json"
    if first == "[" and is_json:
        yield from iter_json_array(path)
    elif first == "{" and is_json and (single := _single_object(path)) is not None:
        yield Location(name, 1), single
    else:
        yield from iter_jsonl(path)


def _single_object(path: Path) -> dict | None:
    """The object of a ``.json`` file holding exactly one (pretty-printed) object, else ``None``."""
    try:
        value = json.loads(path.read_bytes().removeprefix(BOM).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def iter_jsonl(path: Path) -> Iterator[Item]:
    """One JSON value per line; blank lines are skipped; ``line`` is 1-based."""
    name = str(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(BOM)
            value = fast_loads(raw)
            if value is REFUSED:
                yield from _stdlib_line(name, number, raw)
            else:
                yield Location(name, number), value


def _stdlib_line(name: str, number: int, raw: bytes) -> Iterator[Item]:
    """The record of one jsonl line parsed by `json` (nothing for a blank line), or its problem."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        yield _utf8_problem(name, number, error)
        return
    if not text.strip():
        return
    try:
        yield Location(name, number), json.loads(text)
    except json.JSONDecodeError as error:
        yield Problem(name, number, "json", json_error_message(text, error))
    except RecursionError:
        yield Problem(name, number, "json", TOO_DEEP)


def iter_json_array(path: Path) -> Iterator[Item]:
    """Elements of one top-level JSON array, each with the line it starts on and its index."""
    name = str(path)
    data = path.read_bytes().removeprefix(BOM)
    fast = _fast_array(data)
    if fast is None:
        yield from _stdlib_array(name, data)
        return
    values, lines = fast
    for index, line in enumerate(lines):
        value, values[index] = values[index], None  # let each record go once its reader is done with it
        yield Location(name, line, index), value


def _stdlib_array(name: str, data: bytes) -> Iterator[Item]:
    """`iter_json_array` by `json`, element by element: the values before a problem, then the problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        yield _utf8_problem(name, data.count(b"\n", 0, error.start) + 1, error)
        return
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line, counted = 1, 0
    index = 0
    while True:
        position = _skip_space(text, position)
        if position < len(text) and text[position] == "]" and index == 0:
            yield Problem(name, text.count("\n", 0, position) + 1, "file", "empty JSON array: no records")
            return
        line += text.count("\n", counted, position)
        counted = position
        if position >= len(text):
            yield Problem(name, line, f"[{index}]", "truncated JSON array (no closing ']')")
            return
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            line_of_error = text.count("\n", 0, error.pos) + 1
            yield Problem(name, line_of_error, f"[{index}]", json_error_message(text, error))
            return
        except RecursionError:  # the element's end cannot be found: the records before it stand
            yield Problem(name, line, f"[{index}]", TOO_DEEP)
            return
        yield Location(name, line, index), value
        index += 1
        position = _skip_space(text, end)
        if position >= len(text):
            line += text.count("\n", counted, position)
            yield Problem(name, line, f"[{index}]", "truncated JSON array (no closing ']')")
            return
        if text[position] == "]":
            break
        if text[position] != ",":
            line += text.count("\n", counted, position)
            yield Problem(
                name, line, f"[{index}]", f"invalid JSON array (expected ',' or ']', got {text[position]!r})"
            )
            return
        position += 1
    rest = text[position + 1 :].strip()
    if rest:
        yield Problem(name, text.count("\n", 0, position) + 1, "json", "extra data after the JSON array")


def _fast_array(data: bytes) -> tuple[list, list[int]] | None:
    """The elements of a non-empty JSON array that msgspec parses, with the line each starts on; ``None``
    for anything else (the slow path then reads it, or reports its problem)."""
    values = fast_loads(data)
    if not isinstance(values, list) or not values:
        return None
    start = data.index(b"[")
    line = data.count(b"\n", 0, start) + 1
    if data.find(b"\n", start, data.rindex(b"]")) < 0:  # one line (json.dump's default layout)
        return values, [line] * len(values)
    lines, counted, position = [], start, start + 1
    for raw in _RAW_ELEMENTS.decode(data):  # each element's exact text, so its length
        position = _ELEMENT_GAP.match(data, position).end()
        line += data.count(b"\n", counted, position)
        counted = position
        lines.append(line)
        position += len(raw)
    return values, lines


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def iter_parquet_records(path: Path, batch_rows: int = 4096) -> Iterator[Item]:
    """Rows of a Parquet file as dicts; a row's location is the file with its 0-based row index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(path)
    try:
        table = pq.ParquetFile(path)
    except FileNotFoundError:
        yield Problem(name, None, "file", "file not found")
        return
    except (OSError, pa.ArrowException) as error:
        yield Problem(name, None, "file", f"not a readable Parquet file ({error})")
        return
    index = 0
    for batch in table.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            yield Location(name, None, index), row
            index += 1
    if index == 0:
        yield Problem(name, None, "file", "empty Parquet file: no rows")
