"""Blender tests run the real bpy wheel with the extension enabled from its staged folder."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

sys.path.insert(0, str(ROOT / "tools"))
from blender_session import disable_extension, enable_extension  # noqa: E402


_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """The bpy wheel's own teardown at interpreter exit can crash (exit 139 after every test has
    passed and the summary is printed, seen after Cycles renders on bpy 4.2): once pytest is
    done, leave with its status without running it."""
    if _STATUS and "bpy" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS[-1])


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


@pytest.fixture(scope="session")
def fresh_start(blender):
    """Puts Blender back as the session began: a new unsaved file from the factory startup
    (never a user's startup.blend), emptied, so no object, image, material, action or text and
    no scene setting of an earlier test carries over; the extension's preferences as they were
    when it was enabled (Blender keeps preferences across files); no sidebar messages."""
    bpy = blender
    ext = sys.modules["bl_ext.hc_test.headcraft"]

    def preferences():
        return bpy.context.preferences.addons[ext.__name__].preferences

    own = [p.identifier for p in preferences().bl_rna.properties
           if p.identifier not in bpy.types.AddonPreferences.bl_rna.properties]
    enabled_with = {name: getattr(preferences(), name) for name in own}

    def reset():
        bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)
        for name, value in enabled_with.items():
            setattr(preferences(), name, value)
        ext.runtime.STATE.messages.clear()
    return reset


@pytest.fixture
def ext(blender, fresh_start):
    """The enabled extension's package, in a factory-fresh unsaved file (see fresh_start)."""
    ext = sys.modules["bl_ext.hc_test.headcraft"]
    assert not ext.runtime.STATE.jobs, "a job of an earlier test is still running"
    fresh_start()
    return ext
