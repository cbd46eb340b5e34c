"""The HeadCraft sidebar tab (status, progress, cancel) and the backend operators."""
from __future__ import annotations

import sys

import bpy

from . import runtime
from .client.connection import BackendError
from .client.environment import EnvironmentSetup

SETUP: list[EnvironmentSetup | None] = [None]


def draw_status(layout, context) -> None:
    """Backend state, the running job's progress bar with Cancel, and recent messages."""
    status = runtime.MANAGER.status()
    state = status["state"]
    icon = {"ready": "CHECKMARK", "starting": "TIME", "error": "ERROR"}.get(state, "RADIOBUT_OFF")
    text = {"ready": f"Backend ready on {status['device_name'] or status['device']}",
            "starting": "Backend starting...", "stopped": "Backend stopped (starts when needed)",
            "error": "Backend unavailable"}.get(state, state)
    layout.label(text=text, icon=icon)
    if state == "error" and status["error"]:
        for line in status["error"].splitlines()[:3]:
            layout.label(text=line[:100])
    for job in [*runtime.ACTIVE, *runtime.LOCAL]:
        row = layout.row(align=True)
        label = f"{job.title}: {job.stage or job.state} {job.message}".strip()
        row.progress(factor=job.fraction, type="BAR", text=label[:80])
        row.operator("headcraft.cancel_job", text="", icon="X")
    setup = SETUP[0]
    if setup is not None and setup.state in ("running", "error", "done"):
        row = layout.row(align=True)
        row.progress(factor=setup.fraction, type="BAR", text=setup.message[:80])
        if setup.state == "running":
            row.operator("headcraft.cancel_setup", text="", icon="X")
    for level, msg in runtime.MESSAGES[-3:]:
        layout.label(text=msg[:100], icon="ERROR" if level == "ERROR" else "INFO")


class SidebarSubPanel:
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
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return runtime.busy()

    def execute(self, context):
        for job in [*runtime.ACTIVE, *runtime.LOCAL]:
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
    runtime.MANAGER.configure(settings)
    runtime.MANAGER.restart()


class HEADCRAFT_OT_restart_backend(bpy.types.Operator):
    """Stop the backend and start it again with the current preferences"""
    bl_idname = "headcraft.restart_backend"
    bl_label = "Restart Backend"
    execute = _backend_op(_restart, "backend restarted")


class HEADCRAFT_OT_stop_backend(bpy.types.Operator):
    """Stop the backend process (it starts again when a job needs it)"""
    bl_idname = "headcraft.stop_backend"
    bl_label = "Stop Backend"
    execute = _backend_op(lambda s: runtime.MANAGER.stop(), "backend stopped")


class HEADCRAFT_OT_release_gpu(bpy.types.Operator):
    """Drop cached models and free the backend's GPU memory"""
    bl_idname = "headcraft.release_gpu"
    bl_label = "Release GPU"
    execute = _backend_op(lambda s: runtime.MANAGER.release(), "backend memory released")


class HEADCRAFT_OT_setup_backend(bpy.types.Operator):
    """Create the backend's own Python environment (venv + PyTorch + backend) with pip"""
    bl_idname = "headcraft.setup_backend"
    bl_label = "Set Up Backend"

    @classmethod
    def poll(cls, context):
        return SETUP[0] is None or SETUP[0].state != "running"

    def execute(self, context):
        p = runtime.prefs()
        base = bpy.path.abspath(p.setup_base_python) or sys.executable
        env_dir = runtime.managed_python().parents[1]
        SETUP[0] = EnvironmentSetup(env_dir, base, p.setup_torch, p.setup_index_url).start()
        if bpy.app.background:
            while SETUP[0].state == "running":
                SETUP[0]._cancel.wait(0.2)
        else:
            bpy.app.timers.register(_redraw_setup, first_interval=0.5)
        return {"FINISHED"}


def _redraw_setup():
    runtime._redraw()
    setup = SETUP[0]
    if setup is None or setup.state != "running":
        if setup is not None:
            runtime.notify(setup.message, "ERROR" if setup.state == "error" else "INFO")
        return None
    return 0.5


class HEADCRAFT_OT_cancel_setup(bpy.types.Operator):
    """Stop the backend environment set-up"""
    bl_idname = "headcraft.cancel_setup"
    bl_label = "Cancel Set-up"

    def execute(self, context):
        if SETUP[0] is not None:
            SETUP[0].cancel()
        return {"FINISHED"}


CLASSES = (VIEW3D_PT_headcraft, HEADCRAFT_OT_cancel_job, HEADCRAFT_OT_restart_backend,
           HEADCRAFT_OT_stop_backend, HEADCRAFT_OT_release_gpu, HEADCRAFT_OT_setup_backend,
           HEADCRAFT_OT_cancel_setup)
