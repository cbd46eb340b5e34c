"""A restricted unpickler for the FLAME model files (never a plain ``pickle.load``).

FLAME ships as Python pickles: ``generic_model.pkl`` (FLAME 2020) and ``flame2023.pkl`` hold numpy
arrays, a scipy sparse matrix and *chumpy* objects; ``FLAME_masks.pkl`` is a Python 2 pickle of a
dict of index arrays; ``landmark_embedding.npy`` is ``np.save`` of a dict (an .npy file whose
payload is a pickle). Unpickling runs whatever callables the file names, so a file from an
untrusted source could run arbitrary code. This module only lets a pickle reach:

* numpy's array/dtype/scalar reconstructors (``numpy.core`` and numpy 2's ``numpy._core``
  spellings),
* scipy sparse matrices (csc/csr/coo, old ``scipy.sparse.csc`` and new ``scipy.sparse._csc``
  module names). They are rebuilt by stand-ins that capture the pickled state and construct a
  fresh matrix through the public constructor with a full index check (a forged index array can
  therefore not make scipy read or write out of bounds),
* chumpy objects (``chumpy.ch.Ch``, ``chumpy.reordering.*``, ...), mapped to a harmless stand-in
  that records its ``__setstate__`` dict. A plain ``Ch`` stores its array under ``x``; the simple
  reorderings (``Select``, ``transpose``, ``Reshape``, ...) store their input under ``a`` plus
  their parameters, and are evaluated here with plain numpy. Anything else chumpy (arithmetic
  expressions) is refused with a clear error,
* a few inert builtins Python 2/3 protocol-2 pickles use (``set``, ``frozenset``, ``slice``,
  ``bytes``, ``bytearray``, ``complex``, ``_codecs.encode`` restricted to latin-1,
  ``copyreg._reconstructor`` restricted to the stand-ins, ``collections.OrderedDict``).

Every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, ...) is refused before
anything is called; the error names the file and the global.

Public entry point: :func:`load_pickle`, which returns plain dicts/lists/tuples, numpy arrays and
scipy sparse matrices and raises :class:`HeadModelError` naming the file for every failure.
"""
from __future__ import annotations

import ast
import collections
import io
import math
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npformat
import scipy.sparse as sp

from ..limits import MAX_PICKLE_ELEMENTS
from ..errors import HeadModelError

__all__ = ["RestrictedUnpickler", "RefusedGlobalError", "UnsupportedObjectError", "load_pickle",
           "loads_restricted"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        super().__init__(f"refused global '{module}.{name}'")


class UnsupportedObjectError(ValueError):
    """An allowed object (a chumpy expression, a sparse matrix) could not be turned into data."""


# --------------------------------------------------------------------------------------------
# Stand-ins. Pickle instantiates these (via NEWOBJ, REDUCE, INST/OBJ or copyreg._reconstructor)
# instead of the real classes; they only record what they are given.
class _StandIn:
    source_module = ""
    source_name = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._args = args
        obj._state = None
        return obj

    def __init__(self, *args, **kwargs):  # called by INST/OBJ opcodes; nothing to do
        pass

    def __setstate__(self, state):
        self._state = state

    @classmethod
    def global_name(cls) -> str:
        return f"{cls.source_module}.{cls.source_name}"

    def state_dict(self) -> dict:
        state = self._state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict, slotstate) form
        if not isinstance(state, dict):
            raise UnsupportedObjectError(
                f"{self.global_name()} object has no state dictionary (got {type(state).__name__})")
        return state


class _ChumpyStandIn(_StandIn):
    pass


class _SparseStandIn(_StandIn):
    pass


def _standin(base: type, module: str, name: str) -> type:
    """A fresh stand-in class (one per unpickler and name: nothing a file names outlives its load)."""
    return type(f"StandIn_{name}", (base,), {"source_module": module, "source_name": name})


# --------------------------------------------------------------------------------------------
# Restricted helpers handed out instead of the real callables.
class _Sealed:
    """A callable a pickle may call but not change: BUILD (setstate or setattr) is refused, so a
    file cannot alter a helper's defaults or attributes for the rest of the process."""
    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError("a pickle may not change the allowed functions")

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a pickle may not change the allowed functions")

    def __reduce__(self):
        raise TypeError("not picklable")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1",
                                                                                   "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 text")
    return text.encode("latin-1")


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (Python 2 pickles, protocol < 2), limited to the stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object:
        raise pickle.UnpicklingError("copyreg._reconstructor is only allowed for chumpy/scipy objects")
    return cls.__new__(cls)


def _numpy_modules():
    try:  # numpy >= 2 (numpy 1.26 also has the _core alias)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


_allowed_cache: dict[tuple[str, str], Any] | None = None


