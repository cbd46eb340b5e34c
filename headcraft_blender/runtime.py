"""Jobs as Blender sees them: submitted from operators, run on the backend from a worker thread,
applied to bpy.data on the main thread by a pump (a timer, or called directly in background mode).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import bpy

from .client import wire
from .client.connection import BackendError, Job
from .client.environment import EnvironmentSetup, env_python
from .client.manager import BackendManager, BackendSettings

if TYPE_CHECKING:   # the stubs' name for an operator's bl_options flags (no such module in Blender)
    from bpy.stub_internal.rna_enums import OperatorTypeFlagItems


@dataclasses.dataclass(eq=False)
class Session:
    """What the extension holds while Blender runs (one instance, STATE): the backend, the jobs
    and tasks under way, the sidebar's messages, the backend set-up."""
    backend: BackendManager = dataclasses.field(default_factory=BackendManager)
    jobs: list[UIJob] = dataclasses.field(default_factory=list)    # submitted, not yet applied
    # tasks run on the main thread (renders): title, stage, state, message, fraction, cancel()
    local_tasks: list = dataclasses.field(default_factory=list)
    messages: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (level, text), newest last
    setup: EnvironmentSetup | None = None       # the latest Set Up Backend run
    # Background scripts block in the operator until the result is applied; tests of the GUI's
    # flow turn this off and apply results with pump(), as the GUI's timer does.
    wait_in_background: bool = True
    # operators whose execute() waits for its job (background scripts), innermost last
    operators: list[bpy.types.Operator] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)   # guards `jobs`

    def busy(self) -> bool:
        return bool(self.jobs or self.local_tasks)

    def tasks(self) -> list:
        """Everything running, jobs first: what the panel shows and Cancel stops."""
        return [*self.jobs, *self.local_tasks]

    def setup_running(self) -> bool:
        return self.setup is not None and self.setup.state == "running"

    def remember(self, level: str, text: str) -> None:
        """The sidebar's recent messages: the newest five."""
        self.messages.append((level, text))
        del self.messages[:-5]

    def clear_errors(self) -> None:
        """A job succeeded: earlier failures are no longer news."""
        self.messages[:] = [m for m in self.messages if m[0] != "ERROR"]

    def has_errors(self) -> bool:
        return any(level == "ERROR" for level, _ in self.messages)


STATE = Session()

# Job operators record no undo step when they return (nothing has changed yet): the pump records
# one when the result is applied, so Ctrl+Z removes exactly that result.
JOB_OPTIONS: set[OperatorTypeFlagItems] = {"REGISTER"}
# Operators that change the scene at once: Blender records their undo step when they return.
UNDO_OPTIONS: set[OperatorTypeFlagItems] = {"REGISTER", "UNDO"}


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


def user_dir() -> Path:
    return Path(bpy.utils.extension_path_user(__package__, path="", create=True))


def output_folder(setting: str, unsaved: str) -> Path:
    """A folder setting made absolute and created: '//' is beside the .blend, or the folder
    `unsaved` in the extension's user folder while the file is unsaved (never the working
    directory)."""
    if not setting.strip():
        raise ValueError("choose a folder")
    if setting.startswith("//") and not bpy.data.filepath:
        folder = user_dir() / unsaved / setting[2:]
    else:
        folder = Path(bpy.path.abspath(setting))
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def managed_python() -> Path:
    return env_python(user_dir() / "backend-env")


def backend_missing() -> str | None:
    """Why no local backend can start (what to do first, the path after it), or None."""
    p = prefs()
    if p.backend_mode != "LOCAL":
        return None
    if p.python_path:
        path = Path(bpy.path.abspath(p.python_path))
        return None if path.exists() else (
            f"Choose an existing Backend Python in the HeadCraft preferences, or clear it to use "
            f"Set Up Backend.\nNot found: {path}")
    if managed_python().exists():
        return None
    return ("Press Set Up Backend: it makes the backend's own Python environment and downloads "
            "PyTorch (1-3 GB, once). Or choose an existing Backend Python in the preferences.")


