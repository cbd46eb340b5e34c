"""Create the backend's own Python environment with pip (no bpy): venv, torch, the backend."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from .connection import BackendError


def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def bundled_backend() -> str:
    """The backend wheel shipped inside the extension, or the source tree in a checkout."""
    here = Path(__file__).resolve().parents[1]
    wheels = sorted((here / "backend_dist").glob("headcraft_backend-*.whl"))
    if wheels:
        return str(wheels[-1])
    source = here.parent / "backend"
    if (source / "pyproject.toml").exists():
        return str(source)
    raise BackendError("no backend package found inside the extension (backend_dist/*.whl)",
                       "NotConfigured")


class EnvironmentSetup:
    """Runs in a thread; `fraction`, `message`, `state` are read by the UI."""

    def __init__(self, env_dir: Path, base_python: str, torch_spec: str = "torch",
                 index_url: str = "", backend: str | None = None, system_site_packages: bool = False):
        self.env_dir, self.base_python = Path(env_dir), base_python
        self.torch_spec, self.index_url = torch_spec or "torch", index_url
        self.backend = backend
        self.system_site_packages = system_site_packages
        self.state, self.fraction, self.message = "idle", 0.0, ""
        self.log: list[str] = []
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None

    def cancel(self) -> None:
        self._cancel.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()

    def start(self) -> "EnvironmentSetup":
        self.state = "running"
        threading.Thread(target=self.run, daemon=True).start()
        return self

    def wait(self) -> None:
        """Block until the set-up has ended (background Blender)."""
        while self.state == "running":
            self._cancel.wait(0.2)

    def run(self) -> None:
        py = env_python(self.env_dir)
        try:
            backend = self.backend or bundled_backend()
            venv = [self.base_python, "-m", "venv", str(self.env_dir)]
            if self.system_site_packages:
                venv.append("--system-site-packages")
            steps = [(0.05, "creating the environment", venv)]
            pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
            torch = pip + [self.torch_spec] + (["--index-url", self.index_url] if self.index_url else [])
            steps += [(0.15, f"installing {self.torch_spec} (large download)", torch),
                      (0.85, "installing the HeadCraft backend", pip + [backend]),
                      (0.95, "checking the backend", [str(py), "-m", "headcraft_backend", "info"])]
            for fraction, message, cmd in steps:
                self.fraction, self.message = fraction, message
                self._call(cmd)
            self.state, self.fraction, self.message = "done", 1.0, f"backend environment ready: {py}"
        except BackendError as exc:
            self.state, self.message = ("cancelled", "set-up cancelled") if self._cancel.is_set() \
                else ("error", str(exc))

    def _call(self, cmd: list[str]) -> None:
        if self._cancel.is_set():
            raise BackendError("cancelled", "Cancelled")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=env)
        except OSError as exc:
            raise BackendError(f"cannot run {cmd[0]}: {exc}", "SetupFailed") from None
        assert self._proc.stdout is not None    # stdout=PIPE
        for line in self._proc.stdout:
            line = line.rstrip()
            self.log.append(line)
            if line.startswith(("Collecting", "Installing", "Successfully", "Downloading")):
                self.message = line[:120]
        if self._proc.wait() != 0:
            tail = "\n".join(self.log[-5:])
            raise BackendError(f"'{' '.join(cmd[:4])} ...' failed:\n{tail}", "SetupFailed")
