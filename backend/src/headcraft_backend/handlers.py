"""The job layer's common part: the catalogue of job kinds that adapt wire requests to the
library (each capability's jobs.py registers its handlers here with @job; the service
imports them all), and the request parsing those adapters share."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
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
TYPES = ("int", "float", "bool", "str", "strings", "dict", "direction", "any")


@dataclasses.dataclass(frozen=True)
class Param:
    """One request parameter: its type (TYPES), default (None: absent unless sent), bounds or
    choices, and what it means. `group` names parameters several jobs share (documented once)."""
    type: str
    default: object = None
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    group: str = ""

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"parameter type {self.type!r}: one of {', '.join(TYPES)}")

    def check(self, name: str, value):
        """The value as the handler gets it; UserError naming the parameter otherwise."""
        raw = value

        def bad(want: str):
            shown = f"{raw:g}" if isinstance(raw, float) else str(raw)[:40]
            return UserError(f"parameter {name!r}: {shown} is not {want}")
        if value is None and self.type in ("direction", "any"):
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
                raise bad("an integer" + self._range())
            value = int(value)
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad("a number" + self._range())
            value = float(value)
        elif self.type == "bool" and not isinstance(value, bool):
            raise bad("true or false")
        elif self.type == "str" and not isinstance(value, str):
            raise bad("a string")
        elif self.type == "strings" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise bad("a list of strings")
        elif self.type == "dict" and not isinstance(value, dict):
            raise bad("an object")
        elif self.type == "direction" and value != "auto":
            ok = isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            if not ok or not any(value):
                raise bad('three numbers (a direction), null or "auto"')
            value = tuple(float(v) for v in value)
        if self.type in ("int", "float") and ((self.lo is not None and value < self.lo)
                                               or (self.hi is not None and value > self.hi)):
            raise bad(("an integer" if self.type == "int" else "a number") + self._range())
        for v in (value if self.type == "strings" else [value]) if self.choices else []:
            if v not in self.choices:
                raise UserError(f"parameter {name!r}: {str(v)[:40]!r} is not one of {', '.join(map(str, self.choices))}")
        return value

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f" from {self.lo:g} to {self.hi:g}"
        return f" >= {self.lo:g}" if self.lo is not None else f" <= {self.hi:g}" if self.hi is not None else ""

    def describe(self, name: str) -> str:
        """The parameter as the protocol's job catalogue lists it."""
        kind = {"strings": "list of strings", "dict": "object", "direction": "direction"}.get(self.type, self.type)
        bits = [kind + (self._range() if self.type in ("int", "float") else "")]
        if self.choices:
            bits.append(" / ".join(f"`{c}`" for c in self.choices))
        if self.default is not None:
            bits.append(f"default `{json.dumps(self.default)}`")
        return f"`{name}` ({', '.join(bits)})" + (f": {self.doc}" if self.doc else "")


@dataclasses.dataclass
class JobSpec:
    """One job kind: what it takes and gives (the protocol's job catalogue is made from these)."""
    kind: str
    fn: Handler
    params: dict[str, Param]
    arrays: str = ""          # arrays in
    result: str = ""          # result fields and arrays out
    notes: str = ""
    open: bool = False        # takes any parameter (diagnostics.echo)

    def checked(self, params: dict) -> dict:
        """The request's parameters checked, defaults filled in; UserError for an unknown name."""
        if not isinstance(params, dict):
            raise UserError("params must be a JSON object")
        unknown = sorted(set(params) - set(self.params))
        if unknown and not self.open:
            raise UserError(f"{self.kind} has no parameter {unknown[0]!r}; it takes "
                            f"{', '.join(self.params) or 'none'}")
        out = dict(params) if self.open else {}
        for name, p in self.params.items():
            if name in params:
                out[name] = p.check(name, params[name])
            elif p.default is not None:
                out[name] = copy.deepcopy(p.default)
        return out

    def __call__(self, compute: Compute, params: dict, arrays: dict):
        return self.fn(compute, self.checked(params), arrays)


HANDLERS: dict[str, JobSpec] = {}

MODEL = {"model": Param("str", "openhead", "the head model", choices=("openhead", "flame"), group="model params"),
         "flame": Param("dict", None, "FLAME's files on the backend's machine: `model_path masks_path uv_path` "
                        "(required) and `landmark_path`", group="model params")}
LAYOUT = {"layout": Param("str", "headcraft", "a layout name: `headcraft`, `standard` or a saved one",
                          group="layout")}
CHECKPOINT = {"checkpoint": Param("str", "", "a generator file on the backend's machine; empty: the bundled "
                                  "demo model", group="checkpoint")}


def job(kind: str, params: dict[str, Param] | None = None, arrays: str = "", result: str = "", notes: str = "",
        open: bool = False):
    """Register a handler fn(compute, params, arrays) -> (result fields, result arrays) with its
    declaration. The registered JobSpec checks params (types, bounds, choices, unknown names)
    and fills in defaults before the handler runs; direct calls go through it too."""
    def declare(fn: Handler) -> JobSpec:
        spec = JobSpec(kind, fn, dict(params or {}), arrays, result, notes or (fn.__doc__ or "").strip(), open)
        functools.update_wrapper(spec, fn)
        HANDLERS[kind] = spec
        return spec
    return declare


def catalogue(specs: dict[str, JobSpec]) -> str:
    """The protocol's job catalogue (docs/PROTOCOL.md, "Jobs") as a Markdown table."""
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")
    rows = ["| kind | params | arrays in | result / arrays out | notes |", "|---|---|---|---|---|"]
    for kind in sorted(specs, key=lambda k: (k.split(".")[0] != "head", k)):
        spec = specs[kind]
        groups = list(dict.fromkeys(p.group for p in spec.params.values() if p.group))
        own = [p.describe(n) for n, p in spec.params.items() if not p.group]
        params = "; ".join(groups + own) or ("anything" if spec.open else "none")
        rows.append(f"| `{kind}` | {cell(params)} | {cell(spec.arrays)} | {cell(spec.result)} | {cell(spec.notes)} |")
    return "\n".join(rows) + "\n"


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
