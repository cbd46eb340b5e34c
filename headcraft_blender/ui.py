"""The HeadCraft sidebar tab (status, progress, cancel) and the backend operators."""
from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING

import bpy

from . import runtime
from .client.connection import BackendError
from .client.environment import EnvironmentSetup

# Pythons the backend's environment can be made from (MediaPipe 0.10.21 has wheels up to 3.12)
MIN_BASE_PYTHON, MAX_BASE_PYTHON = (3, 10), (3, 12)


def _wrap(layout, context, text: str, icon: str = "NONE", lines: int = 6) -> None:
    """Labels for a long message, wrapped to the region's width (Blender cuts labels)."""
    region = getattr(context, "region", None)
    width = max(24, int(region.width / 7.5)) if region is not None and region.width > 1 else 60
    out = [w for para in text.splitlines() for w in textwrap.wrap(para, width) or [""]]
    if len(out) > lines:
        out[lines:] = ["(the whole message is in the Info editor)"]
    indent = "BLANK1" if icon != "NONE" else "NONE"     # later lines line up with the first's text
    col = layout.column(align=True)
    for i, line in enumerate(out):
        col.label(text=line, icon=icon if i == 0 else indent)


def draw_status(layout, context) -> None:
    """Backend state (or how to set one up), the running job's progress bar with Cancel, and
    recent messages."""
    session = runtime.STATE
    status = session.backend.status()
    state = status["state"]
    setup = session.setup
    missing = runtime.backend_missing() if state in ("stopped", "error") else None
    if missing is not None and not session.setup_running():
        layout.label(text="No backend set up yet", icon="ERROR")
        _wrap(layout, context, missing)
        if runtime.prefs().python_path:
            layout.operator("headcraft.open_preferences", icon="PREFERENCES")
        else:
            layout.operator("headcraft.setup_backend", icon="IMPORT")
    else:
        icon = {"ready": "CHECKMARK", "starting": "TIME", "error": "ERROR"}.get(state, "RADIOBUT_OFF")
        text = {"ready": f"Backend ready on {status['device_name'] or status['device']}",
                "starting": "Backend starting...", "stopped": "Backend stopped (starts when needed)",
                "error": "Backend unavailable"}.get(state, state)
        layout.label(text=text, icon=icon)
        if state == "error" and status["error"]:
            _wrap(layout, context, status["error"], lines=4)
    for job in session.tasks():
        row = layout.row(align=True)
        label = f"{job.title}: {job.stage or job.state} {job.message}".strip()
        row.progress(factor=job.fraction, type="BAR", text=label[:80])
        row.operator("headcraft.cancel_job", text="", icon="X")
    if setup is not None and setup.state in ("running", "error", "done"):
        row = layout.row(align=True)
        row.progress(factor=setup.fraction, type="BAR", text=setup.message[:80])
        if setup.state == "running":
            row.operator("headcraft.cancel_setup", text="", icon="X")
    for level, msg in session.messages[-3:]:
        _wrap(layout, context, msg, "ERROR" if level == "ERROR" else "INFO", lines=3)
    log = session.backend.log_path
    if (state == "error" or session.has_errors()) and log is not None and log.exists():
        layout.operator("headcraft.open_backend_log", icon="TEXT")


# A Panel to mypy only, so that the mixin's values take the Literal types bpy.types.Panel declares
# (its own strings would be `str`). Annotating them would not do: Blender evaluates the annotations
# of a registered class and its bases, and those types exist only in the stubs.
if TYPE_CHECKING:
    _PanelMixinBase = bpy.types.Panel
else:
    _PanelMixinBase = object


class SidebarSubPanel(_PanelMixinBase):
    """Placement shared by the capability panels: sub-panels of the HeadCraft sidebar tab."""
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "HeadCraft"
    bl_parent_id = "VIEW3D_PT_headcraft"


class VIEW3D_PT_headcraft(bpy.types.Panel):
    bl_label = "HeadCraft"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "HeadCraft"

    def draw(self, context):
        draw_status(self.layout.column(), context)


class HEADCRAFT_OT_cancel_job(bpy.types.Operator):
    """Cancel the running HeadCraft job; nothing of it is applied"""
    bl_idname = "headcraft.cancel_job"
    bl_label = "Cancel Job"

    @classmethod
    def poll(cls, context):
        if not runtime.STATE.busy():
            cls.poll_message_set("No HeadCraft job is running")
            return False
        return True

    def execute(self, context):
        for job in runtime.STATE.tasks():
            job.cancel()
        return {"FINISHED"}


def _backend_op(fn, done: str):
    """An operator body that talks to the backend: synchronous headless, else in a thread so
    the UI never waits for a backend to start or stop."""
    def execute(self, context):
        settings = runtime.settings_from_prefs()
        if not bpy.app.background:
            runtime.in_thread(lambda: fn(settings), done)
            return {"FINISHED"}
        try:
            fn(settings)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        runtime.notify(done)
        return {"FINISHED"}
    return execute


def _restart(settings):
    runtime.STATE.backend.configure(settings)
    runtime.STATE.backend.restart()


class HEADCRAFT_OT_restart_backend(bpy.types.Operator):
    """Stop the backend and start it again with the current preferences"""
    bl_idname = "headcraft.restart_backend"
    bl_label = "Restart Backend"
    execute = _backend_op(_restart, "Backend restarted")


class HEADCRAFT_OT_stop_backend(bpy.types.Operator):
    """Stop the backend process (it starts again when a job needs it)"""
    bl_idname = "headcraft.stop_backend"
    bl_label = "Stop Backend"
    execute = _backend_op(lambda s: runtime.STATE.backend.stop(), "Backend stopped")


