"""Displacement maps on a head model's dense template: bake, apply (with seam processing) and
convert between layouts. The library the map, generation and animation jobs, the CLI and the
dataset registration share.

Units: meshes and per-vertex displacements are metres in the model frame; maps hold HeadCraft
units (x120), the convention of the published maps and their +-20 clip.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch

from ..compute import Compute
from ..errors import UserError
from ..head.dense import DenseRebuild, DenseTemplate, dense_template
from ..head.model import HeadModel
from ..head.registry import get_model
from ..limits import MAX_CACHED_PER_KIND, MAX_MAP_SIZE, MIN_MAP_SIZE
from ..units import HC_UNITS_PER_METRE
from . import tangent, texels
from .tangent import SPACES
from .store import Layout, dense_uv, get_layout

@dataclasses.dataclass
class MappedHead:
    """A head model with its dense template and one of its UV layouts."""
    model: HeadModel
    dense: DenseTemplate
    layout: Layout


def mapped_head(compute: Compute, model_params: dict, layout: str | None = None) -> MappedHead:
    """model_params: as head.registry.get_model; layout: a layout name (default "headcraft")."""
    model = get_model(compute, model_params)
    return MappedHead(model, dense_template(model.data), get_layout(model.data, layout or "headcraft"))


def cached(compute: Compute, key: tuple, build):
    """compute.cache[key], built once; beyond MAX_CACHED_PER_KIND entries of the same kind
    (key[0]) the least recently used go."""
    hit = compute.cache.pop(key, None)
    if hit is None:
        hit = build()
    compute.cache[key] = hit                        # re-inserted: the newest
    same = [k for k in compute.cache if isinstance(k, tuple) and k[:1] == key[:1]]
    for old in same[:-MAX_CACHED_PER_KIND]:
        del compute.cache[old]
    return hit


def _layout_key(head: MappedHead, size: int) -> tuple:
    digest = hashlib.sha1(np.ascontiguousarray(head.layout.uv).tobytes()).hexdigest()
    return (head.model.data.name, head.dense.key, digest, size)


def raster(compute: Compute, head: MappedHead, size: int) -> tuple[np.ndarray, texels.Raster]:
    """Dense per-corner UVs and their rasterisation (all that baking needs), cached."""
    def build():
        uv = dense_uv(head.dense.corner_tri, head.dense.corner_bary, head.layout.uv)
        compute.progress(0.1, "layout", f"rasterising the layout at {size}x{size} (once per layout)")
        return uv, texels.rasterize(uv, size)
    return cached(compute, ("raster", *_layout_key(head, size)), build)


def operators(compute: Compute, head: MappedHead, size: int) -> tuple[np.ndarray, texels.MapOperators]:
    """Dense per-corner UVs and the map operators (fill, seams, sampling), cached per layout
    content and resolution."""
    def build():
        uv, r = raster(compute, head, size)
        compute.progress(0.2, "layout", f"seam and sampling operators at {size}x{size} (once per layout)")
        return uv, texels.map_operators(head.dense.faces, uv, head.dense.num_vertices, size, r)
    return cached(compute, ("map_operators", *_layout_key(head, size)), build)


def check_size(size: int) -> int:
    if not MIN_MAP_SIZE <= size <= MAX_MAP_SIZE:
        raise UserError(f"map size {size}: choose {MIN_MAP_SIZE} to {MAX_MAP_SIZE} texels")
    return size


def check_space(space: str) -> str:
    if space not in SPACES:
        raise UserError(f"unknown displacement space {space!r}; choose {' or '.join(SPACES)}")
    return space


def check_map(m, what: str = "the map") -> np.ndarray:
    m = np.asarray(m, np.float32)
    if m.ndim != 3 or m.shape[0] != m.shape[1] or m.shape[2] != 3 or not np.isfinite(m).all():
        raise UserError(f"{what} must be a finite square (N, N, 3) array, got {m.shape}")
    return m


def bake_displacement(compute: Compute, head: MappedHead, size: int, base: np.ndarray,
                      displacement: np.ndarray, visibility: np.ndarray | None = None,
                      space: str = "object") -> dict[str, np.ndarray]:
    """A detailed head's displacements (dense (Vd, 3) metres, on the dense head `base`) baked at
    `size`: map (HeadCraft units), mask and, with a partial fit's per-vertex visibility,
    visibility_map."""
    check_size(size)
    dense = head.dense
    disp = np.asarray(displacement, np.float64) * HC_UNITS_PER_METRE
    uv, r = raster(compute, head, size)
    compute.progress(0.6, "bake", f"baking {check_space(space)}-space displacements at {size}x{size}")
    if space == "tangent":
        values = tangent.to_tangent(tangent.corner_frames(np.asarray(base, np.float64), dense.faces, uv),
                                    dense.faces, disp)
    else:
        values = disp
    m, covered = texels.bake(r, dense.faces, values)
    out = {"map": m, "mask": covered.astype(np.uint8)}
    if visibility is not None:
        vis = np.asarray(visibility).astype(np.float32).reshape(-1, 1)
        if vis.shape[0] != dense.num_vertices:
            raise UserError(f"visibility has {vis.shape[0]} values for {dense.num_vertices} vertices")
        out["visibility_map"] = texels.bake(r, dense.faces, vis)[0][..., 0]
    return out


def dense_rebuild(compute: Compute, model: HeadModel, dense: DenseTemplate) -> DenseRebuild:
    """The model's consistent-subdivision operator, built once per model and kept."""
    return cached(compute, ("dense_rebuild", model.data.name, dense.key),
                  lambda: DenseRebuild(dense, model.data.faces))


