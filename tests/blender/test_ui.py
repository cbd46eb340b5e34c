"""Every panel's draw code runs against a recording layout; the extension zip builds."""
import subprocess
import sys
import zipfile

import bpy

from blender_session import default_backend_python
from recording_layout import draw

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _panels(ext):
    return [c for c in ext.addon.CLASSES if issubclass(c, bpy.types.Panel)]


def test_panels_draw_with_and_without_a_head(blender, ext):
    ctx = bpy.context

    def draw_all():
        calls = {cls.__name__: draw(cls, ctx, real=object()) for cls in _panels(ext)}
        assert all(calls.values()), [name for name, c in calls.items() if not c]
        return calls

    hints = {"VIEW3D_PT_headcraft_head": ("label", "Select a HeadCraft head to edit it"),
             "VIEW3D_PT_headcraft_maps": ("label", ext.polls.SELECT_HEAD),
             "VIEW3D_PT_headcraft_generate": ("label", "Select a HeadCraft head (its identity is used)"),
             "VIEW3D_PT_headcraft_animate": ("label", "Select a HeadCraft head or detailed head")}
    without = draw_all()
    assert ctx.active_object is None
    assert any(c[0] == "label" and "Backend" in c[1] for c in without["VIEW3D_PT_headcraft"])
    for panel, hint in hints.items():
        assert hint in without[panel], panel
    assert ("operator", "headcraft.randomize_identity") not in without["VIEW3D_PT_headcraft_head"]

    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    head = ctx.active_object
    assert ext.polls.active_head(ctx) is head
    with_head = draw_all()
    assert any(c[0] == "label" and c[1].startswith("Backend ready") for c in with_head["VIEW3D_PT_headcraft"])
    for panel, hint in hints.items():
        assert hint not in with_head[panel], panel
    head_panel = with_head["VIEW3D_PT_headcraft_head"]
    assert ("label", f"{head.name}: openhead {head['headcraft_version']}") in head_panel
    for op in ("randomize_identity", "randomize_expression", "reset_head", "sync_rig"):
        assert ("operator", f"headcraft.{op}") in head_panel


def test_panel_shows_progress_and_cancel_while_a_job_runs(blender, ext):
    job = ext.runtime.UIJob("Test job", "diagnostics.echo", {}, None, lambda r, a: None)
    job.fraction, job.stage = 0.4, "stage"
    ext.runtime.STATE.jobs.append(job)
    try:
        calls = draw(ext.ui.VIEW3D_PT_headcraft, bpy.context, real=object())
    finally:
        ext.runtime.STATE.jobs.remove(job)
    assert ("progress", 0.4, "Test job: stage") in calls
    assert ("operator", "headcraft.cancel_job") in calls


def test_preferences_draw_in_both_modes(blender, ext):
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    for mode in ("LOCAL", "REMOTE"):
        prefs.backend_mode = mode
        calls = draw(prefs, bpy.context)
        assert ("operator", "headcraft.restart_backend") in calls
        assert ("prop", "flame_model_path") in calls
        assert (("prop", "remote_token") in calls) == (mode == "REMOTE")
    prefs.backend_mode = "LOCAL"


def test_manifest_and_zip_validate(blender):
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "extension"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    zips = sorted((ROOT / "dist").glob("headcraft-*.zip"))
    with zipfile.ZipFile(zips[-1]) as z:
        names = set(z.namelist())
    assert {"blender_manifest.toml", "__init__.py", "client/wire.py", "head/objects.py"} <= names
    assert any(n.startswith("backend_dist/headcraft_backend-") for n in names)
    assert not any("torch" in n or "numpy" in n for n in names)
    # A user's install: the zip into a fresh Blender user folder, enabled, Add Head works.
    script = f"""
import os, sys, tempfile
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp()
import bpy, addon_utils
bpy.ops.extensions.package_install_files(filepath={str(zips[-1])!r}, repo="user_default",
                                         enable_on_install=True)
mod = "bl_ext.user_default.headcraft"
prefs = bpy.context.preferences.addons[mod].preferences
prefs.python_path, prefs.device = {default_backend_python()!r}, "CPU"
bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=3, num_expr=4)
head = bpy.context.active_object
print("HEAD", head["headcraft_model"], len(head.data.vertices), len(head.data.shape_keys.key_blocks))
addon_utils.disable(mod, default_set=True)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k != "BLENDER_USER_RESOURCES"})
    assert "HEAD openhead 4570 8" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]


def test_no_torch_in_the_extension():
    for path in (ROOT / "headcraft_blender").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
