"""A connection to a running backend: handshake, job submission, progress, cancel (no bpy).

A reader thread receives every frame and updates the Job objects; callers poll or wait on them.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time

from . import wire


class BackendError(Exception):
    """A failure the user should read: the message says what happened and what to do."""

    def __init__(self, message: str, error_type: str = "BackendError"):
        super().__init__(message)
        self.error_type = error_type


class Job:
    """One submitted job as the client sees it; updated by the reader thread."""

    def __init__(self, job_id: str, kind: str, conn: "Connection"):
        self.id, self.kind, self._conn = job_id, kind, conn
        self.state = "submitted"     # one of wire.JOB_STATES
        self.fraction, self.stage, self.message = 0.0, "", ""
        self.result: dict = {}
        self.arrays: dict = {}
        self.error: BackendError | None = None
        self.finished = threading.Event()

    def cancel(self) -> None:
        if not self.finished.is_set():
            self._conn.send("cancel", {"job_id": self.id})

    def wait(self, timeout: float | None = None) -> "Job":
        if not self.finished.wait(timeout):
            raise BackendError(f"job {self.kind} did not finish within {timeout} s", "Timeout")
        return self

    def _finish(self, state: str, error: BackendError | None = None) -> None:
        self.state, self.error = state, error
        self.finished.set()


class Connection:
    _ids = itertools.count(1)

    def __init__(self, host: str, port: int, token: str, timeout: float = 10.0,
                 client: str = "headcraft-blender"):
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise BackendError(f"Start the backend ('headcraft-backend serve') and its tunnel, or check the host "
                               f"and port in the HeadCraft preferences.\nCannot reach {host}:{port}: "
                               f"{exc.strerror or exc}", "Unreachable") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address = f"{host}:{port}"
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.closed_reason = ""
        self._pong = threading.Condition()
        self._last_pong: dict | None = None
        try:
            wire.send(self.sock, "hello", {"protocol": wire.PROTOCOL_VERSION, "token": token,
                                           "client": client})
            reply = wire.recv(self.sock)
        except socket.timeout:
            self.sock.close()
            raise BackendError(f"the backend at {self.address} did not answer the handshake",
                               "Timeout") from None
        except (OSError, wire.ProtocolError) as exc:
            self.sock.close()
            raise BackendError(f"handshake with {self.address} failed: {exc}", "ProtocolError") from None
        if reply.type == "error":
            self.sock.close()
            raise BackendError(reply.fields.get("message", "refused"),
                               reply.fields.get("error_type", "BackendError"))
        if reply.type != "welcome":
            self.sock.close()
            raise BackendError(f"unexpected handshake reply {reply.type!r}", "ProtocolError")
        self.info = reply.fields
        self.max_payload = int(self.info.get("max_payload", wire.DEFAULT_MAX_PAYLOAD_BYTES))
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="headcraft-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self.closed_reason

    def send(self, type: str, fields: dict | None = None, arrays: dict | None = None) -> None:
        if not self.alive:
            raise BackendError(f"the backend connection is closed: {self.closed_reason}", "Disconnected")
        try:
            buffers = wire.encode(type, fields, arrays)
        except (ValueError, TypeError, wire.ProtocolError) as exc:
            raise BackendError(f"the request cannot be sent: {exc}", "BadRequest") from None
        size = sum(len(b) for b in buffers[1:])
        if size > self.max_payload:
            raise BackendError(f"request of {size / 2**20:.0f} MiB exceeds the backend's "
                               f"{self.max_payload / 2**20:.0f} MiB frame limit", "TooLarge")
        try:
            with self.lock:
                for buf in buffers:
                    self.sock.sendall(buf)
        except OSError as exc:
            self._closed(f"send failed: {exc}")
            raise BackendError(f"the backend connection broke: {exc}", "Disconnected") from None

    def submit(self, kind: str, params: dict | None = None, arrays: dict | None = None) -> Job:
        job = Job(f"c{next(self._ids)}-{int(time.time() * 1000) % 10**8}", kind, self)
        with self.lock:
            self.jobs[job.id] = job
        try:
            self.send("submit", {"job_id": job.id, "kind": kind, "params": params or {}}, arrays)
        except BackendError as exc:
            self.jobs.pop(job.id, None)
            lost = exc.error_type == "Disconnected"
            job._finish("error", BackendError(str(exc), "NotDelivered") if lost else exc)
        return job

    def call(self, kind: str, params: dict | None = None, arrays: dict | None = None,
             timeout: float | None = None) -> Job:
        """Submit and wait; raises BackendError when the job fails."""
        job = self.submit(kind, params, arrays).wait(timeout)
        if job.error:
            raise job.error
        return job

    def request(self, type: str, timeout: float = 5.0) -> dict:
        """Send a control message (ping, release, shutdown) and wait for its reply."""
        with self._pong:
            self._last_pong = None
            self.send(type, {})
            if not self._pong.wait_for(lambda: self._last_pong is not None or not self.alive, timeout):
                raise BackendError(f"the backend at {self.address} did not answer {type!r} within "
                                   f"{timeout:g} s", "Timeout")
            if self._last_pong is None:
                raise BackendError(f"the backend connection closed: {self.closed_reason}", "Disconnected")
            return self._last_pong

    def ping(self, timeout: float = 5.0) -> dict:
        return self.request("ping", timeout)

    def close(self) -> None:
        self._closed("closed by the client")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # -- reader thread ----------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                self._handle(wire.recv(self.sock, max_payload=1 << 40))
        except wire.ConnectionClosed:
            self._closed("the backend closed the connection (it may have stopped or crashed)")
        except (OSError, wire.ProtocolError) as exc:
            self._closed(f"connection error: {exc}")

    def _handle(self, msg: wire.Message) -> None:
        f = msg.fields
        if msg.type == "pong" or msg.type in ("released", "bye"):
            with self._pong:
                self._last_pong = dict(f, type=msg.type)
                self._pong.notify_all()
            return
        job = self.jobs.get(str(f.get("job_id")))
        if job is None:
            if msg.type == "error":  # connection-level error: fail everything pending
                self._closed(f"{f.get('error_type')}: {f.get('message')}")
            return
        if msg.type == "accepted":
            job.state = "queued"
        elif msg.type == "progress":
            job.fraction, job.stage, job.message = f.get("fraction", 0.0), f.get("stage", ""), f.get("message", "")
            job.state = "running"
        elif msg.type == "result":
            job.result, job.arrays, job.fraction = f.get("result", {}), msg.arrays, 1.0
            self._done(job, "done")
        elif msg.type == "error":
            self._done(job, "error", BackendError(f.get("message", "failed"), f.get("error_type", "Error")))
        elif msg.type == "cancelled":
            self._done(job, "cancelled")

    def _done(self, job: Job, state: str, error: BackendError | None = None) -> None:
        with self.lock:
            self.jobs.pop(job.id, None)
        job._finish(state, error)

    def _closed(self, reason: str) -> None:
        if self.closed_reason:
            return
        self.closed_reason = reason
        with self.lock:
            pending, self.jobs = list(self.jobs.values()), {}
        for job in pending:
            # a job the backend never acknowledged was never started: safe to send again
            kind = "NotDelivered" if job.state == "submitted" else "Disconnected"
            job._finish("error", BackendError(f"the backend stopped before the job finished: {reason}", kind))
        with self._pong:
            self._pong.notify_all()