def settings_from_prefs() -> BackendSettings:
    p = prefs()
    return BackendSettings(mode=p.backend_mode, python=bpy.path.abspath(p.python_path) or str(managed_python()),
                           device=p.device.lower(), host=p.remote_host, port=p.remote_port,
                           token=p.remote_token, user_dir=user_dir())


class UIJob:
    """A backend job with the callbacks that apply its result inside Blender."""

    def __init__(self, title: str, kind: str, params: dict, arrays: dict | None,
                 on_done: Callable[[dict, dict], None], on_error: Callable[[str], None] | None = None,
                 on_cancel: Callable[[], None] | None = None, undo: str | None = ""):
        self.title, self.kind, self.params, self.arrays = title, kind, params, arrays or {}
        self.on_done, self.on_error, self.on_cancel = on_done, on_error, on_cancel
        # the undo step recorded once the result is applied ("" = the title; None = none, e.g.
        # one chunk of a longer run whose last chunk records the step)
        self.undo = title if undo == "" else undo
        self.state, self.fraction, self.stage, self.message = "submitted", 0.0, "", ""   # wire.JOB_STATES
        self.error = ""
        self.handle: Job | None = None
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
                self.message = "starting the backend..." if STATE.backend.state != "ready" else ""
                conn = STATE.backend.connection()
                if self.cancel_requested:
                    self.state = "cancelled"
                    return
                handle = self.handle = conn.submit(self.kind, self.params, self.arrays)
                while not handle.finished.wait(0.05):
                    self.state, self.fraction, self.stage, self.message = (
                        handle.state, handle.fraction, handle.stage, handle.message)
                error = handle.error
                if error is None or error.error_type != "NotDelivered" or attempt:
                    break   # a backend that died before taking the job gets one fresh start
            self.state = handle.state
            if handle.error:
                self.error = str(handle.error)
        except BackendError as exc:
            self.state, self.error = "error", str(exc)
        except Exception as exc:  # never let the worker thread die silently
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"

    @property
    def finished(self) -> bool:
        return self.state in wire.FINISHED_STATES


def submit(job: UIJob) -> UIJob:
    STATE.backend.configure(settings_from_prefs())
    with STATE.lock:
        STATE.jobs.append(job)
    threading.Thread(target=job._run, name=f"headcraft-{job.kind}", daemon=True).start()
    if bpy.app.background and STATE.wait_in_background:
        wait(job)
    else:
        ensure_pump()
    return job


def submit_from_operator(op, job: UIJob) -> set:
    """Submit for an operator. The result becomes its own undo step when it is applied, so job
    operators carry no UNDO option: the step recorded on return would hold nothing. Headless
    (when waiting) the job has already run, so its failure is the operator's."""
    with reporting_to(op):
        submit(job)
    return {"CANCELLED"} if job.finished and job.state != "done" else {"FINISHED"}


@contextlib.contextmanager
def reporting_to(op):
    """While an operator waits for its job, failures are that operator's reports, so a script
    calling it gets Blender's usual RuntimeError."""
    STATE.operators.append(op)
    try:
        yield
    finally:
        STATE.operators.pop()


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


def wait_all(timeout: float = 3600.0) -> None:
    """Pump until every submitted job is applied (scripts, tests of the GUI's timer flow)."""
    deadline = time.monotonic() + timeout
    while STATE.jobs:
        pump()
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still running after {timeout:g} s: {[j.title for j in STATE.jobs]}")
        time.sleep(0.01)


