"""The job layer's common part: the catalogue of job kinds that adapt wire requests to the
library (each capability's jobs.py registers its handlers here with @job; the service
imports them all), and the request parsing those adapters share."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .compute import Compute
from .errors import UserError
from .layout import formats
from .layout.maps import MappedHead, check_map, dense_base, mapped_head
from .limits import MAX_MAP_SIZE

Handler = Callable[[Compute, dict, dict], "tuple[dict, dict[str, np.ndarray]]"]
HANDLERS: dict[str, Handler] = {}


def job(kind: str):
    """Register a handler: fn(compute, params, arrays) -> (result fields, result arrays)."""
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register



def vectors(arrays: dict, name: str, n: int) -> np.ndarray:
    """The request's (n, 3) float64 array `name`, finite; UserError otherwise."""
    a = arrays.get(name)
    if a is None:
        raise UserError(f"the {name!r} array is missing")
    a = np.asarray(a, np.float64)
    if a.shape != (n, 3):
        raise UserError(f"{name} has shape {a.shape}; this head needs ({n}, 3) "
                        f"(was the mesh edited or made from another model?)")
    if not np.isfinite(a).all():
        raise UserError(f"{name} contains NaN or infinite values")
    return a


def request_head(compute: Compute, params: dict) -> MappedHead:
    """The request's head model (`model`, `flame`) and `layout` as a MappedHead."""
    return mapped_head(compute, params, params.get("layout"))


def request_base(compute: Compute, head: MappedHead, arrays: dict) -> np.ndarray:
    """The dense head of the request's `coarse_vertices`, or of the model's template when none was sent."""
    coarse = None if "coarse_vertices" not in arrays else \
        vectors(arrays, "coarse_vertices", head.model.data.num_vertices)
    return dense_base(compute, head, coarse)


def request_map(arrays: dict) -> np.ndarray:
    """The map of a request: a float `map` array, or `file__<name>` bytes of map files."""
    if "map" in arrays:
        m = arrays["map"]
        if np.ndim(m) == 3 and max(np.shape(m)[:2]) > MAX_MAP_SIZE:     # before any copy
            raise UserError(f"the map is {np.shape(m)[0]}x{np.shape(m)[1]}; maps have at most "
                            f"{MAX_MAP_SIZE}^2 texels")
        return check_map(m)
    files = {k[len("file__"):]: v for k, v in arrays.items() if k.startswith("file__")}
    if not files:
        raise UserError("no map was sent")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(np.asarray(data, np.uint8).tobytes())
        first = sorted(files)[0]
        try:
            m = formats.read(Path(tmp) / Path(first).name, max_size=MAX_MAP_SIZE)
        except ValueError as exc:
            raise UserError(str(exc).replace(tmp + "/", "")) from None
    if m.shape[2] != 3:
        raise UserError(f"{first}: a displacement map needs 3 channels, it has {m.shape[2]}")
    return m
