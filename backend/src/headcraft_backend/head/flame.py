"""Load the FLAME head model from the files users download after accepting the FLAME licence.

Nothing of FLAME ships with HeadCraft; this module reads the user's own copies:

* ``generic_model.pkl`` (FLAME 2020) or ``flame2023.pkl`` (FLAME 2023): ``v_template`` (5023, 3),
  ``f`` (9976, 3), ``shapedirs`` (5023, 3, 400), ``posedirs`` (5023, 3, 36), ``J_regressor``
  (5, 5023, scipy sparse), ``kintree_table`` (2, 5), ``weights`` (5023, 5); several of them are
  chumpy objects, which :mod:`.safe_pickle` turns into plain arrays without importing chumpy,
* ``FLAME_masks.pkl``: a Python 2 pickle of vertex-index arrays per region,
* ``head_template.obj`` from the FLAME texture-space download: per-corner UVs,
* optionally a landmark embedding: ``landmark_embedding.npy`` (68-point ``full_lmk_*`` preferred,
  else the 51 static points), ``flame_static_embedding.pkl`` or the MediaPipe embedding
  ``mediapipe_landmark_embedding.npz``.

FLAME's frame is already the head-model frame (metres, Y up, face towards +Z), so no axis change
happens here.
"""
from __future__ import annotations

import re
from typing import NoReturn
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import HeadModelError
from .data import JOINT_NAMES, REGION_NAMES, HeadModelData
from .safe_pickle import load_pickle
from .uv_obj import corner_uvs_from_obj

__all__ = ["load_flame", "load_flame_masks", "load_uv_obj", "load_landmark_embedding",
           "detect_flame_version", "FLAME_NUM_SHAPE", "FLAME_LICENCE"]

FLAME_NUM_SHAPE = 300  # FLAME's shapedirs hold 300 identity components, then the expressions
FLAME_LICENCE = ("FLAME model (MPI for Intelligent Systems): used under the user's own FLAME "
                 "licence (https://flame.is.tue.mpg.de); not redistributable")
_MODEL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
_MASK_KEYS = ("face", "scalp", "neck", "left_ear", "right_ear", "left_eyeball", "right_eyeball",
              "eye_region", "nose", "lips")
_EYE_L, _EYE_R = 3, 4  # FLAME's joint order: global, neck, jaw, left eye, right eye


def detect_flame_version(model_path: str | Path) -> str:
    """'2023' / '2020' / '2019' / '2017' from the file name, else its folder names, else '2020'.

    ``flame2023.pkl`` -> 2023; ``FLAME2020/generic_model.pkl`` -> 2020. A bare
    ``generic_model.pkl`` is assumed to be FLAME 2020 (the release HeadCraft used).
    """
    path = Path(model_path)
    for part in [path.name] + [p.name for p in path.parents][:3]:
        m = re.search(r"(?<!\d)(2017|2019|2020|2023)(?!\d)", part)
        if m:
            return m.group(1)
    return "2020"


def _fail(source, msg) -> NoReturn:
    raise HeadModelError(f"{source}: {msg}")


def _key(d: dict, key: str, source) -> object:
    if key not in d:
        _fail(source, f"key '{key}' missing")
    return d[key]


def _numeric(value, key: str, source, ndim: int, allow_sparse: bool = False) -> np.ndarray:
    if sp.issparse(value):
        if not allow_sparse:
            _fail(source, f"key '{key}' is a sparse matrix, expected a dense array")
        value = value.toarray()
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception:
            _fail(source, f"key '{key}' is a {type(value).__name__}, not an array")
    if value.dtype.kind not in "biuf":
        _fail(source, f"key '{key}' has non-numeric dtype {value.dtype}")
    if value.ndim != ndim:
        _fail(source, f"key '{key}' has shape {value.shape}, expected {ndim} dimensions")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        _fail(source, f"key '{key}' contains NaN or infinite values")
    return value


