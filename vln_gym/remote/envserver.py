"""Env server: one Gymnasium-style env per connection, over a small framed protocol. No pickle, ever.

This module needs only the Python standard library and numpy and runs on Python 3.8, so it can be
copied next to a simulator that pins an old Python (habitat-sim 0.1.7 / VLN-CE need 3.8) and serve it
to a trainer on 3.11. ``vln_gym.remote.client.RemoteVLNEnv`` is the other end.

Wire format: every message is ``MAGIC | u32 header length | u64 payload length`` (big-endian), a UTF-8
JSON header ``{"body": value, "blobs": [[dtype, shape, nbytes, codec], ...]}`` and the payload, the
blobs back to back. ``value`` is JSON with four tags: ``{"__a": i}`` (numpy array = blob i),
``{"__t": [...]}`` (tuple), ``{"__np": [dtype, x]}`` (numpy scalar), ``{"__f": "nan"|"inf"|"-inf"}``
(non-finite float). Requests are ``{"method": name, "args": {...}}``; answers ``{"ok": true, "result": x}``
or ``{"ok": false, "error": {"type": ..., "message": ...}}``.

Methods: ``hello`` first (protocol version, token, ``frames`` = ``"raw"`` | ``"jpeg"``; answered with
the backend's spec: spaces and attributes), then ``reset(seed, options)``, ``step(action)``,
``get_state()``, ``set_state(state)``, ``episode_metrics()``, ``close()``. Any other method is refused.
Sizes are bounded (``MAX_HEADER_BYTES``, ``max_payload``); a malformed message is answered with an error
and, when the framing itself is broken, the connection is closed. A failing backend call is answered
with its error; the server keeps serving.

A backend is any object with ``spec() -> dict``, ``reset(seed, options) -> (obs, info)``,
``step(action) -> (obs, reward, terminated, truncated, info)``, ``get_state()``, ``set_state(state) ->
(obs, info)`` and ``close()`` (``episode_metrics()`` optional). ``serve(make_backend, ...)`` calls
``make_backend()`` once per connection, after the handshake.
"""

from __future__ import annotations

