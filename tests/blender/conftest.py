"""Blender tests run the real bpy wheel with the extension enabled from its staged folder."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

sys.path.insert(0, str(ROOT / "tools"))
from blender_session import disable_extension, enable_extension  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend_bound: nearly all its time is backend work, the same on every Blender; "
                   "build.py test runs it on bpy 4.2 only (-m 'not backend_bound' on 4.5 and 5.x)")


def _build_module():
    spec = importlib.util.spec_from_file_location("headcraft_build", ROOT / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def blender():
    """bpy with the HeadCraft extension enabled and pointed at this Python as its backend."""
    import bpy
    _build_module().stage()
    ext = enable_extension("hc_test")
    yield bpy
    disable_extension(ext)


@pytest.fixture
def ext(blender):
    """The enabled extension's package, in a new unsaved file (empty scene, default settings):
    nothing an earlier test made (objects, images, materials, actions, settings) carries over."""
    bpy = blender
    ext = sys.modules["bl_ext.hc_test.headcraft"]
    assert not ext.runtime.STATE.jobs, "a job of an earlier test is still running"
    bpy.ops.wm.read_homefile(use_empty=True)
    ext.runtime.STATE.messages.clear()
    return ext