def dense_base(compute: Compute, head: MappedHead, coarse: np.ndarray | None = None) -> np.ndarray:
    """The dense head (Vd, 3) of a coarse head (V, 3), or of the model's template."""
    if coarse is None:
        coarse = head.model.data.v_template
    rebuild = dense_rebuild(compute, head.model, head.dense)
    with torch.no_grad():
        return rebuild(torch.from_numpy(np.asarray(coarse)).float()[None])[0].numpy()


def apply_map(compute: Compute, head: MappedHead, m: np.ndarray, base: np.ndarray,
              space: str = "object") -> dict[str, np.ndarray]:
    """A map on a dense head (`dense_base` of any identity/expression): seam processing and
    sampling. Returns dense_faces, dense_uv, base, displacement (metres), final and
    processed_map."""
    check_size(m.shape[0])
    dense = head.dense
    uv, ops = operators(compute, head, m.shape[0])
    compute.progress(0.7, "apply", "seam processing and sampling the map")
    if check_space(space) == "tangent":
        frames = tangent.corner_frames(base, dense.faces, uv)
        corners = tangent.from_tangent(frames, ops.apply_corners(m, seams=False)).reshape(-1, 3)
        disp = np.asarray(ops.average @ corners)
    else:
        disp = ops.apply(m)
    disp = disp.astype(np.float32) / HC_UNITS_PER_METRE
    return {"dense_faces": dense.faces.astype(np.int32), "dense_uv": uv, "base": base.astype(np.float32),
            "displacement": disp, "final": (base + disp).astype(np.float32),
            "processed_map": ops.processed(m) if space == "object" else m}


def convert_map(model: HeadModel, source: Layout, target: Layout, m: np.ndarray, size: int) -> np.ndarray:
    """An object-space map from one layout of a model to another, at `size` texels a side.
    (Tangent-space maps depend on each layout's tangents: bake those again instead.)"""
    if not MIN_MAP_SIZE <= m.shape[0] <= MAX_MAP_SIZE:     # the input's size, whatever size is asked for
        raise UserError(f"the map is {m.shape[0]}^2; maps to convert have {MIN_MAP_SIZE} to {MAX_MAP_SIZE} "
                        f"texels a side")
    check_size(size)
    faces = model.data.faces.astype(np.int64)
    src_ops = texels.map_operators(faces, source.uv, model.data.num_vertices, m.shape[0])
    M = texels.convert_matrix(faces, source.uv, src_ops, target.uv, size)
    return np.asarray(M @ m.reshape(-1, 3), np.float32).reshape(size, size, 3)
