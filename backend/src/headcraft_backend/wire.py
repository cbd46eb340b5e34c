"""HeadCraft wire protocol: framing and array codec (stdlib + numpy only, no pickle).

The protocol is specified in docs/PROTOCOL.md. This file is the single implementation; the
Blender extension gets generated, untracked copies of it and of the limits it imports
(limits.py) in headcraft_blender/client/ (`python build.py sync`, run by every build.py
command and by the test suite).

Frame = MAGIC (4 bytes) | header length (uint32 LE) | payload length (uint64 LE)
        | header (UTF-8 JSON object) | payload (raw little-endian array bytes).
"""
from __future__ import annotations

import json
import math
import socket
import struct
import time

import numpy as np

from .limits import (DEFAULT_MAX_PAYLOAD_BYTES, MAX_ARRAY_ELEMENTS, MAX_ARRAY_NAME_CHARS,  # noqa: F401
                     MAX_ARRAY_RANK, MAX_HEADER_BYTES, MAX_HEADER_DEPTH, RECV_CHUNK_BYTES)

MAGIC = b"HCW1"
PROTOCOL_VERSION = 2                    # 2: layout.import, generate.interpolate_heads; head.evaluate is head.vertices
PREFIX = struct.Struct("<4sIQ")
# A job's life, in the words every side uses (the client's Job follows the server's replies,
# Blender's UIJob follows its Job; the render and set-up tasks use the same words):
# submitted (sent, not yet accepted) -> queued (accepted) -> running (first progress) -> one of
# done, error, cancelled.
JOB_STATES = ("submitted", "queued", "running", "done", "error", "cancelled")
FINISHED_STATES = frozenset(JOB_STATES[3:])
# dtype names allowed on the wire (numpy's little-endian spellings).
DTYPES = {"<f4", "<f8", "<f2", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"}


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the connection cannot continue."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection."""


class Message:
    """A decoded frame: its type, its JSON fields and its named arrays."""

    __slots__ = ("type", "fields", "arrays")

    def __init__(self, type: str, fields: dict | None = None, arrays: dict | None = None):
        self.type = type
        self.fields = fields or {}
        self.arrays = arrays or {}

    def __repr__(self):
        shapes = {k: v.shape for k, v in self.arrays.items()}
        return f"Message({self.type!r}, {self.fields!r}, arrays={shapes})"


def _wire_dtype(arr: np.ndarray) -> np.dtype:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dt.str not in DTYPES:
        raise ProtocolError(f"dtype {arr.dtype} cannot be sent (allowed: {sorted(DTYPES)})")
    return dt


def encode(type: str, fields: dict | None = None, arrays: dict | None = None) -> list:
    """Encode a message into a list of buffers for socket.sendmsg / sendall (arrays not copied
    when already contiguous little-endian)."""
    descs, buffers, offset = [], [], 0
    for name, arr in (arrays or {}).items():
        arr = np.asarray(arr)
        dt = _wire_dtype(arr)
        arr = np.ascontiguousarray(arr, dtype=dt)
        descs.append({"name": name, "dtype": dt.str, "shape": list(arr.shape),
                      "offset": offset, "nbytes": arr.nbytes})
        if arr.nbytes:
            buffers.append(memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]  # numpy 1.26: Buffer on 3.12+ only
        offset += arr.nbytes
    header = dict(fields or {})
    header["type"] = type
    header["arrays"] = descs
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    return [PREFIX.pack(MAGIC, len(head), offset) + head, *buffers]


def send(sock: socket.socket, type: str, fields: dict | None = None, arrays: dict | None = None) -> None:
    for buf in encode(type, fields, arrays):
        sock.sendall(buf)


def _short(obj, limit: int = 120) -> str:
    """repr of something a peer sent, cut short for messages and logs."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytearray:
    """n bytes, stored as they arrive (never allocated up front from n). With a deadline
    (time.monotonic()), the reads together must finish by then (socket.timeout otherwise)."""
    buf = bytearray()
    view = memoryview(bytearray(min(n, RECV_CHUNK_BYTES)))
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed")
            sock.settimeout(left)
        k = sock.recv_into(view, min(n - len(buf), len(view)))
        if k == 0:
            raise ConnectionClosed("connection closed by peer" if not buf and n else
                                   f"connection closed after {len(buf)} of {n} bytes")
        buf += view[:k]
    return buf


def json_depth(raw: bytes | bytearray) -> int:
    """How deeply arrays/objects nest in JSON text: brackets counted outside strings (a quote
    after an odd run of backslashes is part of a string). Linear, no recursion."""
    a = np.frombuffer(raw, np.uint8)
    if not a.size:
        return 0
    quote = a == 0x22
    if quote.any():
        idx = np.arange(a.size)
        last_plain = np.maximum.accumulate(np.where(a == 0x5C, -1, idx))
        run = np.zeros(a.size, np.int64)          # backslashes just before each byte
        run[1:] = idx[:-1] - last_plain[:-1]
        quote &= run % 2 == 0
        outside = np.cumsum(quote) % 2 == 0
    else:
        outside = np.ones(a.size, bool)
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int64) - ((a == 0x5D) | (a == 0x7D))
    return int(np.cumsum(np.where(outside, step, 0)).max(initial=0))


def _no_constant(name: str):
    raise ProtocolError(f"frame header holds {name}: JSON has no NaN or Infinity")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"frame header holds {_short(text, 40)}, beyond a double's range")
    return value


def parse_header(raw: bytes | bytearray) -> dict:
    """A header's JSON, refused (ProtocolError) when not UTF-8 JSON, nested deeper than
    MAX_HEADER_DEPTH or holding NaN/Infinity."""
    depth = json_depth(raw)
    if depth > MAX_HEADER_DEPTH:
        raise ProtocolError(f"frame header nests {depth} deep; the limit is {MAX_HEADER_DEPTH}")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:   # ValueError: JSONDecodeError, huge ints
        raise ProtocolError(f"frame header is not UTF-8 JSON: {_short(str(exc), 200)}") from None


def recv(sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES,
         deadline: float | None = None) -> Message:
    """Read one frame. Raises ProtocolError for anything malformed or over a limit (an oversized
    frame before reading its payload), ConnectionClosed at end of stream, socket.timeout when a
    deadline (time.monotonic()) passes first."""
    magic, head_len, payload_len = PREFIX.unpack(_recv_exact(sock, PREFIX.size, deadline))
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r}: not a HeadCraft client/server "
                            f"(protocol {PROTOCOL_VERSION})")
    if head_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {head_len} bytes exceeds the {MAX_HEADER_BYTES} limit")
    if payload_len > max_payload:
        raise ProtocolError(f"frame payload of {payload_len} bytes exceeds the {max_payload} byte limit")
    header = parse_header(_recv_exact(sock, head_len, deadline))
    payload = _recv_exact(sock, payload_len, deadline) if payload_len else bytearray()
    return decode(header, payload)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _array_of(d, payload, taken) -> tuple[str, np.ndarray]:
    """One checked array descriptor -> (name, array viewing the payload)."""
    if not isinstance(d, dict) or not {"name", "dtype", "shape", "offset", "nbytes"} <= d.keys():
        raise ProtocolError(f"bad array descriptor {_short(d)}")
    name, dtype, shape, offset, nbytes = d["name"], d["dtype"], d["shape"], d["offset"], d["nbytes"]
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ARRAY_NAME_CHARS or name in taken:
        raise ProtocolError(f"array name {_short(name)}: a new string of 1 to {MAX_ARRAY_NAME_CHARS} characters")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(f"array {name!r}: dtype {_short(dtype)} not allowed")
    if not isinstance(shape, list) or len(shape) > MAX_ARRAY_RANK or \
            not all(_is_int(s) and 0 <= s <= MAX_ARRAY_ELEMENTS for s in shape) or \
            math.prod(max(s, 1) for s in shape) > MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"array {name!r}: shape {_short(shape)} is not a list of at most {MAX_ARRAY_RANK} "
                            f"sizes with at most {MAX_ARRAY_ELEMENTS} elements")
    count = math.prod(shape)
    if not _is_int(offset) or not _is_int(nbytes) or nbytes != count * np.dtype(dtype).itemsize:
        raise ProtocolError(f"array {name!r}: shape {shape} does not match {_short(nbytes)} bytes")
    if offset < 0 or offset + nbytes > len(payload):
        raise ProtocolError(f"array {name!r} lies outside the payload")
    arr = (np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
           if count else np.empty(shape, dtype))
    return name, arr


def decode(header: dict, payload: bytearray) -> Message:
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("frame header must be a JSON object with a string 'type'")
    descs = header.pop("arrays", [])
    msg_type = header.pop("type")
    if not isinstance(descs, list):
        raise ProtocolError("'arrays' must be a list")
    arrays: dict = {}
    for d in descs:
        name, arr = _array_of(d, payload, arrays)
        arrays[name] = arr
    return Message(msg_type, header, arrays)
