"""The HeadCraft UI as text: every panel and menu in its main states, drawn by the real
extension in the real bpy with a real backend (`python build.py ui` -> stdout and out/ui.txt).

States: first run (no backend set up), nothing selected, a head selected, a detailed head
selected, a job running, a backend error.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="headcraft-ui-"))
sys.path.insert(0, str(ROOT / "tools"))

import bpy  # noqa: E402  (bpy first: it puts Blender's script modules on sys.path)

from blender_session import default_backend_python, disable_extension, enable_extension  # noqa: E402
from recording_layout import draw_text  # noqa: E402


def panels(ext) -> list:
    """The sidebar's panels in drawing order: the main one, then its sub-panels."""
    found = [c for c in ext.addon.CLASSES if issubclass(c, bpy.types.Panel) and c.bl_category == "HeadCraft"]
    order = {c.__name__: i for i, c in enumerate(found)}
    return sorted(found, key=lambda c: (getattr(c, "bl_parent_id", "") != "", order[c.__name__]))


def snapshot(ext, title: str) -> list[str]:
    out = [f"=== {title} ===", f"(active object: {getattr(bpy.context.active_object, 'name', 'none')})"]
    for cls in panels(ext):
        header = f"--- {cls.bl_label}"
        if hasattr(cls, "draw_header"):
            header += " " + " ".join(draw_text(type("Header", (), {"draw": cls.draw_header}), bpy.context,
                                               real=object()))
        out.append(header + " ---")
        out += ["  " + line for line in draw_text(cls, bpy.context, real=object())]
    return out + [""]


def menus(ext) -> list[str]:
    out = ["=== Menus ==="]
    for menu in ("VIEW3D_MT_mesh_add", "TOPBAR_MT_file_import", "VIEW3D_MT_object_context_menu"):
        lines = []
        for fn in getattr(bpy.types, menu)._dyn_ui_initialize():
            if getattr(fn, "__module__", "").startswith(ext.__name__):
                cls = type("Menu", (), {"draw": lambda self, context, fn=fn: fn(self, context)})
                lines += draw_text(cls, bpy.context, real=object())
        out.append(f"--- {menu}: " + " | ".join(line.strip() for line in lines))
    cls = ext.menus.VIEW3D_MT_headcraft_object
    out.append(f"--- {cls.bl_label} (right-click submenu)")
    out += ["  " + line for line in draw_text(cls, bpy.context, real=object())]
    return out + [""]


def main() -> int:
    ext = enable_extension("hc_ui", backend_python=default_backend_python())
    rt = ext.runtime
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    good = prefs.python_path
    lines: list[str] = []
    try:
        for obj in list(bpy.data.objects):
            bpy.data.objects.remove(obj)
        prefs.python_path = ""
        lines += snapshot(ext, "First run: no backend set up")
        prefs.python_path = good
        lines += snapshot(ext, "Nothing selected")
        assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=4, num_expr=10) == {"FINISHED"}
        head = bpy.context.active_object
        lines += snapshot(ext, "A head selected")
        lines += menus(ext)
        bpy.context.scene.headcraft.generate.seed = 1
        assert bpy.ops.headcraft.generate() == {"FINISHED"}
        lines += snapshot(ext, "A detailed head selected (generated)")
        rt.STATE.wait_in_background = False
        job = rt.submit(rt.UIJob("Self-test", "diagnostics.selftest", {"seconds": 30}, None, lambda r, a: None))
        while job.fraction == 0 and not job.finished:
            time.sleep(0.05)
        lines += snapshot(ext, "A job running")
        job.cancel()
        rt.wait_all(60)
        rt.STATE.wait_in_background = True
        bpy.context.view_layer.objects.active = head
        rt.STATE.backend.stop()
        prefs.python_path = str(Path(tempfile.gettempdir()) / "no-such-env" / "bin" / "python")
        try:
            bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2)
        except RuntimeError:
            pass
        lines += snapshot(ext, "Backend error (Backend Python gone)")
        prefs.python_path = good
        prefs.backend_mode, prefs.remote_port, prefs.remote_token = "REMOTE", 9, "not-a-token"
        try:
            bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2)
        except RuntimeError:
            pass
        lines += snapshot(ext, "Backend error (remote backend unreachable)")
    finally:
        prefs.backend_mode = "LOCAL"
        prefs.python_path = good
        rt.STATE.backend.stop()
        disable_extension(ext)
    text = "\n".join(lines)
    print(text)
    out = ROOT / "out" / "ui.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    print(f"\n(written to {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