def _allowed_globals() -> dict[tuple[str, str], Any]:
    global _allowed_cache
    if _allowed_cache is None:
        multiarray, numeric = _numpy_modules()
        allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _Sealed(_latin1_encode),
            ("collections", "OrderedDict"): collections.OrderedDict,
        }
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "_reconstruct")] = multiarray._reconstruct
            allowed[(mod, "scalar")] = multiarray.scalar
            allowed[(mod, "ndarray")] = np.ndarray
            allowed[(mod, "dtype")] = np.dtype
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(mod, "_frombuffer")] = _Sealed(numeric._frombuffer)    # a Python function
        for mod in ("__builtin__", "builtins"):
            for name, obj in (("set", set), ("frozenset", frozenset), ("slice", slice),
                              ("bytes", bytes), ("bytearray", bytearray), ("complex", complex),
                              ("object", object)):
                allowed[(mod, name)] = obj
        for mod in ("copy_reg", "copyreg"):
            allowed[(mod, "_reconstructor")] = _Sealed(_safe_reconstructor)
        _allowed_cache = allowed
    return _allowed_cache


_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see the module docstring).

    Opened with ``encoding='latin1'`` so that Python 2 ``str`` payloads (numpy's raw array bytes)
    survive unchanged.
    """

    def __init__(self, file, *, encoding: str = "latin1"):
        super().__init__(file, fix_imports=True, encoding=encoding, errors="strict")
        self._standins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        obj = _allowed_globals().get((module, name))
        if obj is not None:
            return obj
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            base: type = _ChumpyStandIn
        elif (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_NAMES:
            base = _SparseStandIn
        else:
            raise RefusedGlobalError(module, name)
        if (module, name) not in self._standins:
            self._standins[(module, name)] = _standin(base, module, name)
        return self._standins[(module, name)]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


# --------------------------------------------------------------------------------------------
# Turning the stand-ins into plain data.
def _array_of(value, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, complex, list, tuple)) or np.isscalar(value):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise UnsupportedObjectError(f"{what} is not numeric")
        return arr
    raise UnsupportedObjectError(f"{what} is a {type(value).__name__}, not an array")


# Simple chumpy reorderings (chumpy/reordering.py): input array under 'a', parameters as terms.
_CHUMPY_REORDERINGS = {
    "Reshape": lambda a, s: a.reshape(s["newshape"]),
    "transpose": lambda a, s: np.ascontiguousarray(np.transpose(a, s.get("axes"))),
    "Transpose": lambda a, s: np.ascontiguousarray(np.transpose(a, s.get("axes"))),
    "rollaxis": lambda a, s: np.rollaxis(a, s["axis"], s.get("start", 0)),
    "swapaxes": lambda a, s: np.swapaxes(a, s["axis1"], s["axis2"]),
    "Tile": lambda a, s: np.tile(a, s["reps"]),
    "Repeat": lambda a, s: np.repeat(a, s["repeats"], s.get("axis")),
    "Roll": lambda a, s: np.roll(a, s["shift"], s.get("axis")),
    "Rot90": lambda a, s: np.rot90(a, s.get("k", 1)),
    "Diag": lambda a, s: np.diag(a, s.get("k", 0)),
    "DiagFlat": lambda a, s: np.diagflat(a, s.get("k", 0)),
    "Sort": lambda a, s: np.sort(a, s.get("axis", -1)),
}


def _output_elements(cls_name: str, a: np.ndarray, s: dict) -> float:
    """How many elements a reordering would make, worked out before making them."""
    if cls_name == "Tile":
        reps = [float(r) for r in np.ravel(s["reps"])]
        return float(a.size) * math.prod(reps) if reps else float(a.size)
    if cls_name == "Repeat":
        repeats = np.ravel(s["repeats"]).astype(np.float64)
        axis = s.get("axis")
        along = a.size if axis is None else a.shape[int(axis)]
        per = float(repeats.sum()) if repeats.size > 1 else float(repeats[0]) * along if repeats.size else 0.0
        return a.size / max(along, 1) * per
    if cls_name in ("Diag", "DiagFlat"):
        n = a.size if (cls_name == "DiagFlat" or a.ndim == 1) else 0
        return float(n + abs(int(s.get("k", 0)))) ** 2 if n else float(a.size)
    return float(a.size)


def _check_elements(n: float, what: str) -> None:
    if not n <= MAX_PICKLE_ELEMENTS:     # also catches NaN
        raise UnsupportedObjectError(f"{what} would make {n:.3g} elements; an array in a head-model file "
                                     f"has at most {MAX_PICKLE_ELEMENTS:,}")


class _Resolver:
    """Walks an unpickled object graph and replaces stand-ins by numpy/scipy objects."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.active: set[int] = set()
        self.keep: list[Any] = []  # keep originals alive so ids stay unique

    def __call__(self, obj):
        if obj is None or isinstance(obj, (str, bytes, bool, int, float, complex)):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        self.keep.append(obj)
        if isinstance(obj, _ChumpyStandIn):
            if key in self.active:
                raise UnsupportedObjectError(f"{obj.global_name()} object refers to itself")
            self.active.add(key)
            try:
                result = self._chumpy(obj)
            finally:
                self.active.discard(key)
        elif isinstance(obj, _SparseStandIn):
            result = self._sparse(obj)
        elif isinstance(obj, _StandIn):  # pragma: no cover - no other kinds exist
            raise UnsupportedObjectError(f"unsupported object {obj.global_name()}")
        elif isinstance(obj, dict):
            result = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
            self.memo[key] = result
            for k, v in obj.items():
                result[self(k)] = self(v)
            return result
        elif isinstance(obj, list):
            result = []
            self.memo[key] = result
            result.extend(self(v) for v in obj)
            return result
        elif isinstance(obj, tuple):
            result = tuple(self(v) for v in obj)
        elif isinstance(obj, (set, frozenset)):
            result = type(obj)(self(v) for v in obj)
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            result = np.empty(obj.shape, dtype=object)
            self.memo[key] = result
            for idx in np.ndindex(obj.shape):
                result[idx] = self(obj[idx])
            return result
        else:
            result = obj
        self.memo[key] = result
        return result

    def _chumpy(self, obj: _ChumpyStandIn) -> np.ndarray:
        name = obj.global_name()
        state = obj.state_dict()
        cls_name = obj.source_name
        try:
            if cls_name == "Select" and "a" in state:
                a = _array_of(self(state["a"]), f"{name}.a")
                result = a.ravel()[np.asarray(self(state["idxs"]))].copy()
                if state.get("preferred_shape") is not None:
                    result = result.reshape(self(state["preferred_shape"]))
                return result
            if cls_name == "Ravel" and "a" in state:
                return _array_of(self(state["a"]), f"{name}.a").ravel()
            if cls_name in _CHUMPY_REORDERINGS and "a" in state:
                a = _array_of(self(state["a"]), f"{name}.a")
                params = {k: self(v) for k, v in state.items() if k != "a"}
                _check_elements(_output_elements(cls_name, a, params), name)
                return np.asarray(_CHUMPY_REORDERINGS[cls_name](a, params))
            if cls_name == "Concatenate" and isinstance(state.get("dterms"), (list, tuple)):
                parts = [_array_of(self(state[t]), f"{name}.{t}") for t in state["dterms"]]
                _check_elements(float(sum(p.size for p in parts)), name)
                return np.concatenate(parts, axis=state.get("axis", 0))
            if cls_name == "AtleastNd" and "x" in state:
                x = _array_of(self(state["x"]), f"{name}.x")
                return {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[state["ndims"]](x)
            if "x" in state:  # plain chumpy.ch.Ch (and anything else that stores its value)
                return _array_of(self(state["x"]), f"{name}.x")
        except UnsupportedObjectError:
            raise
        except Exception as exc:  # bad parameters of a reordering
            raise UnsupportedObjectError(f"chumpy object {name} could not be evaluated: {exc}") from exc
        keys = ", ".join(sorted(k for k in state if not k.startswith("_"))) or "none"
        raise UnsupportedObjectError(
            f"chumpy object {name} is a computed expression (terms: {keys}), not a stored array; "
            "only chumpy.ch.Ch values and simple reorderings can be read without chumpy")

    def _sparse(self, obj: _SparseStandIn):
        name = obj.global_name()
        state = obj.state_dict()
        fmt = obj.source_name[:3]
        as_array = obj.source_name.endswith("_array")
        try:
            shape = self(state.get("_shape", state.get("shape")))
            shape = tuple(int(s) for s in shape)
            data = _array_of(self(state["data"]), f"{name}.data")
            if fmt in ("csc", "csr"):
                indices = _array_of(self(state["indices"]), f"{name}.indices")
                indptr = _array_of(self(state["indptr"]), f"{name}.indptr")
                cls = {("csc", False): sp.csc_matrix, ("csr", False): sp.csr_matrix,
                       ("csc", True): sp.csc_array, ("csr", True): sp.csr_array}[(fmt, as_array)]
                m = cls((data, indices, indptr), shape=shape)
                m.check_format(full_check=True)  # index ranges, indptr monotonic
                return m
            coords = self(state["coords"]) if "coords" in state else (self(state["row"]), self(state["col"]))
            cls = sp.coo_array if as_array else sp.coo_matrix
            return cls((data, tuple(np.asarray(c) for c in coords)), shape=shape)
        except UnsupportedObjectError:
            raise
        except Exception as exc:
            raise UnsupportedObjectError(f"{name} has an invalid state: {exc}") from exc


# --------------------------------------------------------------------------------------------
def _unpickle_stream(fp) -> Any:
    return _Resolver()(RestrictedUnpickler(fp).load())


def loads_restricted(data: bytes, source: str = "<bytes>") -> Any:
    """Restricted unpickling of an in-memory pickle; errors become HeadModelError naming `source`."""
    return _wrap_errors(source, lambda: _unpickle_stream(io.BytesIO(data)))


def _read_npy_header(fp, source: str):
    version = npformat.read_magic(fp)
    if version == (1, 0):
        return npformat.read_array_header_1_0(fp)
    if version == (2, 0):
        return npformat.read_array_header_2_0(fp)
    if version == (3, 0):  # same as 2.0 with a utf-8 header; numpy has no public reader for it
        (hlen,) = struct.unpack("<I", fp.read(4))
        raw = fp.read(hlen)
        if len(raw) != hlen:
            raise EOFError("npy header truncated")
        d = ast.literal_eval(raw.decode("utf-8"))
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError(f"bad npy header {raw[:80]!r}")
        return tuple(d["shape"]), bool(d["fortran_order"]), npformat.descr_to_dtype(d["descr"])
    raise ValueError(f"unsupported .npy format version {version}")


def _load_npy_stream(fp, source: str) -> Any:
    """Parse an .npy stream; object payloads go through the restricted unpickler."""
    shape, fortran, dtype = _read_npy_header(fp, source)
    if dtype.hasobject:
        arr = _unpickle_stream(fp)
        if not isinstance(arr, np.ndarray):
            raise UnsupportedObjectError(f"the object payload is a {type(arr).__name__}, not an array")
        if arr.shape != tuple(shape):
            raise UnsupportedObjectError(f"the object payload has shape {arr.shape}, header says {shape}")
        return arr.item() if arr.ndim == 0 else arr
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    raw = fp.read(nbytes)
    if len(raw) != nbytes:
        raise EOFError(f"array data truncated ({len(raw)} of {nbytes} bytes)")
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _load_npz(path: Path, source: str) -> dict:
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fp:
                out[info.filename[:-4]] = _load_npy_stream(fp, source)
    return out


def _wrap_errors(source: str, fn):
    try:
        return fn()
    except HeadModelError:
        raise
    except RefusedGlobalError as exc:
        raise HeadModelError(
            f"{source}: refused to load global '{exc.module}.{exc.name}': a FLAME file may only hold "
            "numpy arrays, scipy sparse matrices and chumpy arrays (the file is corrupt, not a FLAME "
            "file, or malicious); nothing from it was executed") from None
    except UnsupportedObjectError as exc:
        raise HeadModelError(f"{source}: {exc}") from None
    except MemoryError as exc:
        raise HeadModelError(f"{source}: not a readable file (out of memory while reading it)") from exc
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise HeadModelError(f"{source}: not a readable pickle/numpy file (truncated or corrupt: "
                             f"{exc or type(exc).__name__})") from None
    except Exception as exc:  # struct errors, bad opcodes, numpy complaining about bad state ...
        raise HeadModelError(f"{source}: not a readable pickle/numpy file (corrupt: "
                             f"{type(exc).__name__}: {exc})") from None


def load_pickle(path: str | Path, expect: type | tuple[type, ...] | None = dict) -> Any:
    """Load a FLAME pickle (.pkl), or an .npy/.npz file (possibly holding a pickled dict), safely.

    Returns plain dicts/lists/tuples, numpy arrays and scipy sparse matrices; chumpy objects come
    back as numpy arrays. An .npy whose payload is a 0-d object array (``np.save`` of a dict)
    returns that object; an .npz returns a dict of its members. The format is detected from the
    file's first bytes, not its name. `expect` is the required top-level type (None: any).
    Raises HeadModelError naming the file for a missing, truncated or corrupt file, a refused
    global, an unsupported chumpy object or a wrong top-level type.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise HeadModelError(f"{source}: file not found")
    if not path.is_file():
        raise HeadModelError(f"{source}: not a file")

    def _load():
        with open(path, "rb") as fp:
            head = fp.read(8)
            fp.seek(0)
            if not head:
                raise EOFError("the file is empty")
            if head.startswith(_NPY_MAGIC):
                return _load_npy_stream(fp, source)
            if head.startswith(_ZIP_MAGIC):
                return _load_npz(path, source)
            return _unpickle_stream(fp)

    result = _wrap_errors(source, _load)
    if expect is not None and not isinstance(result, expect):
        want = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise HeadModelError(f"{source}: expected a {want} at the top level, got {type(result).__name__}")
    return result