def pump() -> float | None:
    """Apply finished jobs on the main thread; returns the timer interval."""
    with STATE.lock:
        done = [j for j in STATE.jobs if j.finished]
    for job in done:
        with STATE.lock:
            if job not in STATE.jobs:   # applied by a nested pump (a callback that waited on a job)
                continue
            STATE.jobs.remove(job)
        if job.cancel_requested and job.state == "done":
            job.state = "cancelled"     # cancelled after the backend finished: nothing is applied
        try:
            if job.state == "done":
                assert job.handle is not None     # "done" comes from the backend's job
                job.on_done(job.handle.result, job.handle.arrays)
                STATE.clear_errors()
                if job.undo:
                    push_undo(job.undo)
            elif job.state == "error":
                _failed(job)
            elif job.state == "cancelled" and job.on_cancel:
                job.on_cancel()
        except Exception as exc:  # applying failed: report it, never leave the job hanging
            job.state, job.error = "error", f"applying the result failed: {exc}"
            _failed(job)
        finally:
            job.applied = True
    if done or STATE.jobs:
        redraw()
    return 0.1 if STATE.jobs else None


def _failed(job: UIJob) -> None:
    """Clean up after a failed job (its on_error), then report it whole."""
    message = f"{job.title} failed: {job.error}"
    try:
        if job.on_error is not None:
            job.on_error(message)
    finally:
        if STATE.operators and bpy.app.background:
            STATE.remember("ERROR", message)
            STATE.operators[-1].report({"ERROR"}, message)
        else:
            notify_error(message)


def notify(text: str, level: str = "INFO") -> None:
    """A message in the sidebar, the status bar and the Info editor (whole, however long)."""
    STATE.remember(level, text)
    _blender_report(level, text)


def notify_error(text: str) -> None:
    notify(text, "ERROR")


def _window_override():
    wm = getattr(bpy.context, "window_manager", None)
    windows = list(wm.windows) if wm is not None else []
    return bpy.context.temp_override(window=windows[0]) if windows else contextlib.nullcontext()


def _blender_report(level: str, text: str) -> None:
    """Through an operator, the one way into Blender's reports (status bar, Info editor)."""
    try:
        # INVOKE reports from a modal step (the status bar shows those); background Blender runs
        # no modal handlers, so there the report is made at once
        with _window_override():
            # (bpy.ops.headcraft: this extension's operators, which Blender's stubs cannot know)
            bpy.ops.headcraft.report(  # type: ignore[attr-defined]
                "EXEC_DEFAULT" if bpy.app.background else "INVOKE_DEFAULT", level=level, message=text)
    except RuntimeError:
        pass    # an ERROR report also comes back as an exception to its caller: expected
    except Exception as exc:  # no context to report in (e.g. during exit): the console has it
        print(f"HeadCraft {level.lower()}: {text} ({exc})")


def push_undo(message: str) -> None:
    """Record the state after a job's result as its own undo step."""
    try:
        with _window_override():
            bpy.ops.ed.undo_push(message=f"HeadCraft: {message}")
    except Exception as exc:
        print(f"HeadCraft: no undo step for {message!r}: {exc}")


def in_thread(fn: Callable[[], object], done: str) -> None:
    """Run a blocking backend call off the main thread; report the outcome in the panel."""
    outcome: list[tuple[str, str]] = []

    def work():
        try:
            fn()
            outcome.append(("INFO", done))
        except BackendError as exc:
            outcome.append(("ERROR", str(exc)))
    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def report():     # on the main thread: reports go through bpy.ops
        redraw()
        if thread.is_alive():
            return 0.2
        for level, text in outcome:
            notify(text, level)
        return None
    bpy.app.timers.register(report, first_interval=0.1)


HEALTH_INTERVAL_S = 5.0


def health_check() -> float:
    """Timer: ping a ready backend from a thread; a dead one shows up in the panel at once."""
    backend = STATE.backend
    conn = backend.conn
    if backend.state == "ready" and conn is not None and not STATE.jobs:
        def ping():
            try:
                conn.ping(timeout=HEALTH_INTERVAL_S)
            except BackendError as exc:
                backend.state, backend.error = "error", str(exc)
            redraw()
        threading.Thread(target=ping, daemon=True).start()
    return HEALTH_INTERVAL_S


def ensure_pump() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=0.05)


def redraw() -> None:
    """Redraw the sidebars and the preferences (they show the backend's state and progress)."""
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def shutdown() -> None:
    for job in list(STATE.jobs):
        job.cancel()
    STATE.backend.stop()