class HEADCRAFT_OT_release_gpu(bpy.types.Operator):
    """Drop cached models and free the backend's GPU memory"""
    bl_idname = "headcraft.release_gpu"
    bl_label = "Release GPU"
    execute = _backend_op(lambda s: runtime.STATE.backend.release(), "Backend memory released")


class HEADCRAFT_OT_setup_backend(bpy.types.Operator):
    """Install the backend's own Python environment (PyTorch and the backend) with pip"""
    bl_idname = "headcraft.setup_backend"
    bl_label = "Set Up Backend"

    @classmethod
    def poll(cls, context):
        if runtime.STATE.setup_running():
            cls.poll_message_set("The backend set-up is already running")
            return False
        return True

    def execute(self, context):
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Allow Online Access first (Preferences > System > Network): Set Up "
                                   "Backend downloads PyTorch and the backend's packages from PyPI (1-3 GB). "
                                   "Offline, install the backend yourself and choose its Backend Python")
            return {"CANCELLED"}
        p = runtime.prefs()
        if not p.setup_base_python and sys.version_info[:2] > MAX_BASE_PYTHON:
            self.report({"ERROR"}, f"Choose a Base Python {'.'.join(map(str, MIN_BASE_PYTHON))}-"
                                   f"{'.'.join(map(str, MAX_BASE_PYTHON))} in the HeadCraft preferences: Blender's "
                                   f"own Python {sys.version_info[0]}.{sys.version_info[1]} is newer than the "
                                   f"backend's face detector (MediaPipe) supports")
            return {"CANCELLED"}
        base = bpy.path.abspath(p.setup_base_python) or sys.executable
        env_dir = runtime.managed_python().parents[1]
        runtime.STATE.setup = EnvironmentSetup(env_dir, base, p.setup_torch, p.setup_index_url).start()
        if bpy.app.background:
            runtime.STATE.setup.wait()
        else:
            bpy.app.timers.register(_redraw_setup, first_interval=0.5)
        return {"FINISHED"}


def _redraw_setup():
    runtime.redraw()
    setup = runtime.STATE.setup
    if setup is None or setup.state != "running":
        if setup is not None:
            runtime.notify(setup.message, "ERROR" if setup.state == "error" else "INFO")
        return None
    return 0.5


class HEADCRAFT_OT_cancel_setup(bpy.types.Operator):
    """Stop installing the backend environment"""
    bl_idname = "headcraft.cancel_setup"
    bl_label = "Cancel Setup"

    def execute(self, context):
        if runtime.STATE.setup is not None:
            runtime.STATE.setup.cancel()
        return {"FINISHED"}


class HEADCRAFT_OT_report(bpy.types.Operator):
    """Show a HeadCraft message in the status bar and the Info editor"""
    bl_idname = "headcraft.report"
    bl_label = "HeadCraft Message"
    bl_options = {"INTERNAL"}

    level: bpy.props.EnumProperty(name="Level", description="How the message is shown",
                                  items=[("INFO", "Info", "A note"), ("WARNING", "Warning", "Something to check"),
                                         ("ERROR", "Error", "Something failed")])
    message: bpy.props.StringProperty(name="Message", description="The whole message")

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}

    def invoke(self, context, event):
        # reported from a modal step the message also reaches the status bar (from a timer, not)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        return self.execute(context)


class HEADCRAFT_OT_open_backend_log(bpy.types.Operator):
    """Open the backend's log in a Text Editor window (reloaded each time)"""
    bl_idname = "headcraft.open_backend_log"
    bl_label = "Open Backend Log"

    @classmethod
    def poll(cls, context):
        path = runtime.STATE.backend.log_path
        if path is None or not path.exists():
            cls.poll_message_set("The backend has not written a log yet (it starts with the first job)")
            return False
        return True

    def execute(self, context):
        path = runtime.STATE.backend.log_path
        lines = path.read_text(errors="replace").splitlines()[-2000:]
        text = bpy.data.texts.get(LOG_TEXT) or bpy.data.texts.new(LOG_TEXT)
        text.from_string("\n".join(lines) + "\n")
        text.use_fake_user = False
        text.current_line_index = max(0, len(lines) - 1)
        if not bpy.app.background and context.window is not None:
            bpy.ops.wm.window_new()
            area = context.window_manager.windows[-1].screen.areas[0]
            area.type = "TEXT_EDITOR"
            area.spaces[0].text = text
        self.report({"INFO"}, f"Backend log: {path}")
        return {"FINISHED"}


class HEADCRAFT_OT_open_preferences(bpy.types.Operator):
    """Open the HeadCraft preferences (backend, device, FLAME files)"""
    bl_idname = "headcraft.open_preferences"
    bl_label = "Open HeadCraft Preferences"

    def execute(self, context):
        context.preferences.active_section = "ADDONS"
        context.window_manager.addon_search = "HeadCraft"
        try:
            bpy.ops.screen.userpref_show(section="ADDONS")
        except RuntimeError as exc:   # no window to open it in (background)
            self.report({"WARNING"}, f"Open Edit > Preferences > Add-ons > HeadCraft ({exc})")
            return {"CANCELLED"}
        return {"FINISHED"}


LOG_TEXT = "HeadCraft Backend Log"

CLASSES = (VIEW3D_PT_headcraft, HEADCRAFT_OT_report, HEADCRAFT_OT_open_backend_log, HEADCRAFT_OT_open_preferences, HEADCRAFT_OT_cancel_job, HEADCRAFT_OT_restart_backend,
           HEADCRAFT_OT_stop_backend, HEADCRAFT_OT_release_gpu, HEADCRAFT_OT_setup_backend,
           HEADCRAFT_OT_cancel_setup)
