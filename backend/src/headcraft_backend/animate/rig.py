"""A detailed head carried to other expressions and poses: a shape-key rig, or exact dense
heads per frame. Meshes are metres in the model frame.

A detailed head is the dense head it was made on (`base`) and its `displacement`; the
displacement is read in the vertex frames of the base and carried to every other expression
or pose by the frames there (transport.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ..compute import Compute
from ..errors import UserError
from ..head.dense import DenseTemplate
from ..head.model import HeadModel
from ..layout.maps import cached, dense_rebuild
from .transport import VertexFrames, to_local, to_object

CHUNK = 8            # dense heads evaluated together (memory ~ CHUNK x 124K x 3 x 3 floats)


def vertex_frames(compute: Compute, model: HeadModel, dense: DenseTemplate) -> VertexFrames:
    return cached(compute, ("vertex_frames", model.data.name, dense.key),
                  lambda: VertexFrames(dense.faces, dense.num_vertices).to(compute.device))


def detail_coordinates(compute: Compute, model: HeadModel, dense: DenseTemplate, base: np.ndarray,
                       displacement: np.ndarray) -> torch.Tensor:
    """(1, Vd, 3) displacement in the frames of the head it was made on."""
    b = torch.from_numpy(np.asarray(base, np.float32)).to(compute.device)[None]
    d = torch.from_numpy(np.asarray(displacement, np.float32)).to(compute.device)[None]
    return to_local(vertex_frames(compute, model, dense)(b), d)


def carried(compute: Compute, model: HeadModel, dense: DenseTemplate, coarse: np.ndarray,
            coords: torch.Tensor, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Dense detailed heads (F, Vd, 3) for coarse heads (F, V, 3): rebuild, frames, transport."""
    rebuild, frames = dense_rebuild(compute, model, dense), vertex_frames(compute, model, dense)
    out = np.empty((len(coarse), dense.num_vertices, 3), np.float32)
    with torch.no_grad():
        for s in range(0, len(coarse), CHUNK):
            c = torch.from_numpy(np.asarray(coarse[s:s + CHUNK], np.float32))
            base = rebuild(c).to(compute.device)       # the rebuild's sparse product runs on the CPU
            d = to_object(frames(base), coords.expand(len(base), -1, -1))
            out[s:s + len(base)] = (base + d).cpu().numpy()
            if progress:
                progress(min(s + CHUNK, len(coarse)) / len(coarse))
    return out


@dataclasses.dataclass
class Rig:
    expr_names: list[str]
    basis: np.ndarray            # (Vd, 3) identity, neutral expression, details
    expr_deltas: np.ndarray      # (E, Vd, 3) the detailed head at each expression (weight 1) minus the basis
    lbs_weights: np.ndarray      # (Vd, J) skinning weights carried to the dense mesh


def build_rig(compute: Compute, model: HeadModel, dense: DenseTemplate, neutral: np.ndarray,
              base: np.ndarray, displacement: np.ndarray, expr_names: list[str] | None = None) -> Rig:
    """A shape-key rig for a detailed head (base + displacement) whose coarse head at a neutral
    expression is `neutral` (V, 3); expr_names: a subset of the model's (default all)."""
    data = model.data
    names = list(expr_names or data.expr_names)
    unknown = [n for n in names if n not in data.expr_names]
    if unknown:
        raise UserError(f"expressions not in {data.name}: {', '.join(unknown[:5])}")
    idx = [data.expr_names.index(n) for n in names]
    coords = detail_coordinates(compute, model, dense, base, displacement)
    compute.progress(0.05, "rig", f"{len(names)} expressions on {dense.num_vertices:,} vertices")
    neutral = np.asarray(neutral, np.float32)
    coarse = np.concatenate([neutral[None], neutral[None] + data.exprdirs[..., idx].transpose(2, 0, 1)])
    heads = carried(compute, model, dense, coarse, coords,
                    lambda f: compute.progress(0.05 + 0.9 * f, "rig", "expressions"))
    w = data.lbs_weights[data.faces[dense.vertex_tri]]                      # (Vd, 3, J)
    weights = np.einsum("vk,vkj->vj", dense.vertex_bary, w).astype(np.float32)
    weights /= np.maximum(weights.sum(1, keepdims=True), 1e-8)
    return Rig(names, heads[0], heads[1:] - heads[0][None], weights)
