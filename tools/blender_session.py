"""Load the staged extension into the bpy module the way Blender does (scripts, bench, tests)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_backend_python() -> str:
    """The Python the backend runs in: HEADCRAFT_BACKEND_PYTHON (set by build.py test when bpy runs
    in a venv without torch), else this one."""
    return os.environ.get("HEADCRAFT_BACKEND_PYTHON") or sys.executable


def enable_extension(repo: str, backend_python: str | None = None, device: str = "CPU"):
    """Register .stage/ as an extension repository, enable HeadCraft from it, point its
    preferences at `backend_python` (default: default_backend_python()); returns the extension's package module."""
    import bpy  # noqa: I001  (bpy first: it puts Blender's script modules on sys.path)
    import addon_utils
    bpy.context.preferences.extensions.repos.new(name=repo, module=repo,
                                                 custom_directory=os.environ.get("HEADCRAFT_STAGE") or str(ROOT / ".stage"), source="USER")
    module = f"bl_ext.{repo}.headcraft"
    addon_utils.enable(module, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.python_path = backend_python or default_backend_python()
    prefs.device = device
    return sys.modules[module]


def disable_extension(ext) -> None:
    import addon_utils
    addon_utils.disable(ext.__name__, default_set=True)
