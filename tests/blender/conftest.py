"""Blender tests run the real bpy wheel with the extension enabled from its staged folder."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

REPO = "hc_test"
MODULE = f"bl_ext.{REPO}.headcraft"


def _build_module():
    spec = importlib.util.spec_from_file_location("headcraft_build", ROOT / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def blender():
    """bpy with the HeadCraft extension enabled and pointed at this Python as its backend."""
    import bpy  # noqa: I001  (bpy first: it puts Blender's script modules on sys.path)
    import addon_utils
    stage = _build_module().stage()
    bpy.context.preferences.extensions.repos.new(
        name=REPO, module=REPO, custom_directory=str(stage.parent), source="USER")
    addon_utils.enable(MODULE, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path = sys.executable
    prefs.device = "CPU"
    yield bpy
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture
def ext(blender):
    """The enabled extension's package, with an empty scene."""
    bpy = blender
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for coll in (bpy.data.meshes, bpy.data.armatures, bpy.data.collections):
        for block in list(coll):
            coll.remove(block)
    return sys.modules[MODULE]
