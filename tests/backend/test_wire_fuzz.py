"""Fuzzing the wire decoder (issue 18): random and mutated frames raise nothing but the
protocol's own error; a real server fed them keeps serving with bounded memory, and this test
prints its peak memory under the hostile frames (run with -s, or read the captured output)."""
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from headcraft_backend import wire

FRAMES, SECONDS = 2000, 60          # bounds of each fuzz loop: count and time
TOKEN = "fuzz-token"
REPLIES = {"welcome", "error", "pong", "accepted", "progress", "result", "cancelled"}


def good_frames() -> list[bytes]:
    rng = np.random.default_rng(0)
    arrays = {"f": rng.standard_normal((7, 3)).astype(np.float32), "i": np.arange(5, dtype="<i8"),
              "b": np.ones(3, bool), "e": np.zeros((0, 3), np.float16)}
    messages = [("hello", {"protocol": wire.PROTOCOL_VERSION, "token": TOKEN, "client": "fuzz"}, {}), ("ping", {}, {}),
                ("submit", {"job_id": "j1", "kind": "diagnostics.echo", "params": {"a": [1, 2.5, "x"], "n": None}},
                 arrays),
                ("submit", {"kind": "diagnostics.echo", "params": {"deep": [[[{"k": [1]}]]]}}, {"u": np.arange(9, dtype="<u2")}),
                ("cancel", {"job_id": "j1"}, {})]
    return [b"".join(bytes(b) for b in wire.encode(t, f, a)) for t, f, a in messages]


HOSTILE_HEADERS = [b"[" * 100_000, b'{"type":"ping","v":NaN}', b'{"type":"ping","v":1e999}',
                   b'{"type":"submit","arrays":[{"name":"a","dtype":"<f4","shape":[0,1e30],"offset":0,"nbytes":0}]}',
                   b'{"type":"submit","arrays":[{"name":"a","dtype":["<f4"],"shape":[1],"offset":0,"nbytes":4}]}',
                   b'{"type":"submit","kind":["x"],"arrays":[]}', b'{"type":"submit","kind":{"a":1}}',
                   b'{"type":"submit","arrays":[{"name":"a","dtype":"<f4","shape":' + b"[1" * 40 + b"]" * 40 + b'}]}',
                   "{\"type\":\"\\ud800\"}".encode(), b"\xff\xfe", b"{}", b"null", b'"x"']


def mutate(rng: random.Random, frames: list[bytes]) -> bytes:
    f = bytearray(rng.choice(frames))
    kind = rng.randrange(9)
    if kind == 0:                                  # flip bytes
        for _ in range(rng.randint(1, 8)):
            f[rng.randrange(len(f))] = rng.randrange(256)
    elif kind == 1:                                # truncate
        f = f[:rng.randrange(len(f))]
    elif kind == 2:                                # insert junk
        at = rng.randrange(len(f))
        f[at:at] = rng.randbytes(rng.randint(1, 64))
    elif kind == 3:                                # lie about the lengths
        head_len = rng.choice([0, 1, len(f), wire.MAX_HEADER_BYTES, wire.MAX_HEADER_BYTES + 1, 2 ** 32 - 1])
        payload = rng.choice([0, 1, 4096, 1 << 30, (1 << 30) + 1, 2 ** 64 - 1, rng.randrange(1 << 31)])
        f[:16] = wire.PREFIX.pack(wire.MAGIC, head_len, payload)
    elif kind == 4:                                # random bytes
        f = bytearray(rng.randbytes(rng.randint(0, 200)))
    elif kind == 5:                                # a hostile header, correctly framed
        head = rng.choice(HOSTILE_HEADERS)
        f = bytearray(wire.PREFIX.pack(wire.MAGIC, len(head), 0) + head)
    elif kind == 6:                                # two frames spliced
        g = rng.choice(frames)
        f = f[:rng.randrange(len(f))] + g[rng.randrange(len(g)):]
    elif kind == 7:                                # a number or string in the header changed
        text = f[16:].decode("latin-1")
        for old, new in ((":1", ":1e400"), ('"<f4"', '"<f9"'), ("[7,3]", "[7,-3]"), ("[7,3]", "[70000000000,3]"),
                         ('"offset":0', '"offset":-1'), ('"shape":[5]', '"shape":[5.0]'), ("]", "]]")):
            if old in text and rng.random() < 0.5:
                text = text.replace(old, new, 1)
        f = f[:16] + text.encode("latin-1")
    return bytes(f)


