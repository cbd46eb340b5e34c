"""The wire protocol against a real backend process over a real socket."""
import os
import socket
import struct
import sys
import time

import numpy as np
import pytest

from headcraft_backend import wire
from headcraft_blender.client.connection import BackendError, Connection
from headcraft_blender.client.launcher import LocalBackend


class _Pair:
    def __init__(self):
        self.a, self.b = socket.socketpair()


def test_codec_roundtrip_all_dtypes():
    p = _Pair()
    arrays = {dt: (np.arange(12).reshape(3, 4) % 2).astype(dt) for dt in
              ["<f4", "<f8", "<f2", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"]}
    arrays["big_endian"] = np.arange(5, dtype=">f4")
    arrays["empty"] = np.zeros((0, 3), np.float32)
    arrays["strided"] = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    wire.send(p.a, "x", {"k": [1, "two"]}, arrays)
    msg = wire.recv(p.b)
    assert msg.type == "x" and msg.fields == {"k": [1, "two"]}
    for name, arr in arrays.items():
        assert msg.arrays[name].shape == arr.shape
        np.testing.assert_array_equal(msg.arrays[name], arr)
    assert msg.arrays["big_endian"].dtype == np.dtype("<f4")


def test_codec_refuses_objects_and_bad_descriptors():
    with pytest.raises(wire.ProtocolError, match="cannot be sent"):
        wire.encode("x", arrays={"o": np.array([object()], dtype=object)})
    with pytest.raises(ValueError):  # NaN is not JSON
        wire.encode("x", {"v": float("nan")})
    payload = bytearray(8)
    for desc in ({"name": "a", "dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8},
                 {"name": "a", "dtype": "<f4", "shape": [3], "offset": 0, "nbytes": 12},
                 {"name": "a", "dtype": "<f4", "shape": [2], "offset": 4, "nbytes": 8},
                 {"name": "a", "dtype": "<f4", "shape": [-2], "offset": 0, "nbytes": 8}):
        with pytest.raises(wire.ProtocolError):
            wire.decode({"type": "x", "arrays": [desc]}, payload)


def test_handshake_reports_device_and_jobs(conn):
    assert conn.info["protocol"] == wire.PROTOCOL_VERSION
    assert conn.info["device"] == "cpu" and conn.info["cuda_available"] in (True, False)
    assert {"head.build", "diagnostics.echo"} <= set(conn.info["jobs"])
    assert conn.ping()["type"] == "pong"


def test_echo_roundtrip_exact(conn):
    v = np.random.default_rng(0).standard_normal((100_000, 3)).astype(np.float32)
    job = conn.call("diagnostics.echo", {"note": "hi"}, {"v": v}, timeout=30)
    np.testing.assert_array_equal(job.arrays["v"], v)
    assert job.result["params"] == {"note": "hi"}


def test_wrong_token_refused_then_server_keeps_serving(backend_process, conn):
    with pytest.raises(BackendError, match="wrong token") as err:
        Connection("127.0.0.1", backend_process.port, "not-the-token")
    assert err.value.error_type == "AuthError"
    assert conn.ping()["type"] == "pong"


def _raw(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def test_garbage_bytes_get_clear_error(backend_process, conn):
    s = _raw(backend_process.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    msg = wire.recv(s)
    assert msg.type == "error" and msg.fields["error_type"] == "ProtocolError"
    assert "magic" in msg.fields["message"]
    s.close()
    assert conn.ping()["type"] == "pong"


def test_oversized_frame_refused_before_reading_it(backend_process, conn):
    s = _raw(backend_process.port)
    wire.send(s, "hello", {"protocol": wire.PROTOCOL_VERSION, "token": backend_process.token})
    assert wire.recv(s).type == "welcome"
    head = b'{"type":"submit","arrays":[]}'
    s.sendall(wire.PREFIX.pack(wire.MAGIC, len(head), 1 << 50) + head)  # claims 1 PiB
    msg = wire.recv(s)
    assert msg.type == "error" and "exceeds" in msg.fields["message"]
    s.close()
    assert conn.ping()["type"] == "pong"


def test_unauthenticated_submit_refused(backend_process, conn):
    s = _raw(backend_process.port)
    wire.send(s, "submit", {"kind": "diagnostics.echo"})
    msg = wire.recv(s)
    assert msg.type == "error" and "hello" in msg.fields["message"]
    s.close()
    assert conn.ping()["type"] == "pong"


def test_client_refuses_request_over_server_limit(conn):
    conn.max_payload = 1024  # as if the server had announced a 1 KiB limit
    job = conn.submit("diagnostics.echo", {}, {"v": np.zeros(1000, np.float32)})
    assert job.state == "error" and job.error.error_type == "TooLarge"


def test_unknown_job_and_bad_params_fail_but_server_survives(conn):
    job = conn.submit("nope").wait(10)
    assert job.state == "error" and job.error.error_type == "UnknownJob"
    job = conn.submit("head.vertices", {"shape": [float("inf")]})
    assert job.state == "error" and job.error.error_type == "BadRequest"
    job = conn.submit("head.vertices", {}, {"pose": np.full((5, 3), np.nan, np.float32)}).wait(30)
    assert job.state == "error" and "finite" in str(job.error)
    job = conn.submit("head.build", {"model": "flame"}).wait(30)
    assert job.state == "error" and "FLAME is not configured" in str(job.error)
    assert conn.ping()["type"] == "pong"


def test_cancel_long_job_within_a_second(conn):
    job = conn.submit("diagnostics.selftest", {"seconds": 60})
    deadline = time.monotonic() + 30
    while job.fraction == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.stage == "forward"
    t0 = time.monotonic()
    job.cancel()
    job.wait(10)
    assert job.state == "cancelled"
    assert time.monotonic() - t0 < 1.0 + 0.5  # 0.5 s slack for a loaded CI machine
    # The queue moves on: the next job runs.
    assert conn.call("diagnostics.selftest", {"iterations": 2}, timeout=30).result["batches"] == 2


def test_jobs_run_in_order_one_at_a_time(conn):
    jobs = [conn.submit("diagnostics.selftest", {"iterations": 3}) for _ in range(3)]
    for j in jobs:
        j.wait(60)
    assert [j.state for j in jobs] == ["done"] * 3


def test_backend_killed_mid_job_then_restart(tmp_path):
    b = LocalBackend(sys.executable, "cpu", log_path=tmp_path / "log", pid_file=tmp_path / "pid")
    b.start()
    c = b.connect()
    job = c.submit("diagnostics.selftest", {"seconds": 60})
    while job.fraction == 0 and not job.finished.is_set():
        time.sleep(0.02)
    b.process.kill()
    job.wait(10)
    assert job.state == "error" and job.error.error_type == "Disconnected"
    assert "stopped before the job finished" in str(job.error)
    with pytest.raises(BackendError):
        c.ping()
    # a job sent after the death was never taken: the client may safely send it again
    late = c.submit("diagnostics.selftest", {"iterations": 1}).wait(10)
    assert late.state == "error" and late.error.error_type == "NotDelivered"
    b.stop(None)
    b2 = LocalBackend(sys.executable, "cpu", log_path=tmp_path / "log", pid_file=tmp_path / "pid")
    b2.start()
    c2 = b2.connect()
    assert c2.ping()["type"] == "pong"
    b2.stop(c2)
    assert not b2.running and not (tmp_path / "pid").exists()


def test_token_never_in_command_line_or_log(backend_process):
    cmdline = open(f"/proc/{backend_process.process.pid}/cmdline", "rb").read()
    assert backend_process.token.encode() not in cmdline
    log = backend_process.log_path.read_text()
    assert "serving on port" in log and backend_process.token not in log


def test_failed_start_reports_output(tmp_path):
    b = LocalBackend(sys.executable, "cuda:7" if not _cuda() else "bogus", log_path=tmp_path / "log")
    with pytest.raises(BackendError, match="cannot start") as err:
        b.start(timeout=60)
    assert err.value.error_type == "StartFailed"


def _cuda():
    import torch
    return torch.cuda.is_available()


def test_header_prefix_layout():
    # Documented in docs/PROTOCOL.md: 4-byte magic, uint32 header length, uint64 payload length.
    buf = wire.encode("ping", {})[0]
    magic, hl, pl = struct.unpack("<4sIQ", buf[:16])
    assert magic == b"HCW1" and pl == 0 and hl == len(buf) - 16


def test_orphaned_backend_is_cleaned_up(tmp_path):
    """A backend whose Blender died (pid file owner gone) is killed by the next launch."""
    import json
    import subprocess
    from headcraft_blender.client.launcher import cleanup_orphan
    b = LocalBackend(sys.executable, "cpu", log_path=tmp_path / "log", pid_file=tmp_path / "pid")
    b.start()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.loads((tmp_path / "pid").read_text())
    record["owner"] = dead.pid  # as if another Blender had started it and crashed
    (tmp_path / "pid").write_text(json.dumps(record))
    assert cleanup_orphan(tmp_path / "pid") == b.process.pid
    assert b.process.wait(10) is not None
    assert not (tmp_path / "pid").exists()
    # a pid file naming a live process that is not a backend is left alone
    (tmp_path / "pid").write_text(json.dumps({"pid": os.getpid(), "owner": dead.pid}))
    assert cleanup_orphan(tmp_path / "pid") is None


def test_backend_exits_when_its_parent_dies(tmp_path):
    import os as _os
    import subprocess
    # a short-lived parent launches the backend and exits; the backend must follow within seconds
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from headcraft_blender.client.launcher import LocalBackend\n"
        "b = LocalBackend(sys.executable, 'cpu'); b.start(); print(b.process.pid, flush=True)\n"
    ) % str(__import__("pathlib").Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.split()[-1])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        _os.kill(pid, 9)
        pytest.fail("backend outlived its parent")