import hmac
import io
import json
import socket
import socketserver
import struct
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"VLNG"
_PREFIX = struct.Struct("!4sIQ")
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
MAX_BLOBS = 4096
MAX_DEPTH = 64
METHODS = ("hello", "reset", "step", "get_state", "set_state", "episode_metrics", "close")
DTYPES = frozenset(
    (
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
    )
)
_TAGS = ("__a", "__t", "__np", "__f", "__r")
MEMO_MIN_LENGTH = 8  # a tuple this long, resent unchanged (the same object), goes as {"__r": 1}
MEMO_MAX_ENTRIES = 256
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Seconds a peer may stay silent inside a message (one that stalls mid-message would hold a server worker
# forever); between messages a connection may idle as long as it likes (a training update).
MESSAGE_TIMEOUT_S = 300.0
JPEG_PATH = "$.result[0].frames"  # the observation's frames in a reset / step / set_state answer


class ProtocolError(ValueError):
    """A message that does not follow the protocol (the text says which part)."""


class FramingError(ProtocolError):
    """The byte stream itself is broken (bad magic, oversized or truncated): the connection must close."""


class RemoteError(RuntimeError):
    """The other end answered a request with an error (``kind``: its exception type name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# ---------------------------------------------------------------------------------------------- encoding
class _Encoder:
    """Turns a value tree into JSON-safe data plus a list of binary blobs.

    Paths (for error messages) are kept as ``(parent, key)`` chains and spelled out only on an error;
    flat lists and tuples of plain scalars (poses, paths) are taken whole.
    """

    def __init__(self, jpeg_quality: Optional[int] = None, memo: Optional[Dict[str, Any]] = None) -> None:
        self.blobs: List[List[Any]] = []
        self.chunks: List[bytes] = []
        self.jpeg_quality = jpeg_quality  # only for the observation's frames (snapshots stay exact)
        self.memo = memo  # path -> the immutable tuple last sent there (a channel's, across messages)
        self.remembered: Dict[str, Any] = {}  # this message's additions, kept once it is packed

    def encode(self, value: Any, path: Any = "$", depth: int = 0) -> Any:
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is float:
            return value if value - value == 0 else {"__f": repr(value)}
        if depth > MAX_DEPTH:
            raise ProtocolError(f"{_where(path)}: nested deeper than {MAX_DEPTH} levels")
        if kind is tuple and self.memo is not None and len(value) >= MEMO_MIN_LENGTH:
            return self._encode_memo(value, path, depth)
        if kind is tuple:
            return {"__t": self._items(value, path, depth)}
        if kind is list:
            return self._items(value, path, depth)
        if kind is dict:
            return self._encode_dict(value, path, depth)
        if isinstance(value, np.ndarray):
            return {"__a": self._blob(value, path)}
        if isinstance(value, np.generic):  # before float / int: np.float64 is also a float
            name = _dtype_name(value.dtype, path)
            return {"__np": [name, self.encode(value.item(), path, depth + 1)]}
        for base in (bool, int, str, float, tuple, list, dict):  # subclasses (IntEnum, namedtuple, ...)
            if isinstance(value, base):
                return self.encode(base(value), path, depth)
        raise ProtocolError(f"{_where(path)}: cannot send a {kind.__name__} (plain data and numpy only)")

    def _items(self, value: Any, path: Any, depth: int) -> List[Any]:
        if _flat(value):
            return list(value)
        return [self.encode(v, (path, i), depth + 1) for i, v in enumerate(value)]

    def _encode_memo(self, value: Tuple[Any, ...], path: Any, depth: int) -> Any:
        """A long tuple: ``{"__r": 1}`` when this very object went to this path before; else sent whole,
        and remembered when it is deeply immutable (plain scalars, and tuples of them)."""
        where = _where(path)
        if self.memo.get(where) is value:
            return {"__r": 1}
        items = self._items(value, path, depth)
        if all(_flat(v) if type(v) is tuple else _flat((v,)) for v in value):
            self.remembered[where] = value
        return {"__t": items}

    def _encode_dict(self, value: Dict[Any, Any], path: Any, depth: int) -> Dict[str, Any]:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(
                    f"{_where(path)}: dict keys must be str, got {type(key).__name__} {key!r:.40}"
                )
            if key in _TAGS:
                raise ProtocolError(f"{_where(path)}: key {key!r} is reserved by the protocol")
            out[key] = self.encode(item, (path, key), depth + 1)
        return out

    def _blob(self, array: np.ndarray, path: Any) -> int:
        name = _dtype_name(array.dtype, path)
        if len(self.blobs) >= MAX_BLOBS:
            raise ProtocolError(f"{_where(path)}: more than {MAX_BLOBS} arrays in one message")
        codec = "raw"
        if self.jpeg_quality is not None and _is_frame_stack(array) and _where(path) == JPEG_PATH:
            data = _jpeg_encode(array, self.jpeg_quality)
            codec = "jpeg:" + ",".join(str(len(part)) for part in data)
            payload = memoryview(b"".join(data))
        else:
            little = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
            payload = memoryview(little.reshape(-1).view(np.uint8))
        self.blobs.append([name, list(array.shape), payload.nbytes, codec])
        self.chunks.append(payload)
        return len(self.blobs) - 1


_SCALARS = frozenset((str, int, bool, type(None)))


def _flat(items: Any) -> bool:
    """A list / tuple of plain scalars (finite floats included) that JSON carries as it is."""
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0:  # nan, inf
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _remember(memo: Dict[str, Any], entries: Dict[str, Any]) -> None:
    """Add ``entries`` to a channel's memo, starting it over when it would outgrow ``MEMO_MAX_ENTRIES``."""
    if len(memo) + len(entries) > MEMO_MAX_ENTRIES:
        memo.clear()
    memo.update(entries)


def _where(path: Any) -> str:
    """A ``(parent, key)`` chain as ``$.info.reference_path[3]``."""
    parts = []
    while isinstance(path, tuple):
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return str(path) + "".join(reversed(parts))


def _dtype_name(dtype: Any, path: Any) -> str:
    name = _DTYPE_NAMES.get(dtype) or np.dtype(dtype).name
    if name not in DTYPES:
        raise ProtocolError(
            f"{_where(path)}: dtype {name} is not sent (allowed: {', '.join(sorted(DTYPES))})"
        )
    return name


def _is_frame_stack(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim in (3, 4) and array.shape[-1] == 3 and array.size > 0


def _jpeg_encode(array: np.ndarray, quality: int) -> List[bytes]:
    from PIL import Image  # only a server asked for JPEG frames needs Pillow

    frames = array.reshape((-1, *array.shape[-3:]))
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def pack(body: Any, jpeg_quality: Optional[int] = None, memo: Optional[Dict[str, Any]] = None) -> bytes:
    """One framed message holding ``body`` (arrays as blobs; frame stacks as JPEG if a quality is given;
    ``memo``: a channel's record of the long tuples it sent, see ``MEMO_MIN_LENGTH``)."""
    return b"".join(pack_chunks(body, jpeg_quality, memo))


def pack_chunks(
    body: Any, jpeg_quality: Optional[int] = None, memo: Optional[Dict[str, Any]] = None
) -> List[Any]:
    """`pack` as buffers: prefix + header, then the arrays' own memory (no copy before the socket)."""
    encoder = _Encoder(jpeg_quality, memo)
    tree = encoder.encode(body)
    header = _JSON_ENCODER.encode({"body": tree, "blobs": encoder.blobs}).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {len(header)} bytes, over {MAX_HEADER_BYTES}")
    if memo is not None and encoder.remembered:
        _remember(memo, encoder.remembered)
    payload_length = sum(chunk.nbytes for chunk in encoder.chunks)
    return [_PREFIX.pack(MAGIC, len(header), payload_length) + header, *encoder.chunks]


# ---------------------------------------------------------------------------------------------- decoding
def unpack(header: bytes, payload: Any, memo: Optional[Dict[str, Any]] = None) -> Any:
    """The value of one message (``header`` JSON and its ``payload``); `ProtocolError` if malformed."""
    try:
        message = _JSON_DECODER.decode(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"header is not valid JSON: {error}") from None
    if not isinstance(message, dict) or set(message) != {"body", "blobs"}:
        raise ProtocolError("header must be a JSON object with exactly 'body' and 'blobs'")
    arrays = _arrays(message["blobs"], payload)
    return _decode(message["body"], (arrays, memo), "$", 0)


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"bare {name} in JSON (non-finite floats are tagged)")


_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_DTYPE_NAMES = {np.dtype(name): name for name in DTYPES}


def _arrays(blobs: Any, payload: Any) -> List[np.ndarray]:
    if not isinstance(blobs, list) or len(blobs) > MAX_BLOBS:
        raise ProtocolError(f"'blobs' must be a list of at most {MAX_BLOBS} entries")
    arrays, offset = [], 0
    view = memoryview(payload)
    for index, blob in enumerate(blobs):
        where = f"blobs[{index}]"
        if not isinstance(blob, list) or len(blob) != 4:
            raise ProtocolError(f"{where}: expected [dtype, shape, nbytes, codec]")
        name, shape, nbytes, codec = blob
        if name not in DTYPES:
            raise ProtocolError(f"{where}: dtype {name!r} is not allowed")
        if not isinstance(shape, list) or len(shape) > 32 or not all(_count(n) for n in shape):
            raise ProtocolError(f"{where}: shape must be a list of non-negative ints")
        if not _count(nbytes) or offset + nbytes > len(payload):
            raise ProtocolError(f"{where}: {nbytes!r} bytes do not fit the payload of {len(payload)}")
        data = view[offset : offset + nbytes]
        offset += nbytes
        arrays.append(_array(name, shape, data, codec, where))
    if offset != len(payload):
        raise ProtocolError(f"payload holds {len(payload) - offset} bytes no blob claims")
    return arrays


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _array(name: str, shape: List[int], data: memoryview, codec: Any, where: str) -> np.ndarray:
    dtype = np.dtype(name).newbyteorder("<")
    size = 1
    for n in shape:
        size *= n
    if codec == "raw":
        if size * dtype.itemsize != len(data):
            need = size * dtype.itemsize
            raise ProtocolError(f"{where}: shape {shape} of {name} needs {need} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    if isinstance(codec, str) and codec.startswith("jpeg:") and name == "uint8":
        return _jpeg_decode(shape, data, codec[5:], where)
    raise ProtocolError(f"{where}: unknown codec {codec!r}")


def _jpeg_decode(shape: List[int], data: memoryview, lengths_text: str, where: str) -> np.ndarray:
    from PIL import Image

    try:
        lengths = [int(part) for part in lengths_text.split(",")]
    except ValueError:
        raise ProtocolError(f"{where}: bad JPEG lengths {lengths_text!r:.60}") from None
    if len(shape) not in (3, 4) or shape[-1] != 3 or sum(lengths) != len(data) or min(lengths) < 0:
        raise ProtocolError(f"{where}: JPEG blob does not match shape {shape}")
    if len(lengths) != int(np.prod(shape[:-3])):
        raise ProtocolError(f"{where}: {len(lengths)} JPEG frames for shape {shape}")
    frames, offset = [], 0
    for length in lengths:
        try:
            image = Image.open(io.BytesIO(bytes(data[offset : offset + length])))
            if image.format != "JPEG" or image.size != (shape[-2], shape[-3]):
                raise ValueError(f"a {image.format} of {image.size}, not a JPEG of {shape[-2]}x{shape[-3]}")
            frame = np.asarray(image.convert("RGB"))
        except Exception as error:  # Pillow raises many types for broken data
            raise ProtocolError(f"{where}: not a JPEG frame ({error})") from None
        offset += length
        frames.append(frame)
    array = np.stack(frames)
    if array.shape[-3:] != tuple(shape[-3:]) or array.size != int(np.prod(shape)):
        raise ProtocolError(f"{where}: JPEG frames are {array.shape}, the header says {shape}")
    return array.reshape(shape)


def _decode(value: Any, context: Tuple[List[np.ndarray], Any], path: Any, depth: int) -> Any:
    kind = type(value)
    if kind is list:
        if _flat(value):
            return value
        if depth > MAX_DEPTH:
            raise ProtocolError(f"{_where(path)}: nested deeper than {MAX_DEPTH} levels")
        return [_decode(v, context, (path, i), depth + 1) for i, v in enumerate(value)]
    if kind is not dict:
        return value
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{_where(path)}: nested deeper than {MAX_DEPTH} levels")
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key in _TAGS:
            return _decode_tag(key, inner, context, path, depth)
    return {k: _decode(v, context, (path, k), depth + 1) for k, v in value.items()}


def _decode_tag(tag: str, inner: Any, context: Tuple[List[np.ndarray], Any], path: Any, depth: int) -> Any:
    arrays, memo = context
    if tag == "__t":
        if type(inner) is not list:
            raise ProtocolError(f"{_where(path)}: a tuple tag holds a list")
        result = tuple(_decode(inner, context, path, depth))
        if memo is not None and len(result) >= MEMO_MIN_LENGTH:
            _remember(memo, {_where(path): result})
        return result
    if tag == "__r":
        where = _where(path)
        if memo is None or where not in memo:
            raise ProtocolError(f"{where}: a repeat of a value never sent here")
        return memo[where]
    if tag == "__a":
        if not _count(inner) or inner >= len(arrays):
            raise ProtocolError(f"{_where(path)}: array reference {inner!r:.40} names no blob")
        return arrays[inner]
    if tag == "__f":
        if inner not in ("nan", "inf", "-inf"):
            raise ProtocolError(f"{_where(path)}: float tag must be nan, inf or -inf, got {inner!r:.20}")
        return float(inner)
    if not (type(inner) is list and len(inner) == 2 and inner[0] in DTYPES):
        raise ProtocolError(f"{_where(path)}: a numpy scalar tag holds [dtype, value]")
    try:
        return np.dtype(inner[0]).type(_decode(inner[1], context, path, depth + 1))
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError(f"{_where(path)}: {inner[1]!r:.40} is not a {inner[0]} ({error})") from None


# ---------------------------------------------------------------------------------------------- framing
def _send_all(sock: socket.socket, chunks: List[Any]) -> int:
    """Send every buffer in order (scatter-gather, no joining copy); returns the bytes sent."""
    views = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
    total = sum(view.nbytes for view in views)
    if not hasattr(sock, "sendmsg"):  # Windows
        sock.sendall(b"".join(views))
        return total
    while views:
        sent = sock.sendmsg(views[:64])
        while sent:
            if sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            else:
                views[0], sent = views[0][sent:], 0
    return total


class Channel:
    """Framed messages over a connected socket, with bounded sizes."""

    def __init__(self, sock: socket.socket, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        self.sock = sock
        self.max_payload = int(max_payload)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # a step's frames in one go, not in pieces
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        self._file = sock.makefile("rb")
        self._sent: Dict[str, Any] = {}  # the long tuples each side already has (see MEMO_MIN_LENGTH)
        self._received: Dict[str, Any] = {}

    def send(self, body: Any, jpeg_quality: Optional[int] = None) -> int:
        chunks = pack_chunks(body, jpeg_quality, self._sent)
        return _send_all(self.sock, chunks)

    def receive(self) -> Tuple[Any, int]:
        """``(value, bytes read)``; `EOFError` when the other end closed cleanly between messages; a peer
        silent for `MESSAGE_TIMEOUT_S` inside a message raises ``socket.timeout`` (an OSError; the bound is
        per read, not on the message's whole time)."""
        first = self._file.read(1)
        if not first:
            raise EOFError("connection closed")
        previous = self.sock.gettimeout()
        self.sock.settimeout(MESSAGE_TIMEOUT_S if previous is None else min(previous, MESSAGE_TIMEOUT_S))
        try:
            return self._rest_of_message(first)
        finally:
            self.sock.settimeout(previous)

    def _rest_of_message(self, first: bytes) -> Tuple[Any, int]:
        prefix = first + self._file.read(_PREFIX.size - 1)
        if len(prefix) < _PREFIX.size:
            raise FramingError("connection closed inside a message prefix")
        magic, header_length, payload_length = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise FramingError(f"bad magic {magic!r}: not a vln-gym env-server message")
        if header_length > MAX_HEADER_BYTES:
            raise FramingError(f"header of {header_length} bytes, over the {MAX_HEADER_BYTES} allowed")
        if payload_length > self.max_payload:
            raise FramingError(f"payload of {payload_length} bytes, over the {self.max_payload} allowed")
        header = self._read_exactly(header_length)
        payload = np.empty(payload_length, dtype=np.uint8)  # not zero-filled: every byte is read into
        if payload_length and self._file.readinto(payload) != payload_length:
            raise FramingError("connection closed inside a message payload")
        return unpack(header, payload, self._received), _PREFIX.size + header_length + payload_length

    def _read_exactly(self, n: int) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            raise FramingError("connection closed inside a message header")
        return data

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.sock.close()


# ---------------------------------------------------------------------------------------------- serving
class Session:
    """One connection's conversation: the handshake, then backend calls, one request at a time."""

    def __init__(self, make_backend: Callable[[], Any], token: Optional[str]) -> None:
        self.make_backend = make_backend
        self.token = token
        self.backend: Any = None
        self.jpeg_quality: Optional[int] = None
        self.closed = False

    def answer(self, request: Any) -> Dict[str, Any]:
        """The answer to one decoded request (never raises for a bad request or a failing backend)."""
        try:
            return {"ok": True, "result": self._dispatch(request)}
        except Exception as error:  # every failure goes back to the caller as an error message
            return {"ok": False, "error": {"type": type(error).__name__, "message": str(error)}}

    def _dispatch(self, request: Any) -> Any:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise ProtocolError("a request is {'method': name, 'args': {...}}")
        method, args = request["method"], request.get("args", {})
        if method not in METHODS:
            raise ProtocolError(f"unknown method {method!r:.60} (methods: {', '.join(METHODS)})")
        if not isinstance(args, dict):
            raise ProtocolError(f"{method}: 'args' must be an object")
        if method == "hello":
            return self._hello(args)
        if self.backend is None:
            raise ProtocolError(f"{method}: say hello first")
        if method == "close":
            self.closed = True
            return None
        if method == "reset":
            return list(self.backend.reset(args.get("seed"), args.get("options")))
        if method == "step":
            obs, reward, terminated, truncated, info = self.backend.step(args.get("action"))
            return [obs, None if reward is None else float(reward), bool(terminated), bool(truncated), info]
        if method == "set_state":
            return list(self.backend.set_state(args.get("state")))
        if method == "episode_metrics" and not hasattr(self.backend, "episode_metrics"):
            raise ProtocolError("episode_metrics: this backend does not compute metrics")
        return getattr(self.backend, method)()

    def _hello(self, args: Dict[str, Any]) -> Any:
        if self.backend is not None:
            raise ProtocolError("hello: already connected")
        if args.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"hello: protocol version {args.get('version')!r}, server speaks {PROTOCOL_VERSION}"
            )
        if self.token is not None and not hmac.compare_digest(str(args.get("token", "")), self.token):
            self.closed = True
            raise PermissionError("hello: wrong or missing token")
        frames = args.get("frames", "raw")
        if frames not in ("raw", "jpeg"):
            raise ProtocolError(f"hello: frames must be 'raw' or 'jpeg', got {frames!r:.20}")
        if frames == "jpeg":
            quality = args.get("jpeg_quality", 90)
            if not _count(quality) or not 1 <= quality <= 100:
                raise ProtocolError(f"hello: jpeg_quality must be an int in 1..100, got {quality!r:.20}")
            import PIL  # noqa: F401  (refuse JPEG up front when the server cannot encode it)

            self.jpeg_quality = int(quality)
        self.backend = self.make_backend()
        return self.backend.spec()

    def close(self) -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()


def handle_connection(
    sock: socket.socket,
    make_backend: Callable[[], Any],
    token: Optional[str],
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> None:
    """Serve one connection until it closes; malformed input is answered, broken framing ends it."""
    channel = Channel(sock, max_payload)
    session = Session(make_backend, token)
    try:
        while not session.closed:
            try:
                request, _ = channel.receive()
            except EOFError:
                break
            except FramingError as error:
                channel.send({"ok": False, "error": {"type": "FramingError", "message": str(error)}})
                break
            except ProtocolError as error:
                channel.send({"ok": False, "error": {"type": "ProtocolError", "message": str(error)}})
                continue
            answer = session.answer(request)
            try:
                channel.send(answer, session.jpeg_quality if answer["ok"] else None)
            except ProtocolError as error:  # the backend returned something the wire cannot carry
                channel.send({"ok": False, "error": {"type": "ProtocolError", "message": str(error)}})
    except OSError:  # the client went away mid-message
        pass
    finally:
        try:
            session.close()
        finally:
            channel.close()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        if server.forking:  # a forked child must not keep the listening socket (it would outlive the server)
            server.socket.close()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            handle_connection(self.request, server.make_backend, server.token, server.max_payload)
        except Exception:  # a backend that fails to close must not take the server down
            traceback.print_exc(file=sys.stderr)


class _ThreadingServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


if hasattr(socketserver, "ForkingMixIn"):

    class _ForkingServer(socketserver.ForkingMixIn, socketserver.TCPServer):
        allow_reuse_address = True
        block_on_close = False


def check_binding(host: str, token: Optional[str]) -> None:
    """A server bound beyond loopback must require a token (anyone who reaches it drives the env)."""
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    if not loopback and not token:
        raise ValueError(
            f"binding to {host!r} (beyond loopback) needs a shared token (--token or VLN_GYM_TOKEN)"
        )


def make_server(
    make_backend: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int = 0,
    token: Optional[str] = None,
    processes: bool = True,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> socketserver.TCPServer:
    """A bound server (``port=0``: any free port, see ``server.server_address``); ``serve_forever()`` runs it.

    ``processes=True`` (POSIX) forks one process per connection, so envs run in parallel and a crashing
    simulator takes only its own connection down; ``False`` serves each connection in a thread.
    """
    check_binding(host, token)
    forking = processes and hasattr(socketserver, "ForkingMixIn")
    server = (_ForkingServer if forking else _ThreadingServer)((host, port), _Handler)
    server.make_backend = make_backend
    server.forking = forking
    server.token = token
    server.max_payload = int(max_payload)
    return server


def serve_in_thread(make_backend: Callable[[], Any], **kwargs: Any) -> Tuple[socketserver.TCPServer, str]:
    """A thread-per-connection server in a daemon thread (tests, notebooks): ``(server, "host:port")``."""
    server = make_server(make_backend, processes=False, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"{host}:{port}"


def serve(
    make_backend: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int = 0,
    token: Optional[str] = None,
    processes: bool = True,
) -> None:
    """Serve until interrupted; prints ``listening on HOST:PORT`` (flushed) once bound."""
    server = make_server(make_backend, host, port, token, processes)
    bound_host, bound_port = server.server_address[:2]
    print(f"listening on {bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
