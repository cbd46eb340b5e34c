"""Jobs of the animation capability: a shape-key rig for a detailed head, and exact per-frame
dense meshes for a baked animation (PC2). Meshes travel in metres in the model frame.

A detailed head travels as the dense head it was made on (`base`) and its `displacement` (the
attribute Blender keeps); the displacement is read in the frames of the base and carried to
every other expression or pose by the frames there.
"""
from __future__ import annotations

import numpy as np
import torch

from ..layout.jobs import _cached, _layout, _vectors, dense_rebuild
from ..service.jobs import UserError, job
from .transport import VertexFrames, to_local, to_object

CHUNK = 8            # dense heads evaluated together (memory ~ CHUNK x 124K x 3 x 3 floats)


def _frames(ctx, model, dense) -> VertexFrames:
    return _cached(ctx, ("vertex_frames", model.data.name, dense.key),
                   lambda: VertexFrames(dense.faces, dense.num_vertices).to(ctx.device))


def detail_coordinates(ctx, model, dense, arrays) -> torch.Tensor:
    """(1, Vd, 3) displacement in the frames of the head it was made on."""
    n = dense.num_vertices
    base = torch.from_numpy(_vectors(arrays, "base", n)).float().to(ctx.device)[None]
    disp = _vectors(arrays, "displacement", n)
    return to_local(_frames(ctx, model, dense)(base), torch.from_numpy(disp).float().to(ctx.device)[None])


def carried(ctx, model, dense, coarse: np.ndarray, coords: torch.Tensor, progress=None) -> np.ndarray:
    """Dense detailed heads (F, Vd, 3) for coarse heads (F, V, 3): rebuild, frames, transport."""
    rebuild, frames = dense_rebuild(ctx, model, dense), _frames(ctx, model, dense)
    out = np.empty((len(coarse), dense.num_vertices, 3), np.float32)
    with torch.no_grad():
        for s in range(0, len(coarse), CHUNK):
            c = torch.from_numpy(np.asarray(coarse[s:s + CHUNK], np.float32))
            base = rebuild(c).to(ctx.device)       # the rebuild's sparse product runs on the CPU
            d = to_object(frames(base), coords.expand(len(base), -1, -1))
            out[s:s + len(base)] = (base + d).cpu().numpy()
            if progress:
                progress(min(s + CHUNK, len(coarse)) / len(coarse))
    return out


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


@job("animate.rig")
def rig_job(ctx, params, arrays):
    """A shape-key rig: the basis (identity, neutral expression, details) and, per expression,
    the detailed head at that expression (weight 1) minus the basis; skinning weights carried
    to the dense mesh for the jaw, neck and eyes."""
    model, dense, _ = _layout(ctx, params)
    data = model.data
    neutral = _vectors(arrays, "coarse_neutral", data.num_vertices).astype(np.float32)
    names = list(params.get("expr_names") or data.expr_names)
    unknown = [n for n in names if n not in data.expr_names]
    if unknown:
        raise UserError(f"expressions not in {data.name}: {', '.join(unknown[:5])}")
    idx = [data.expr_names.index(n) for n in names]
    coords = detail_coordinates(ctx, model, dense, arrays)
    ctx.progress(0.05, "rig", f"{len(names)} expressions on {dense.num_vertices:,} vertices")
    coarse = np.concatenate([neutral[None], neutral[None] + data.exprdirs[..., idx].transpose(2, 0, 1)])
    heads = carried(ctx, model, dense, coarse, coords,
                    lambda f: ctx.progress(0.05 + 0.9 * f, "rig", "expressions"))
    basis = heads[0]
    w = data.lbs_weights[data.faces[dense.vertex_tri]]                      # (Vd, 3, J)
    weights = np.einsum("vk,vkj->vj", dense.vertex_bary, w).astype(np.float32)
    weights /= np.maximum(weights.sum(1, keepdims=True), 1e-8)
    ctx.progress(1.0, "rig", "done")
    return ({"expr_names": names, "joint_names": list(data.joint_names)},
            {"basis": basis, "expr_deltas": heads[1:] - basis[None], "lbs_weights": weights,
             "dense_faces": dense.faces.astype(np.int32)})


@job("animate.bake")
def bake_job(ctx, params, arrays):
    """Exact dense detailed heads for a run of frames of the coarse head (keys and pose
    evaluated by Blender): one (frames, Vd, 3) array."""
    model, dense, _ = _layout(ctx, params)
    coarse = _coarse_batch(arrays, "coarse_frames", model.data.num_vertices)
    coords = detail_coordinates(ctx, model, dense, arrays)
    frames = carried(ctx, model, dense, coarse, coords,
                     lambda f: ctx.progress(f, "bake", f"{len(coarse)} frames"))
    return {"frames": len(coarse)}, {"vertices": frames}
