"""Jobs as Blender sees them: submitted from operators, run on the backend from a worker thread,
applied to bpy.data on the main thread by a pump (a timer, or called directly in background mode).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import bpy

from .client.connection import BackendError
from .client.environment import env_python
from .client.manager import BackendManager, BackendSettings

MANAGER = BackendManager()
ACTIVE: list["UIJob"] = []
LOCAL: list = []        # main-thread tasks (renders): title, stage, state, message, fraction, cancel()
_lock = threading.Lock()


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


def user_dir() -> Path:
    return Path(bpy.utils.extension_path_user(__package__, path="", create=True))


def managed_python() -> Path:
    return env_python(user_dir() / "backend-env")


def settings_from_prefs() -> BackendSettings:
    p = prefs()
    return BackendSettings(mode=p.backend_mode, python=bpy.path.abspath(p.python_path) or str(managed_python()),
                           device=p.device.lower(), host=p.remote_host, port=p.remote_port,
                           token=p.remote_token, user_dir=user_dir())


class UIJob:
    """A backend job with the callbacks that apply its result inside Blender."""

    def __init__(self, title: str, kind: str, params: dict, arrays: dict | None,
                 on_done: Callable[[dict, dict], None], on_error: Callable[[str], None] | None = None,
                 on_cancel: Callable[[], None] | None = None):
        self.title, self.kind, self.params, self.arrays = title, kind, params, arrays or {}
        self.on_done, self.on_error, self.on_cancel = on_done, on_error, on_cancel
        self.state, self.fraction, self.stage, self.message = "starting", 0.0, "", ""
        self.error = ""
        self.handle = None
        self.cancel_requested = False
        self.applied = False

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.handle is not None:
            try:
                self.handle.cancel()
            except BackendError:
                pass

    def _run(self) -> None:
        try:
            for attempt in range(2):
                self.message = "starting the backend..." if MANAGER.state != "ready" else ""
                conn = MANAGER.connection()
                if self.cancel_requested:
                    self.state = "cancelled"
                    return
                self.handle = conn.submit(self.kind, self.params, self.arrays)
                self.state = "running"
                while not self.handle.finished.wait(0.05):
                    self.fraction, self.stage, self.message = (self.handle.fraction, self.handle.stage,
                                                               self.handle.message)
                error = self.handle.error
                if error is None or error.error_type != "NotDelivered" or attempt:
                    break   # a backend that died before taking the job gets one fresh start
            self.state = self.handle.state
            if self.handle.error:
                self.error = str(self.handle.error)
        except BackendError as exc:
            self.state, self.error = "error", str(exc)
        except Exception as exc:  # never let the worker thread die silently
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error", "cancelled")


def submit(job: UIJob) -> UIJob:
    MANAGER.configure(settings_from_prefs())
    with _lock:
        ACTIVE.append(job)
    threading.Thread(target=job._run, name=f"headcraft-{job.kind}", daemon=True).start()
    if bpy.app.background:
        wait(job)
    else:
        ensure_pump()
    return job


def submit_from_operator(op, job: UIJob) -> set:
    """Submit for an operator; headless the job has already run, so report its failure."""
    submit(job)
    if job.finished and job.state != "done":
        op.report({"ERROR"}, job.error or job.state)
        return {"CANCELLED"}
    return {"FINISHED"}


def wait(job: UIJob, timeout: float = 3600.0) -> UIJob:
    """Block until the job is applied (background mode, scripts and tests)."""
    deadline = time.monotonic() + timeout
    while not job.applied:
        pump()
        if time.monotonic() > deadline:
            job.cancel()
            raise TimeoutError(f"{job.title} did not finish in {timeout:g} s")
        time.sleep(0.01)
    return job


def pump() -> float | None:
    """Apply finished jobs on the main thread; returns the timer interval."""
    with _lock:
        done = [j for j in ACTIVE if j.finished]
    for job in done:
        with _lock:
            if job not in ACTIVE:       # applied by a nested pump (a callback that waited on a job)
                continue
            ACTIVE.remove(job)
        try:
            if job.state == "done":
                job.on_done(job.handle.result, job.handle.arrays)
            elif job.state == "error" and job.on_error:
                job.on_error(job.error)
            elif job.state == "cancelled" and job.on_cancel:
                job.on_cancel()
        except Exception as exc:  # applying failed: report it, never leave the job hanging
            job.state, job.error = "error", f"applying the result failed: {exc}"
            if job.on_error:
                job.on_error(job.error)
        finally:
            job.applied = True
            _LAST[0] = job
    if done or ACTIVE:
        _redraw()
    return 0.1 if ACTIVE else None


_LAST: list[UIJob | None] = [None]
MESSAGES: list[tuple[str, str]] = []   # (level, text) shown in the panel, newest last


def notify(text: str, level: str = "INFO") -> None:
    MESSAGES.append((level, text))
    del MESSAGES[:-5]
    print(f"HeadCraft: {text}")


def notify_error(text: str) -> None:
    notify(text, "ERROR")


def busy() -> bool:
    return bool(ACTIVE or LOCAL)


def last_finished() -> UIJob | None:
    return _LAST[0]


def in_thread(fn: Callable[[], object], done: str) -> None:
    """Run a blocking backend call off the main thread; report the outcome in the panel."""
    def work():
        try:
            fn()
            notify(done)
        except BackendError as exc:
            notify_error(str(exc))
    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def redraw():
        _redraw()
        return 0.2 if thread.is_alive() else None
    bpy.app.timers.register(redraw, first_interval=0.1)


HEALTH_INTERVAL_S = 5.0


def health_check() -> float:
    """Timer: ping a ready backend from a thread; a dead one shows up in the panel at once."""
    conn = MANAGER.conn
    if MANAGER.state == "ready" and conn is not None and not ACTIVE:
        def ping():
            try:
                conn.ping(timeout=HEALTH_INTERVAL_S)
            except BackendError as exc:
                MANAGER.state, MANAGER.error = "error", str(exc)
            _redraw()
        threading.Thread(target=ping, daemon=True).start()
    return HEALTH_INTERVAL_S


def ensure_pump() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=0.05)


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def shutdown() -> None:
    for job in list(ACTIVE):
        job.cancel()
    MANAGER.stop()
