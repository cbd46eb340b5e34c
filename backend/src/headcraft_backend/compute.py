"""Where long work runs and how it reports: the torch device, the cache of built models and
operators, progress and cancellation. The service makes one Compute per job; the CLI, dataset
registration and evaluation make their own."""
from __future__ import annotations

import threading
import time
from typing import Callable

import torch

from .cache import BoundedCache
from .errors import JobCancelled, UserError


def resolve_device(choice: str = "auto") -> torch.device:
    """auto / cpu / cuda[:N] as a torch device; UserError for a device this torch cannot use."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {choice!r} was requested but this torch build "
                            f"({torch.__version__}) sees no CUDA GPU; choose 'auto' or 'cpu'")
        return torch.device(choice)
    raise UserError(f"unknown device {choice!r}: use auto, cpu or cuda")


def describe_device(device: torch.device) -> dict:
    info = {"device": str(device), "cuda_available": torch.cuda.is_available(),
            "torch_version": torch.__version__, "device_name": "CPU"}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Compute:
    """device: a torch device or a name for resolve_device; cache: shared between runs (a
    BoundedCache or a dict); send: receives progress events {fraction, stage, message}, at most
    every `interval` seconds (None: progress is dropped)."""

    def __init__(self, device: torch.device | str = "auto", cache=None,
                 send: Callable[[dict], object] | None = None, interval: float = 0.05):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.cache = BoundedCache() if cache is None else cache
        self._send, self._interval = send, interval
        self._cancel = threading.Event()
        self._last_sent = -float("inf")

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise JobCancelled if a cancel arrived; long work calls this (or progress) often."""
        if self._cancel.is_set():
            raise JobCancelled()

    def progress(self, fraction: float, stage: str = "", message: str = "", force: bool = False) -> None:
        """Report progress (rate-limited) and honour cancellation."""
        self.check()
        if self._send is None:
            return
        now = time.monotonic()
        if force or now - self._last_sent >= self._interval or fraction >= 1.0:
            self._last_sent = now
            self._send({"fraction": float(min(max(fraction, 0.0), 1.0)), "stage": stage, "message": message})


def print_progress(event: dict) -> None:
    """A Compute `send` for the command line: one line per event."""
    print(f"[{event['fraction'] * 100:5.1f}%] {event['stage']}: {event['message']}", flush=True)
