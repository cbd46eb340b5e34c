"""The extension's one backend: started lazily, shared by all jobs, restartable (no bpy)."""
from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from .connection import BackendError, Connection, Job
from .launcher import LocalBackend


@dataclasses.dataclass
class BackendSettings:
    mode: str = "LOCAL"            # LOCAL: launch a process here; REMOTE: connect to host:port
    python: str = ""               # LOCAL: the backend environment's Python
    device: str = "auto"
    host: str = "127.0.0.1"        # REMOTE (e.g. the local end of an SSH tunnel)
    port: int = 0
    token: str = ""
    user_dir: Path | None = None   # pid file, log, layouts and caches live here


class BackendManager:
    """Owns the connection (and the local process). Thread-safe; status() never blocks."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.settings = BackendSettings()
        self.local: LocalBackend | None = None
        self.conn: Connection | None = None
        self.state = "stopped"      # stopped, starting, ready, error
        self.error = ""

    def configure(self, settings: BackendSettings) -> None:
        with self._lock:
            if settings != self.settings and self.state != "stopped":
                self.stop()
            self.settings = settings

    def status(self) -> dict:
        info = self.conn.info if self.conn is not None and self.conn.alive else {}
        state = self.state
        if state == "ready" and (self.conn is None or not self.conn.alive):
            state = "error"
            self.error = self.conn.closed_reason if self.conn else "not connected"
        return {"state": state, "error": self.error, "device": info.get("device", ""),
                "device_name": info.get("device_name", ""), "address": self.conn.address if self.conn else ""}

    @property
    def log_path(self) -> Path | None:
        return self.settings.user_dir / "backend.log" if self.settings.user_dir else None

    def connection(self, timeout: float = 120.0) -> Connection:
        """The live connection, starting or reconnecting the backend if needed (blocks: call it
        from a worker thread, never from Blender's main thread while the UI is running)."""
        with self._lock:
            dead = self.local is not None and not self.local.running
            if self.conn is not None and self.conn.alive and not dead:
                return self.conn
            self._drop()
            self.state, self.error = "starting", ""
            s = self.settings
            try:
                if s.mode == "REMOTE":
                    if not s.port or not s.token:
                        raise BackendError("remote backend: set host, port and token in the HeadCraft "
                                           "preferences", "NotConfigured")
                    self.conn = Connection(s.host, s.port, s.token)
                else:
                    pid_file = s.user_dir / "backend.pid" if s.user_dir else None
                    # layouts and caches in the extension's user folder, unless the environment names one
                    env = {} if os.environ.get("HEADCRAFT_CACHE") or not s.user_dir else \
                        {"HEADCRAFT_CACHE": str(s.user_dir / "data")}
                    self.local = LocalBackend(s.python, s.device, self.log_path, pid_file, env)
                    self.local.start(timeout)
                    self.conn = self.local.connect()
            except BackendError as exc:
                self._drop()
                self.state, self.error = "error", str(exc)
                raise
            self.state = "ready"
            return self.conn

    def submit(self, kind: str, params: dict | None = None, arrays: dict | None = None) -> Job:
        return self.connection().submit(kind, params, arrays)

    def release(self) -> None:
        with self._lock:
            if self.conn is not None and self.conn.alive:
                self.conn.request("release", timeout=30)

    def stop(self) -> None:
        with self._lock:
            self._drop()
            self.state, self.error = "stopped", ""

    def restart(self) -> Connection:
        self.stop()
        return self.connection()

    def _drop(self) -> None:
        if self.local is not None:
            self.local.stop(self.conn)
        if self.conn is not None and self.conn.alive:
            self.conn.close()
        self.local = self.conn = None