def _index_array(value, what: str, source, upper: int, ndim: int | None = 1) -> np.ndarray:
    """Integer indices in [0, upper). Float arrays holding whole numbers are accepted."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        _fail(source, f"{what} must hold integer indices, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        _fail(source, f"{what} has shape {arr.shape}, expected {ndim} dimension(s)")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        _fail(source, f"{what} holds indices outside [0, {upper})")
    return arr.astype(np.int32)


# --------------------------------------------------------------------------------------------
def _parents_from_kintree(kintree, source) -> tuple[int, ...]:
    """FLAME/SMPL kintree_table: row 1 = joint ids, row 0 = parent ids (root's parent = 2**32-1)."""
    k = np.asarray(kintree).astype(np.int64)
    J = k.shape[1]
    ids = {int(j): col for col, j in enumerate(k[1])}
    if len(ids) != J:
        _fail(source, "kintree_table lists a joint id twice")
    parents = [-1]
    for col in range(1, J):
        pid = int(k[0, col])
        if pid not in ids or ids[pid] >= col:
            _fail(source, f"kintree_table gives joint {col} the parent id {pid}, which is not an "
                          "earlier joint")
        parents.append(ids[pid])
    return tuple(parents)


def load_uv_obj(uv_obj_path: str | Path, faces: np.ndarray) -> np.ndarray:
    """Per-corner UVs (F, 3, 2) from FLAME's head_template.obj (triangles in the model's order)."""
    path = Path(uv_obj_path)
    if not path.is_file():
        _fail(str(path), "file not found")
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return corner_uvs_from_obj(fh, faces, str(path), "the FLAME model")
    except OSError as exc:
        _fail(str(path), f"not a readable OBJ file ({exc})")


def load_flame_masks(masks_path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl -> HeadCraft's regions (REGION_NAMES), int32 vertex indices."""
    source = str(masks_path)
    masks = load_pickle(masks_path, expect=dict)
    missing = [k for k in _MASK_KEYS if k not in masks]
    if missing:
        _fail(source, f"not a FLAME masks file (keys missing: {', '.join(missing)})")
    m = {}
    for k in _MASK_KEYS:
        arr = np.asarray(masks[k])
        if arr.ndim == 2 and 1 in arr.shape:  # a row/column vector is fine too
            arr = arr.ravel()
        m[k] = _index_array(arr, f"mask '{k}'", source, num_vertices)
    regions = {
        "face": np.unique(m["face"]),
        "scalp": np.unique(m["scalp"]),
        "neck": np.unique(m["neck"]),
        "ears": np.union1d(m["left_ear"], m["right_ear"]),
        "eyeballs": np.union1d(m["left_eyeball"], m["right_eyeball"]),
        "eye_region": np.unique(m["eye_region"]),
        "nose": np.unique(m["nose"]),
        "lips": np.unique(m["lips"]),
        # FLAME's mesh has no mouth cavity (the lips close over a hole), so there is nothing to
        # freeze as "inner mouth": an empty region keeps the interface identical to OpenHead's.
        "inner_mouth": np.zeros(0, np.int32),
    }
    assert set(regions) == set(REGION_NAMES)
    return {k: v.astype(np.int32) for k, v in regions.items()}


def load_landmark_embedding(landmark_path: str | Path, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """(landmark_faces (L,) int32, landmark_bary (L, 3) float32) from a FLAME landmark embedding.

    Accepts ``landmark_embedding.npy`` (dict; the 68-point ``full_lmk_*`` entries are preferred
    over the 51 ``static_lmk_*`` ones), ``flame_static_embedding.pkl`` and
    ``mediapipe_landmark_embedding.npz`` (``lmk_face_idx`` / ``lmk_b_coords``; its
    ``landmark_indices`` - the MediaPipe point ids - are not kept).
    """
    source = str(landmark_path)
    data = load_pickle(landmark_path, expect=dict)
    for fk, bk in (("full_lmk_faces_idx", "full_lmk_bary_coords"),
                   ("lmk_face_idx", "lmk_b_coords"),
                   ("static_lmk_faces_idx", "static_lmk_bary_coords")):
        if fk in data and bk in data:
            break
    else:
        _fail(source, "not a FLAME landmark embedding (expected full_lmk_faces_idx/"
                      "full_lmk_bary_coords, lmk_face_idx/lmk_b_coords or static_lmk_faces_idx/"
                      f"static_lmk_bary_coords; found {', '.join(map(str, data)) or 'no keys'})")
    faces_raw = np.asarray(data[fk])
    bary = np.asarray(data[bk])
    faces = _index_array(faces_raw.reshape(-1), f"'{fk}'", source, num_faces)
    if bary.dtype.kind not in "fiu" or bary.size != 3 * faces.size or bary.shape[-1] != 3:
        _fail(source, f"'{bk}' has shape {bary.shape}, expected ({faces.size}, 3) to match '{fk}' "
                      f"{faces_raw.shape}")
    bary = bary.reshape(-1, 3).astype(np.float32)
    if not np.isfinite(bary).all() or np.abs(bary.sum(axis=1) - 1.0).max(initial=0) > 1e-2:
        _fail(source, f"'{bk}' rows are not barycentric coordinates (must be finite, sum to 1)")
    return faces, bary


# --------------------------------------------------------------------------------------------
def load_flame(model_path: str | Path, masks_path: str | Path, uv_obj_path: str | Path,
               landmark_path: str | Path | None = None, *, version: str | None = None,
               num_shape: int = FLAME_NUM_SHAPE) -> HeadModelData:
    """Build a validated HeadModelData from the user's FLAME files (see the module docstring).

    version: "2020"/"2023"/...; default detected from the path (:func:`detect_flame_version`).
    num_shape: identity components at the front of ``shapedirs`` (300 in every FLAME release);
    all remaining components are expressions (100 in FLAME 2020 and 2023), named Exp000, ...
    """
    source = str(model_path)
    model = load_pickle(model_path, expect=dict)
    if not any(k in model for k in ("v_template", "shapedirs", "f")):
        _fail(source, "not a FLAME model file (no 'v_template', 'f' or 'shapedirs'; found keys: "
                      f"{', '.join(map(str, list(model)[:12])) or 'none'})")
    for k in _MODEL_KEYS:
        _key(model, k, source)

    v_template = _numeric(model["v_template"], "v_template", source, 2)
    V = v_template.shape[0]
    if v_template.shape[1] != 3 or V < 4:
        _fail(source, f"key 'v_template' has shape {v_template.shape}, expected (V, 3)")
    faces = _index_array(model["f"], "key 'f'", source, V, ndim=2)
    if faces.shape[1] != 3 or faces.shape[0] == 0:
        _fail(source, f"key 'f' has shape {faces.shape}, expected (F, 3)")

    shapedirs_all = _numeric(model["shapedirs"], "shapedirs", source, 3)
    if shapedirs_all.shape[:2] != (V, 3) or shapedirs_all.shape[2] <= num_shape:
        _fail(source, f"key 'shapedirs' has shape {shapedirs_all.shape}, expected ({V}, 3, N) with "
                      f"N > {num_shape} ({num_shape} shape components followed by the expressions)")

    kintree = _numeric(model["kintree_table"], "kintree_table", source, 2)
    if kintree.shape[0] != 2:
        _fail(source, f"key 'kintree_table' has shape {kintree.shape}, expected (2, J)")
    J = kintree.shape[1]
    if J != len(JOINT_NAMES):
        _fail(source, f"{J} joints in 'kintree_table', expected FLAME's {len(JOINT_NAMES)} "
                      f"({', '.join(JOINT_NAMES)})")
    parents = _parents_from_kintree(kintree, source)

    J_regressor = _numeric(model["J_regressor"], "J_regressor", source, 2, allow_sparse=True)
    if J_regressor.shape != (J, V):
        _fail(source, f"key 'J_regressor' has shape {J_regressor.shape}, expected ({J}, {V})")
    if np.abs(J_regressor.sum(axis=1) - 1.0).max() > 1e-2:
        _fail(source, "key 'J_regressor' rows do not sum to 1")

    weights = _numeric(model["weights"], "weights", source, 2)
    if weights.shape != (V, J):
        _fail(source, f"key 'weights' has shape {weights.shape}, expected ({V}, {J})")
    if np.abs(weights.sum(axis=1) - 1.0).max() > 1e-2:
        _fail(source, "key 'weights' rows do not sum to 1")

    P = 9 * (J - 1)
    posedirs = _numeric(model["posedirs"], "posedirs", source, 3)
    if posedirs.shape != (V, 3, P):
        _fail(source, f"key 'posedirs' has shape {posedirs.shape}, expected ({V}, 3, {P})")
    # smplx convention: row k of the (P, V*3) matrix is corrective k, vertex-major with xyz inner,
    # i.e. out[k, 3 * v + c] = posedirs[v, c, k].
    posedirs_flat = np.ascontiguousarray(posedirs.reshape(-1, P).T, dtype=np.float32)

    # Eye joint names: FLAME's joint 3 is the subject's left eye, which lies on +X (face towards
    # +Z, Y up). Check it on the regressed rest joints; if a file has them the other way round,
    # keep FLAME's joint order (pose vectors from other FLAME tools index joints by position) and
    # swap the names instead.
    joints = J_regressor.astype(np.float64) @ v_template.astype(np.float64)
    joint_names: tuple[str, ...] = JOINT_NAMES
    if joints[_EYE_L, 0] < joints[_EYE_R, 0]:
        joint_names = JOINT_NAMES[:_EYE_L] + (JOINT_NAMES[_EYE_R], JOINT_NAMES[_EYE_L])

    E = shapedirs_all.shape[2] - num_shape
    regions = load_flame_masks(masks_path, V)
    uv = load_uv_obj(uv_obj_path, faces)
    landmark_faces = landmark_bary = None
    if landmark_path is not None:
        landmark_faces, landmark_bary = load_landmark_embedding(landmark_path, len(faces))

    data = HeadModelData(
        name="flame",
        version=str(version) if version is not None else detect_flame_version(model_path),
        v_template=v_template.astype(np.float32),
        faces=faces,
        uv=uv,
        shapedirs=np.ascontiguousarray(shapedirs_all[:, :, :num_shape], dtype=np.float32),
        exprdirs=np.ascontiguousarray(shapedirs_all[:, :, num_shape:], dtype=np.float32),
        expr_names=[f"Exp{i:03d}" for i in range(E)],
        J_regressor=J_regressor.astype(np.float32),
        lbs_weights=weights.astype(np.float32),
        regions=regions,
        posedirs=posedirs_flat,
        landmark_faces=landmark_faces,
        landmark_bary=landmark_bary,
        parents=parents,
        joint_names=joint_names,
        licence=FLAME_LICENCE,
    )
    return data.validate(source)
