"""HeadCraft wire protocol: framing and array codec (stdlib + numpy only, no pickle).

The protocol is specified in docs/PROTOCOL.md. This file is the single implementation; the
Blender extension gets a generated, untracked copy as headcraft_blender/client/wire.py
(`python build.py sync`, run by every build.py command and by the test suite).

Frame = MAGIC (4 bytes) | header length (uint32 LE) | payload length (uint64 LE)
        | header (UTF-8 JSON object) | payload (raw little-endian array bytes).
"""
from __future__ import annotations

import json
import math
import socket
import struct

import numpy as np

MAGIC = b"HCW1"
PROTOCOL_VERSION = 1
PREFIX = struct.Struct("<4sIQ")
MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30
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
            buffers.append(memoryview(arr.reshape(-1)).cast("B"))
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


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 22))
        if k == 0:
            raise ConnectionClosed("connection closed by peer" if got == 0 and n else
                                   f"connection closed after {got} of {n} bytes")
        got += k
    return buf


def recv(sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Message:
    """Read one frame. Raises ProtocolError for anything malformed or over the size limit
    (before reading the oversized payload), ConnectionClosed at end of stream."""
    magic, head_len, payload_len = PREFIX.unpack(_recv_exact(sock, PREFIX.size))
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r}: not a HeadCraft client/server "
                            f"(protocol {PROTOCOL_VERSION})")
    if head_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {head_len} bytes exceeds the {MAX_HEADER_BYTES} limit")
    if payload_len > max_payload:
        raise ProtocolError(f"frame payload of {payload_len} bytes exceeds the {max_payload} byte limit")
    try:
        header = json.loads(_recv_exact(sock, head_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame header is not UTF-8 JSON: {exc}") from None
    payload = _recv_exact(sock, payload_len) if payload_len else bytearray()
    return decode(header, payload)


def decode(header: dict, payload: bytearray) -> Message:
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("frame header must be a JSON object with a string 'type'")
    descs = header.pop("arrays", [])
    msg_type = header.pop("type")
    if not isinstance(descs, list):
        raise ProtocolError("'arrays' must be a list")
    arrays = {}
    for d in descs:
        try:
            name, dtype, shape = str(d["name"]), d["dtype"], [int(s) for s in d["shape"]]
            offset, nbytes = int(d["offset"]), int(d["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"bad array descriptor {d!r}") from None
        if dtype not in DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {dtype!r} not allowed")
        if any(s < 0 for s in shape) or nbytes != math.prod(shape) * np.dtype(dtype).itemsize:
            raise ProtocolError(f"array {name!r}: shape {shape} does not match {nbytes} bytes")
        if offset < 0 or offset + nbytes > len(payload):
            raise ProtocolError(f"array {name!r} lies outside the payload")
        count = math.prod(shape)
        arrays[name] = (np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
                        if count else np.empty(shape, dtype))
    return Message(msg_type, header, arrays)
