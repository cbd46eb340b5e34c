"""Start and stop a local backend process; clean up one orphaned by a crashed Blender (no bpy)."""
from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .connection import BackendError, Connection

READY_PREFIX = "HEADCRAFT-BACKEND READY"
TOKEN_ENV = "HEADCRAFT_TOKEN"
OUTPUT_LINES = 200      # the backend's last output lines kept for an error message


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _is_backend(pid: int) -> bool:
    """Only processes that are ours get killed: check the command line where the OS shows it."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"headcraft_backend" in cmdline.read_bytes()
        except OSError:
            return False
    return False  # elsewhere the backend's own parent watch ends it


def cleanup_orphan(pid_file: Path) -> int | None:
    """Kill a backend recorded in pid_file whose Blender is gone. Returns the pid it killed."""
    try:
        record = json.loads(pid_file.read_text())
        pid, owner = int(record["pid"]), int(record.get("owner", -1))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    killed = None
    if owner != os.getpid() and not _process_alive(owner) and _process_alive(pid) and _is_backend(pid):
        os.kill(pid, signal.SIGTERM)
        killed = pid
    if killed or not _process_alive(pid):
        pid_file.unlink(missing_ok=True)
    return killed


class LocalBackend:
    """A backend process on this machine, started with a fresh random token."""

    def __init__(self, python: str, device: str = "auto", log_path: Path | None = None,
                 pid_file: Path | None = None, env: dict | None = None):
        self.python, self.device = python, device
        self.log_path, self.pid_file, self.extra_env = log_path, pid_file, env or {}
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.token = secrets.token_urlsafe(32)

    def start(self, timeout: float = 120.0) -> None:
        if not self.python or not Path(self.python).exists():
            raise BackendError(f"Set up the backend first: press Set Up Backend in the HeadCraft sidebar, "
                               f"or choose an existing Backend Python in the preferences.\n"
                               f"Not found: {self.python}", "NotConfigured")
        if self.pid_file:
            cleanup_orphan(self.pid_file)
        env = dict(os.environ, **self.extra_env, PYTHONUNBUFFERED="1")
        env[TOKEN_ENV] = self.token
        for key in ("PYTHONHOME", "PYTHONPATH"):  # Blender's own Python settings must not leak
            env.pop(key, None)
        cmd = [self.python, "-m", "headcraft_backend", "serve", "--port", "0",
               "--device", self.device, "--parent-pid", str(os.getpid())]
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--log-file", str(self.log_path)]
        flags: dict[str, Any] = {"start_new_session": True} if sys.platform != "win32" else {}
        self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, **flags)
        lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                lines.append(line.rstrip())
                if line.startswith(READY_PREFIX) and not ready.is_set():
                    self.port = int(line.split("port=")[1].split()[0])
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.stop()
                tail = "\n".join(list(lines)[-8:]) or "(no output)"
                why = f"exited with code {code}" if code is not None else f"was not ready within {timeout:g} s"
                raise BackendError(f"the backend {why}. Its last output:\n{tail}", "StartFailed")
        if self.pid_file:
            write_atomic(self.pid_file, json.dumps({"pid": self.process.pid, "port": self.port,
                                                    "owner": os.getpid(), "started": time.time()}))

    def connect(self, timeout: float = 10.0) -> Connection:
        return Connection("127.0.0.1", self.port, self.token, timeout=timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, conn: Connection | None = None, grace: float = 3.0) -> None:
        """Ask politely (shutdown message), then terminate, then kill."""
        asked = False
        if conn is not None and conn.alive:
            try:
                conn.request("shutdown", timeout=grace)
                asked = True
            except BackendError:
                pass
        if self.process is not None:
            try:
                self.process.wait(grace if asked else 0.01)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(grace)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        if self.pid_file:
            self.pid_file.unlink(missing_ok=True)
