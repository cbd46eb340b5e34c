"""Where the backend keeps what it derives once per head model (dense templates, built UV
layouts: a cache, safe to delete) and what users make (saved and imported layouts: data)."""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import tempfile
import threading
import types
from pathlib import Path
from typing import Callable

import numpy as np

from .limits import MAX_CACHE_BYTES, MAX_CACHE_ENTRIES

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$HEADCRAFT_CACHE, else $XDG_CACHE_HOME/headcraft, else ~/.cache/headcraft."""
    if os.environ.get("HEADCRAFT_CACHE"):
        return Path(os.environ["HEADCRAFT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "headcraft"


def default_data_dir() -> Path:
    """$HEADCRAFT_DATA, else $HEADCRAFT_CACHE (Blender's extension points that at its own user
    folder), else $XDG_DATA_HOME/headcraft, else ~/.local/share/headcraft."""
    for var in ("HEADCRAFT_DATA", "HEADCRAFT_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "headcraft"


def hash_arrays(h: "hashlib._Hash", *arrays: tuple[np.ndarray, type]) -> None:
    for arr, dt in arrays:
        a: np.ndarray = np.ascontiguousarray(arr, dt)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())


def write_atomic(path: Path, save: Callable[[str], object], required: bool = False) -> None:
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


def nbytes_of(obj, _seen: set | None = None, _depth: int = 0) -> int:
    """About how many bytes an object holds in numpy arrays and torch tensors, found through
    containers and attributes (nn.Modules, scipy matrices, dataclasses); the rest counts 0."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 64 or obj is None or isinstance(obj, (str, bytes, int, float, type,
                                                                         types.ModuleType, types.FunctionType,
                                                                         types.MethodType)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "numel") and type(obj).__module__.startswith("torch"):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, dict):
        items = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    else:
        items = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
        items += [getattr(obj, s, None) for s in getattr(type(obj), "__slots__", ())]
    return sum(nbytes_of(v, seen, _depth + 1) for v in items)


class BoundedCache:
    """What the backend keeps between jobs (head models, generators, layout operators): at most
    `max_entries` entries of `max_bytes` bytes together (nbytes_of); the least recently used go
    first, and an entry larger than max_bytes alone is not kept. Used like a dict (get, [],
    pop, in, del, iteration from the least recently used)."""

    def __init__(self, max_entries: int = MAX_CACHE_ENTRIES, max_bytes: int = MAX_CACHE_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.nbytes = 0
        self._items: collections.OrderedDict = collections.OrderedDict()   # key -> (value, nbytes)
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key][0]

    def __getitem__(self, key):
        with self._lock:
            self._items.move_to_end(key)        # KeyError when absent, as a dict
            return self._items[key][0]

    def __setitem__(self, key, value) -> None:
        size = nbytes_of(value)
        with self._lock:
            self._drop(key)
            if size > self.max_bytes:
                log.info("not caching %r: %d MB exceeds the %d MB cache", key[:2] if isinstance(key, tuple)
                         else key, size >> 20, self.max_bytes >> 20)
                return
            self._items[key] = (value, size)
            self.nbytes += size
            while len(self._items) > self.max_entries or self.nbytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def _drop(self, key) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]

    def pop(self, key, default=None):
        with self._lock:
            hit = self._items.get(key)
            self._drop(key)
            return default if hit is None else hit[0]

    def __delitem__(self, key) -> None:
        with self._lock:
            if key not in self._items:
                raise KeyError(key)
            self._drop(key)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        with self._lock:
            return iter(list(self._items))

    def keys(self) -> list:
        return list(self)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


def file_stamp(*paths) -> tuple:
    """What identifies the current content of files: inode, size and modification time of each
    (None for a missing file). A file saved again or replaced gets another stamp."""
    out: list[tuple] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


def cached_by_files(cache, key, paths, load: Callable):
    """cache[key] while the files in `paths` are unchanged; when one changed, the entry is
    dropped before loading again and the new value takes its place (one entry per key)."""
    stamp = file_stamp(*paths)
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    cache.pop(key, None)
    value = load()
    cache[key] = (stamp, value)
    return value
