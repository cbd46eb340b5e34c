"""Blender tests run the real bpy wheel with the extension enabled from its staged folder."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

sys.path.insert(0, str(ROOT / "tools"))
from blender_session import disable_extension, enable_extension  # noqa: E402


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
    """The enabled extension's package, with an empty scene."""
    bpy = blender
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for coll in (bpy.data.meshes, bpy.data.armatures, bpy.data.collections):
        for block in list(coll):
            coll.remove(block)
    return sys.modules["bl_ext.hc_test.headcraft"]
