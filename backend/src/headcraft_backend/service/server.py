"""The backend service: a token-protected TCP server running one job at a time from a queue.

Connections are served by one thread each; jobs run on a single worker thread so the compute
device is never shared. Protocol violations close only the offending connection.
"""
from __future__ import annotations

import hmac
import itertools
import logging
import os
import queue
import socket
import threading
import time
import traceback

from .. import __version__, wire
from ..cache import BoundedCache
from ..limits import HANDSHAKE_SECONDS, MAX_CONNECTIONS, MAX_QUEUED_JOBS
from ..compute import Compute, describe_device, release_memory, resolve_device
from ..errors import JobCancelled, UserError
from ..handlers import HANDLERS, JobSpec

log = logging.getLogger("headcraft.server")


def load_all() -> dict[str, JobSpec]:
    """Import every capability's job module so its handlers register; the catalogue."""
    from .. import diagnostics  # noqa: F401
    from ..animate import jobs as _animate  # noqa: F401
    from ..fit import jobs as _fit  # noqa: F401
    from ..generate import jobs as _generate  # noqa: F401
    from ..head import jobs as _head  # noqa: F401
    from ..layout import jobs as _layout  # noqa: F401
    return HANDLERS
READY_PREFIX = "HEADCRAFT-BACKEND READY"


class _Job:
    def __init__(self, job_id, kind, params, arrays, conn, ctx):
        self.id, self.kind, self.params, self.arrays, self.conn, self.ctx = (
            job_id, kind, params, arrays, conn, ctx)


