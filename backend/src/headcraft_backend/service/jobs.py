"""Job kinds, the context a running job reports through, and the errors users see."""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np


class UserError(Exception):
    """An error whose message is meant for the user as is (bad input, missing file...)."""


class JobCancelled(Exception):
    """Raised inside a job when the client asked to cancel it."""


class JobContext:
    """Handed to every job: progress reporting, cancellation, the compute device, model cache."""

    def __init__(self, job_id: str, device, send_progress: Callable[[dict], None], cache: dict):
        self.job_id = job_id
        self.device = device
        self.cache = cache
        self._send = send_progress
        self._cancel = threading.Event()
        self._last_sent = 0.0

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise JobCancelled if a cancel arrived; long jobs call this (or progress) often."""
        if self._cancel.is_set():
            raise JobCancelled()

    def progress(self, fraction: float, stage: str = "", message: str = "", force: bool = False) -> None:
        """Report progress (rate-limited to ~20 events/s) and honour cancellation."""
        self.check()
        now = time.monotonic()
        if force or now - self._last_sent >= 0.05 or fraction >= 1.0:
            self._last_sent = now
            self._send({"fraction": float(min(max(fraction, 0.0), 1.0)), "stage": stage,
                        "message": message})


JobFn = Callable[[JobContext, dict, dict], "tuple[dict, dict[str, np.ndarray]]"]
REGISTRY: dict[str, JobFn] = {}


def job(kind: str):
    """Register a job handler: fn(ctx, params, arrays) -> (result fields, result arrays)."""
    def register(fn: JobFn) -> JobFn:
        REGISTRY[kind] = fn
        return fn
    return register


def load_all() -> dict[str, JobFn]:
    """Import every capability's job module so its handlers register."""
    from .. import diagnostics  # noqa: F401
    from ..animate import jobs as _animate_jobs  # noqa: F401
    from ..fit import jobs as _fit_jobs  # noqa: F401
    from ..generate import jobs as _generate_jobs  # noqa: F401
    from ..head import jobs as _head_jobs  # noqa: F401
    from ..layout import jobs as _layout_jobs  # noqa: F401
    return REGISTRY
