"""Jobs of the animation capability: wire requests to a shape-key rig and exact per-frame dense
meshes for a baked animation (PC2), made by animate/rig.py."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..handlers import MODEL, Param, job, vectors
from ..head.dense import dense_template
from ..head.registry import get_model
from .rig import build_rig, carried, detail_coordinates


def _coarse_batch(arrays, name, n) -> np.ndarray:
    a = arrays.get(name)
    if a is None:
        raise UserError(f"the {name!r} array is missing")
    a = np.asarray(a, np.float32)
    if a.ndim != 3 or a.shape[1:] != (n, 3) or len(a) == 0:
        raise UserError(f"{name} has shape {a.shape}; this head needs (frames, {n}, 3)")
    if not np.isfinite(a).all():
        raise UserError(f"{name} contains NaN or infinite values")
    return a


def _detailed(ctx, params, arrays):
    model = get_model(ctx, params)
    dense = dense_template(model.data)
    n = dense.num_vertices
    return model, dense, vectors(arrays, "base", n), vectors(arrays, "displacement", n)


@job("animate.rig", {**MODEL, "expr_names": Param("strings", None, "the expressions to key (default all the "
                                                                    "model's)")},
     arrays="`coarse_neutral (V,3)` (identity, no expression), `base`, `displacement (Vd,3)`",
     result="fields `expr_names joint_names`; arrays `basis (Vd,3)`, `expr_deltas (E,Vd,3)`, "
            "`lbs_weights (Vd,J)`, `dense_faces (Fd,3)`",
     notes="A shape-key rig: the basis (identity, neutral expression, details) and, per expression, the "
           "detailed head at that expression minus the basis; skinning weights carried to the dense mesh. "
           "Refused: names not in the model, a missing, wrongly shaped or non-finite array.")
def rig_job(ctx, params, arrays):
    """A shape-key rig: the basis (identity, neutral expression, details) and, per expression,
    the detailed head at that expression (weight 1) minus the basis; skinning weights carried
    to the dense mesh for the jaw, neck and eyes."""
    model, dense, base, disp = _detailed(ctx, params, arrays)
    neutral = vectors(arrays, "coarse_neutral", model.data.num_vertices)
    rig = build_rig(ctx, model, dense, neutral, base, disp, params.get("expr_names"))
    ctx.progress(1.0, "rig", "done")
    return ({"expr_names": rig.expr_names, "joint_names": list(model.data.joint_names)},
            {"basis": rig.basis, "expr_deltas": rig.expr_deltas, "lbs_weights": rig.lbs_weights,
             "dense_faces": dense.faces.astype(np.int32)})


@job("animate.bake", MODEL,
     arrays="`coarse_frames (T,V,3)` (T >= 1, posed by Blender), `base`, `displacement (Vd,3)`",
     result="field `frames` (T); array `vertices (T,Vd,3)`",
     notes="Exact dense detailed heads for a run of frames of the coarse head. Refused as `animate.rig`; T is "
           "bounded by the payload only (the extension sends runs of frames whose reply is about 96 MiB).")
def bake_job(ctx, params, arrays):
    """Exact dense detailed heads for a run of frames of the coarse head (keys and pose
    evaluated by Blender): one (frames, Vd, 3) array."""
    model, dense, base, disp = _detailed(ctx, params, arrays)
    coarse = _coarse_batch(arrays, "coarse_frames", model.data.num_vertices)
    coords = detail_coordinates(ctx, model, dense, base, disp)
    frames = carried(ctx, model, dense, coarse, coords,
                     lambda f: ctx.progress(f, "bake", f"{len(coarse)} frames"))
    return {"frames": len(coarse)}, {"vertices": frames}
