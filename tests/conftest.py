"""Shared test set-up: import paths, a real backend process, a throwaway Blender user folder."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "backend" / "src", ROOT, ROOT / "tests", ROOT / "tests" / "blender"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# The extension's wire codec, limits, units and presets are copies of the backend's (build.py sync); keep them current.
for _name in ("wire.py", "limits.py", "units.py", "presets.py"):
    _src = ROOT / "backend" / "src" / "headcraft_backend" / _name
    _copy = ROOT / "headcraft_blender" / "client" / _name
    if not _copy.exists() or _copy.read_bytes() != _src.read_bytes():
        _copy.write_bytes(_src.read_bytes())

# pytest-xdist workers (build.py test runs two): each gets Blender user, cache and staging
# folders of its own, since they inherit the controller's environment.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _own_folder(var: str, prefix: str) -> None:
    if WORKER or not os.environ.get(var):
        os.environ[var] = tempfile.mkdtemp(prefix=prefix)


# Nothing a test does with Blender may land in the real ~/.config/blender.
_own_folder("BLENDER_USER_RESOURCES", "headcraft-blender-user-")
if WORKER:
    os.environ["HEADCRAFT_STAGE"] = tempfile.mkdtemp(prefix="headcraft-stage-")
# bpy before anything imports libigl: once libigl's Embree is loaded, bpy's import fails with an
# undefined Embree symbol (the other order works). Only this test process has both.
import bpy  # noqa: E402,F401
# ...nor in the user's HeadCraft cache (dense templates are rebuilt in a few seconds).
_own_folder("HEADCRAFT_CACHE", "headcraft-cache-")


@pytest.fixture(scope="session")
def backend_process(tmp_path_factory):
    """A real backend process on a real socket, shared by the session's tests."""
    from headcraft_blender.client.launcher import LocalBackend
    d = tmp_path_factory.mktemp("backend")
    # build.py test runs Blender tests under several Pythons; the backend always runs in .venv's.
    python = os.environ.get("HEADCRAFT_BACKEND_PYTHON") or sys.executable
    b = LocalBackend(python, "cpu", log_path=d / "backend.log", pid_file=d / "backend.pid")
    b.start()
    yield b
    b.stop(None)


@pytest.fixture
def conn(backend_process):
    c = backend_process.connect()
    yield c
    c.close()


REAL_SCANS = ROOT.parent / "shared" / "data" / "real_scans"


@pytest.fixture(scope="session")
def demosthenes() -> Path:
    """The real Demosthenes scan beside the project (CC BY 4.0, ryanfb); skipped without it."""
    path = REAL_SCANS / "demosthenes.obj"
    if not path.is_file():
        pytest.skip(f"real scan not found at {path} (the ../shared folder beside the project)")
    return path
