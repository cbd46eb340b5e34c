"""Where the backend keeps what it derives once per head model (dense templates, UV layouts)."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$HEADCRAFT_CACHE, else $XDG_CACHE_HOME/headcraft, else ~/.cache/headcraft."""
    if os.environ.get("HEADCRAFT_CACHE"):
        return Path(os.environ["HEADCRAFT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "headcraft"


def hash_arrays(h: "hashlib._Hash", *arrays: tuple[np.ndarray, type]) -> None:
    for arr, dt in arrays:
        a = np.ascontiguousarray(arr, dt)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())


def write_atomic(path: Path, save: Callable[[str], None], required: bool = False) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a
    file. An unwritable folder only logs, unless `required` (then OSError propagates)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        try:
            save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as exc:
        if required:
            raise
        log.warning("could not write %s: %s", path, exc)