def test_decoder_raises_only_the_protocol_error():
    rng, frames = random.Random(18), good_frames()
    start, counts = time.monotonic(), {"ok": 0, "ProtocolError": 0}
    for n in range(FRAMES):
        if time.monotonic() - start > SECONDS:
            break
        data = mutate(rng, frames)
        a, b = socket.socketpair()
        try:
            a.sendall(data)
            a.close()
            while True:
                try:
                    msg = wire.recv(b)
                except wire.ConnectionClosed:
                    break
                except wire.ProtocolError:
                    counts["ProtocolError"] += 1
                    break
                assert isinstance(msg.type, str) and isinstance(msg.fields, dict)
                counts["ok"] += 1
        finally:
            b.close()
    elapsed = time.monotonic() - start
    print(f"\nwire decoder fuzz: {n + 1} frames in {elapsed:.1f} s: {counts}")
    assert n + 1 >= min(FRAMES, 500) and counts["ProtocolError"] > n // 4


# -- against a real server process -----------------------------------------------------------
def status_kb(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@pytest.fixture
def server_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HEADCRAFT_TOKEN"] = TOKEN
    out, err = open(tmp_path / "stdout", "w"), open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "headcraft_backend", "serve", "--port", "0", "--device", "cpu",
                             "--log-file", str(tmp_path / "backend.log")], env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err)
    deadline, port = time.monotonic() + 120, None
    while port is None and time.monotonic() < deadline and proc.poll() is None:
        text = (tmp_path / "stdout").read_text()
        if "READY port=" in text:
            port = int(text.split("READY port=")[1].split()[0])
        time.sleep(0.1)
    assert port, (tmp_path / "stderr").read_text()
    yield proc, port, tmp_path
    proc.terminate()
    proc.wait(10)
    out.close()
    err.close()


def login(port) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    wire.send(s, "hello", {"protocol": wire.PROTOCOL_VERSION, "token": TOKEN})
    assert wire.recv(s).type == "welcome"
    return s


def good_client_works(port):
    s = login(port)
    v = np.random.default_rng(1).standard_normal((1000, 3)).astype(np.float32)
    wire.send(s, "submit", {"job_id": "good", "kind": "diagnostics.echo", "params": {}}, {"v": v})
    while (msg := wire.recv(s)).type in ("accepted", "progress"):
        pass
    assert msg.type == "result" and np.array_equal(msg.arrays["v"], v)
    wire.send(s, "ping", {})
    assert wire.recv(s).type == "pong"
    s.close()


def replies(s) -> list[str]:
    """Every frame the server sends until it closes; each must be a well-formed reply."""
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:                  # the server closed already
        pass
    seen = []
    while True:
        try:
            msg = wire.recv(s)
        except wire.ConnectionClosed:
            return seen
        except ConnectionResetError:
            return seen
        assert msg.type in REPLIES, msg
        seen.append(msg.type if msg.type != "error" else msg.fields["error_type"])


def test_server_keeps_serving_hostile_frames_with_bounded_memory(server_process):
    proc, port, folder = server_process
    good_client_works(port)                        # warm: torch, the job modules, the head model
    base = status_kb(proc.pid)["VmRSS"]

    # two logged-in frames claiming 1 GiB each and sending nothing (issue 18, item 4)
    head = json.dumps({"type": "submit", "kind": "diagnostics.echo", "arrays": []}).encode()
    held = [login(port) for _ in range(2)]
    for s in held:
        s.sendall(wire.PREFIX.pack(wire.MAGIC, len(head), (1 << 30) - 1) + head + bytes(1000))
    time.sleep(1.0)
    claimed = status_kb(proc.pid)["VmRSS"]
    for s in held:
        s.close()

    rng, frames = random.Random(1818), good_frames()
    start, n, outcomes = time.monotonic(), 0, {}
    while n < FRAMES and time.monotonic() - start < SECONDS:
        if n % 4:
            data = mutate(rng, frames)
        else:
            hostile = rng.choice(HOSTILE_HEADERS)
            data = wire.PREFIX.pack(wire.MAGIC, len(hostile), 0) + hostile
        s = login(port) if n % 2 else socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(data)
        except OSError:              # the server refused the frame and closed before all of it went
            pass
        for kind in replies(s):
            outcomes[kind] = outcomes.get(kind, 0) + 1
        s.close()
        n += 1
    elapsed = time.monotonic() - start
    good_client_works(port)
    mem = status_kb(proc.pid)
    print(f"\nserver under hostile frames: {n} frames in {elapsed:.1f} s; RSS after warm-up {base / 1024:.0f} MB, "
          f"with two 1 GiB claims open {claimed / 1024:.0f} MB, peak {mem['VmHWM'] / 1024:.0f} MB, "
          f"after {mem['VmRSS'] / 1024:.0f} MB; replies {dict(sorted(outcomes.items()))}")
    assert n >= min(FRAMES, 300)
    assert claimed - base < 100 * 1024                     # nothing allocated for the claims
    assert mem["VmHWM"] - base < 300 * 1024 and mem["VmRSS"] - base < 200 * 1024
    assert outcomes.get("ProtocolError", 0) > n // 4 and "InternalError" not in outcomes
    assert proc.poll() is None
    stderr, log = (folder / "stderr").read_text(), (folder / "backend.log").read_text()
    assert "Traceback" not in stderr and "Traceback" not in log, (stderr + log)[-3000:]