class _Connection:
    def __init__(self, sock: socket.socket, addr):
        self.sock, self.addr = sock, addr
        self.lock = threading.Lock()
        self.alive = True

    def send(self, type: str, fields: dict | None = None, arrays: dict | None = None) -> bool:
        if not self.alive:
            return False
        try:
            buffers = wire.encode(type, fields, arrays)
            with self.lock:
                for buf in buffers:
                    self.sock.sendall(buf)
            return True
        except OSError:
            self.alive = False
            return False

    def close(self):
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Server:
    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0, device: str = "auto",
                 max_payload: int = wire.DEFAULT_MAX_PAYLOAD_BYTES, parent_pid: int | None = None,
                 handshake_seconds: float = HANDSHAKE_SECONDS, max_connections: int = MAX_CONNECTIONS):
        if not token:
            raise UserError("a token is required")
        self.token = token.encode()
        self.device = resolve_device(device)
        self.device_info = describe_device(self.device)
        self.max_payload = max_payload
        self.parent_pid = parent_pid
        self.handshake_seconds, self.max_connections = handshake_seconds, max_connections
        self.connections = 0                    # open ones, each served by a thread
        self.connections_lock = threading.Lock()
        self.handlers = load_all()
        self.cache = BoundedCache()
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.jobs: dict[str, _Job] = {}
        self.jobs_lock = threading.Lock()
        self.running: _Job | None = None
        self.stopping = threading.Event()
        self._ids = itertools.count(1)
        self.listener = socket.create_server((host, port))
        self.port = self.listener.getsockname()[1]

    # -- lifecycle --------------------------------------------------------------------------
    def serve_forever(self, ready=print) -> None:
        threading.Thread(target=self._worker, name="headcraft-worker", daemon=True).start()
        if self.parent_pid:
            threading.Thread(target=self._watch_parent, daemon=True).start()
        ready(f"{READY_PREFIX} port={self.port} protocol={wire.PROTOCOL_VERSION} pid={os.getpid()} "
              f"device={self.device}")
        log.info("serving on port %d, device %s", self.port, self.device)
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                sock, addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, addr)
            with self.connections_lock:
                full = self.connections >= self.max_connections
                self.connections += not full
            if full:
                log.warning("refused connection from %s: %d connections are open", addr, self.max_connections)
                sock.settimeout(1.0)
                conn.send("error", {"job_id": None, "error_type": "TooManyConnections",
                                    "message": f"the backend has {self.max_connections} connections open "
                                               f"already; close one and connect again"})
                conn.close()
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()
        self.listener.close()
        self.queue.put(None)
        log.info("stopped")

    def stop(self) -> None:
        self.stopping.set()
        if self.running:
            self.running.ctx.cancel()

    def _watch_parent(self) -> None:
        assert self.parent_pid is not None     # started only when there is a parent to watch
        while not self.stopping.wait(1.0):
            try:
                os.kill(self.parent_pid, 0)
            except ProcessLookupError:
                log.warning("parent process %d is gone; shutting down", self.parent_pid)
                self.stop()
            except PermissionError:
                pass

    # -- connections ------------------------------------------------------------------------
    def _serve_connection(self, conn: _Connection) -> None:
        try:
            if self._handshake(conn):
                while conn.alive and not self.stopping.is_set():
                    self._dispatch(conn, wire.recv(conn.sock, self.max_payload))
        except wire.ConnectionClosed:
            pass
        except wire.ProtocolError as exc:
            log.warning("protocol error from %s: %s", conn.addr, exc)
            conn.send("error", {"job_id": None, "error_type": "ProtocolError", "message": str(exc)})
        except OSError as exc:
            log.info("connection %s dropped: %s", conn.addr, exc)
        except Exception:   # a bug: logged once, this connection closed, the server goes on
            log.error("connection %s failed:\n%s", conn.addr, traceback.format_exc(limit=8)[-4000:])
            conn.send("error", {"job_id": None, "error_type": "InternalError",
                                "message": "the backend failed on this request (details in the backend log)"})
        finally:
            with self.connections_lock:
                self.connections -= 1
            conn.close()
            with self.jobs_lock:  # a vanished client's jobs are cancelled
                for job in self.jobs.values():
                    if job.conn is conn:
                        job.ctx.cancel()

    def _handshake(self, conn: _Connection) -> bool:
        try:     # one deadline for the whole 'hello', however it is sent
            msg = wire.recv(conn.sock, max_payload=0, deadline=time.monotonic() + self.handshake_seconds)
        except socket.timeout:
            raise wire.ProtocolError(f"no handshake within {self.handshake_seconds:g} s") from None
        conn.sock.settimeout(None)
        if msg.type != "hello":
            raise wire.ProtocolError(f"expected 'hello', got {msg.type[:100]!r}")
        token = str(msg.fields.get("token", "")).encode()
        if not hmac.compare_digest(token, self.token):
            log.warning("refused connection from %s: wrong token", conn.addr)
            conn.send("error", {"job_id": None, "error_type": "AuthError",
                                "message": "wrong token: the backend refused the connection"})
            return False
        if msg.fields.get("protocol") != wire.PROTOCOL_VERSION:
            conn.send("error", {"job_id": None, "error_type": "ProtocolVersionError",
                                "message": f"client speaks protocol {str(msg.fields.get('protocol'))[:40]}, "
                                           f"backend {__version__} speaks {wire.PROTOCOL_VERSION}"})
            return False
        conn.send("welcome", {"protocol": wire.PROTOCOL_VERSION, "backend_version": __version__,
                              "pid": os.getpid(), "jobs": sorted(self.handlers),
                              "max_payload": self.max_payload, **self.device_info})
        return True

    def _dispatch(self, conn: _Connection, msg: wire.Message) -> None:
        f = msg.fields
        if msg.type == "submit":
            self._submit(conn, f, msg.arrays)
        elif msg.type == "cancel":
            with self.jobs_lock:
                job = self.jobs.get(str(f.get("job_id")))
            if job is not None:
                job.ctx.cancel()
        elif msg.type == "ping":
            conn.send("pong", {"queued": self.queue.qsize(),
                               "running": self.running.id if self.running else None,
                               "time": time.time()})
        elif msg.type == "release":
            self.cache.clear()
            release_memory(self.device)
            conn.send("released", {})
        elif msg.type == "shutdown":
            conn.send("bye", {})
            self.stop()
        else:
            conn.send("error", {"job_id": f.get("job_id"), "error_type": "ProtocolError",
                                "message": f"unknown message type {msg.type[:100]!r}"})

    def _submit(self, conn: _Connection, f: dict, arrays: dict) -> None:
        kind, job_id, params = f.get("kind"), f.get("job_id"), f.get("params")
        if not isinstance(kind, str) or not isinstance(job_id, (str, int, type(None))) or \
                isinstance(job_id, bool) or not isinstance(params, (dict, type(None))):
            raise wire.ProtocolError("submit needs a string 'kind', a string or integer 'job_id' and "
                                     "an object 'params'")
        job_id = str(job_id or f"job-{next(self._ids)}")[:200]
        if len(self.jobs) >= MAX_QUEUED_JOBS:
            conn.send("error", {"job_id": job_id, "error_type": "QueueFull",
                                "message": f"{MAX_QUEUED_JOBS} jobs are waiting already; "
                                           f"wait for some to finish"})
            return
        if kind not in self.handlers:
            conn.send("error", {"job_id": job_id, "error_type": "UnknownJob",
                                "message": f"this backend has no job {kind[:100]!r}; "
                                           f"it offers {', '.join(sorted(self.handlers))}"})
            return
        params = f.get("params") or {}
        ctx = Compute(self.device, self.cache, lambda p: conn.send("progress", {"job_id": job_id, **p}))
        job = _Job(job_id, kind, params, arrays, conn, ctx)
        with self.jobs_lock:
            self.jobs[job_id] = job
        self.queue.put(job)
        conn.send("accepted", {"job_id": job_id, "position": self.queue.qsize()})

    # -- the worker -------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.running = job
            try:
                self._run(job)
            finally:
                self.running = None
                with self.jobs_lock:
                    self.jobs.pop(job.id, None)

    def _run(self, job: _Job) -> None:
        started = time.monotonic()
        try:
            job.ctx.check()
            fields, arrays = self.handlers[job.kind](job.ctx, job.params, job.arrays)
        except JobCancelled:
            log.info("job %s (%s) cancelled", job.id, job.kind)
            job.conn.send("cancelled", {"job_id": job.id})
            return
        except UserError as exc:
            log.info("job %s (%s) failed: %s", job.id, job.kind, exc)
            job.conn.send("error", {"job_id": job.id, "error_type": type(exc).__name__,
                                    "message": str(exc)})
            return
        except Exception as exc:  # a bug or an unexpected failure: log it whole, keep serving
            log.error("job %s (%s) crashed:\n%s", job.id, job.kind, traceback.format_exc())
            job.conn.send("error", {"job_id": job.id, "error_type": type(exc).__name__,
                                    "message": f"{exc or repr(exc)} (details in the backend log)"})
            return
        log.info("job %s (%s) done in %.3f s", job.id, job.kind, time.monotonic() - started)
        try:
            job.conn.send("result", {"job_id": job.id, "result": fields}, arrays)
        except (wire.ProtocolError, ValueError, TypeError) as exc:
            log.error("job %s (%s) produced an unencodable result: %s", job.id, job.kind, exc)
            job.conn.send("error", {"job_id": job.id, "error_type": "ResultError",
                                    "message": f"the result could not be encoded: {exc}"})
