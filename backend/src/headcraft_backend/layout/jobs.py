"""Jobs of the layout/bake capability: layouts, baking displacement maps, applying maps.

Units: meshes and per-vertex displacements travel in metres in the model frame (as for every
job); maps hold HeadCraft units (x120), the convention of the published maps and their +-20 clip.
"""
from __future__ import annotations

import hashlib
import operator
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..fit.subdivision import DenseRebuild, dense_template
from ..fit.units import HC_UNITS_PER_METRE
from ..head.registry import get_model
from ..limits import MAX_CACHED_PER_KIND, MAX_MAP_SIZE, MIN_MAP_SIZE
from ..service.jobs import UserError, job
from . import formats, tangent, texels
from .store import dense_uv, get_layout, list_layouts, save_custom_layout

MIN_SIZE, MAX_SIZE = MIN_MAP_SIZE, MAX_MAP_SIZE
SPACES = ("object", "tangent")


def _layout(ctx, params):
    model = get_model(ctx, params)
    dense = dense_template(model.data)
    layout = get_layout(model.data, params.get("layout") or "headcraft")
    return model, dense, layout


CACHED_PER_KIND = MAX_CACHED_PER_KIND      # layouts x sizes kept in memory


def _cached(ctx, key, build):
    """ctx.cache with the oldest entries of the same kind dropped beyond CACHED_PER_KIND."""
    hit = ctx.cache.pop(key, None)
    if hit is None:
        hit = build()
    ctx.cache[key] = hit                        # re-inserted: the newest
    same = [k for k in ctx.cache if isinstance(k, tuple) and k[:1] == key[:1]]
    for old in same[:-CACHED_PER_KIND]:
        del ctx.cache[old]
    return hit


def _layout_key(model, dense, layout, size):
    digest = hashlib.sha1(np.ascontiguousarray(layout.uv).tobytes()).hexdigest()
    return (model.data.name, dense.key, digest, size)


def _raster(ctx, model, dense, layout, size: int) -> tuple[np.ndarray, texels.Raster]:
    """Dense per-corner UVs and their rasterisation (all that baking needs)."""
    def build():
        uv = dense_uv(dense.corner_tri, dense.corner_bary, layout.uv)
        ctx.progress(0.1, "layout", f"rasterising the layout at {size}x{size} (once per layout)")
        return uv, texels.rasterize(uv, size)
    return _cached(ctx, ("raster", *_layout_key(model, dense, layout, size)), build)


def _operators(ctx, model, dense, layout, size: int) -> tuple[np.ndarray, texels.MapOperators]:
    """Dense per-corner UVs and the map operators (fill, seams, sampling), cached per layout
    content and resolution."""
    def build():
        uv, raster = _raster(ctx, model, dense, layout, size)
        ctx.progress(0.2, "layout", f"seam and sampling operators at {size}x{size} (once per layout)")
        return uv, texels.map_operators(dense.faces, uv, dense.num_vertices, size, raster)
    return _cached(ctx, ("map_operators", *_layout_key(model, dense, layout, size)), build)


def _size(params) -> int:
    raw = params.get("size", 1024)
    try:
        size = operator.index(raw)          # an integer, not 1e30 or a list
    except TypeError:
        size = -1
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"map size {str(raw)[:20]}: choose {MIN_SIZE} to {MAX_SIZE} texels")
    return size


def _space(params) -> str:
    space = params.get("space", "object")
    if space not in SPACES:
        raise UserError(f"unknown displacement space {space!r}; choose {' or '.join(SPACES)}")
    return space


def _formats(params) -> list[str]:
    fmts = list(params.get("formats", []))
    for f in fmts:
        if f not in formats.FORMATS:
            raise UserError(f"unknown map format {f!r}; choose from {', '.join(formats.FORMATS)}")
    return fmts


def _encode(ctx, m, fmts, stem, out) -> list[str]:
    """Encoded files of a map into the reply (`file__<name>` byte arrays); their names."""
    names = []
    for f in fmts:
        ctx.progress(0.8, "files", f"encoding {f}")
        for name, data in formats.encode(m, f, stem).items():
            out[f"file__{name}"] = np.frombuffer(data, np.uint8)
            names.append(name)
    return names


def check_map(m, what: str = "the map") -> np.ndarray:
    m = np.asarray(m, np.float32)
    if m.ndim != 3 or m.shape[0] != m.shape[1] or m.shape[2] != 3 or not np.isfinite(m).all():
        raise UserError(f"{what} must be a finite square (N, N, 3) array, got {m.shape}")
    return m


def _vectors(arrays, name, n) -> np.ndarray:
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


@job("layout.get")
def layout_get_job(ctx, params, arrays):
    """A layout's per-corner UVs on the coarse mesh and the dense template, with its report."""
    model, dense, layout = _layout(ctx, params)
    fields = {"layout": layout.name, "layouts": list_layouts(model.data), "report": layout.report,
              "chart_names": layout.chart_names}
    return fields, {"uv": layout.uv, "chart": layout.chart,
                    "dense_uv": dense_uv(dense.corner_tri, dense.corner_bary, layout.uv)}


@job("layout.save")
def layout_save_job(ctx, params, arrays):
    model = get_model(ctx, params)
    if "uv" not in arrays:
        raise UserError("no UVs were sent (the 'uv' array is missing)")
    layout = save_custom_layout(model.data, str(params.get("name", "")), arrays["uv"])
    return {"layout": layout.name, "layouts": list_layouts(model.data), "report": layout.report}, {}


def bake_displacement(ctx, model, dense, layout, size: int, arrays, space: str = "object") -> dict:
    """A detailed head's displacements (`base`, `displacement` in metres, optional
    `visibility`) baked at `size`: map (HeadCraft units), mask and, for a partial fit,
    visibility_map."""
    n = dense.num_vertices
    disp = _vectors(arrays, "displacement", n) * HC_UNITS_PER_METRE
    uv, raster = _raster(ctx, model, dense, layout, size)
    ctx.progress(0.6, "bake", f"baking {space}-space displacements at {size}x{size}")
    if space == "tangent":
        base = _vectors(arrays, "base", n)
        values = tangent.to_tangent(tangent.corner_frames(base, dense.faces, uv), dense.faces, disp)
    else:
        values = disp
    m, covered = texels.bake(raster, dense.faces, values)
    out = {"map": m, "mask": covered.astype(np.uint8)}
    if "visibility" in arrays:
        vis = np.asarray(arrays["visibility"]).astype(np.float32).reshape(-1, 1)
        if vis.shape[0] != n:
            raise UserError(f"visibility has {vis.shape[0]} values for {n} vertices")
        out["visibility_map"] = texels.bake(raster, dense.faces, vis)[0][..., 0]
    return out


@job("map.bake")
def bake_job(ctx, params, arrays):
    """Per-vertex displacements of a detailed head -> a map (object or tangent space) in the
    chosen layout, plus encoded files and, for a partial fit, the visibility mask."""
    model, dense, layout = _layout(ctx, params)
    size, space, fmts = _size(params), _space(params), _formats(params)
    _vectors(arrays, "base", dense.num_vertices)        # checked in both spaces: a head, not just offsets
    out = bake_displacement(ctx, model, dense, layout, size, arrays, space)
    m, covered = out["map"], out["mask"].astype(bool)
    names = _encode(ctx, m, fmts, params.get("name") or f"{model.data.name}_{layout.name}_{space}_{size}", out)
    clipped = float((np.abs(m[covered]) > formats.PNG_RANGE).mean()) if covered.any() else 0.0
    return {"size": size, "space": space, "layout": layout.name, "files": names,
            "clipped_fraction": clipped, "max_abs_units": float(np.abs(m[covered]).max(initial=0.0))}, out


def read_map_arrays(arrays) -> np.ndarray:
    """The map of a request: a float `map` array, or `file__<name>` bytes of map files."""
    if "map" in arrays:
        m = arrays["map"]
        if np.ndim(m) == 3 and max(np.shape(m)[:2]) > MAX_SIZE:     # before any copy
            raise UserError(f"the map is {np.shape(m)[0]}x{np.shape(m)[1]}; maps have at most {MAX_SIZE}^2 texels")
        return check_map(m)
    files = {k[len("file__"):]: v for k, v in arrays.items() if k.startswith("file__")}
    if not files:
        raise UserError("no map was sent")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(np.asarray(data, np.uint8).tobytes())
        first = sorted(files)[0]
        try:
            m = formats.read(Path(tmp) / Path(first).name, max_size=MAX_SIZE)
        except ValueError as exc:
            raise UserError(str(exc).replace(tmp + "/", "")) from None
    if m.shape[2] != 3:
        raise UserError(f"{first}: a displacement map needs 3 channels, it has {m.shape[2]}")
    return m


def dense_rebuild(ctx, model, dense) -> DenseRebuild:
    """The model's consistent-subdivision operator, built once per model and kept."""
    return _cached(ctx, ("dense_rebuild", model.data.name, dense.key),
                   lambda: DenseRebuild(dense, model.data.faces))


def dense_base(ctx, model, dense, coarse: np.ndarray) -> np.ndarray:
    """The dense head of a coarse head."""
    with torch.no_grad():
        return dense_rebuild(ctx, model, dense)(torch.from_numpy(np.asarray(coarse)).float()[None])[0].numpy()


def apply_map(ctx, model, dense, layout, m: np.ndarray, base: np.ndarray, space: str = "object") -> dict:
    """A map on a dense head (`dense_base` of any identity/expression): seam processing,
    sampling; arrays for the reply."""
    if not MIN_SIZE <= m.shape[0] <= MAX_SIZE:
        raise UserError(f"map size {m.shape[0]}: choose {MIN_SIZE} to {MAX_SIZE} texels")
    uv, ops = _operators(ctx, model, dense, layout, m.shape[0])
    ctx.progress(0.7, "apply", "seam processing and sampling the map")
    if space == "tangent":
        frames = tangent.corner_frames(base, dense.faces, uv)
        corners = tangent.from_tangent(frames, ops.apply_corners(m, seams=False)).reshape(-1, 3)
        disp = np.asarray(ops.average @ corners)
    else:
        disp = ops.apply(m)
    disp = disp.astype(np.float32) / HC_UNITS_PER_METRE
    return {"dense_faces": dense.faces.astype(np.int32), "dense_uv": uv, "base": base.astype(np.float32),
            "displacement": disp, "final": (base + disp).astype(np.float32),
            "processed_map": ops.processed(m) if space == "object" else m}


def request_base(ctx, model, dense, arrays) -> np.ndarray:
    """The dense head of the request's coarse head, or of the model's template when none was sent."""
    coarse = model.data.v_template.astype(np.float64) if "coarse_vertices" not in arrays else \
        _vectors(arrays, "coarse_vertices", model.data.num_vertices)
    return dense_base(ctx, model, dense, coarse)


@job("map.apply")
def apply_job(ctx, params, arrays):
    """A map on any identity/expression: the coarse head is rebuilt densely (consistent
    subdivision) and displaced by the map, after seam processing."""
    model, dense, layout = _layout(ctx, params)
    space = _space(params)
    m = read_map_arrays(arrays)
    out = apply_map(ctx, model, dense, layout, m, request_base(ctx, model, dense, arrays), space)
    return {"layout": layout.name, "space": space, "size": int(m.shape[0])}, out


@job("map.convert")
def convert_job(ctx, params, arrays):
    """An object-space map from one layout of a model to another (e.g. standard -> headcraft).
    Tangent-space maps depend on each layout's tangents: bake those again instead."""
    model = get_model(ctx, params)
    if _space(params) != "object":
        raise UserError("only object-space maps convert between layouts; bake a tangent-space map "
                        "again in the other layout")
    fmts = _formats(params)
    src = get_layout(model.data, params.get("source") or "standard")
    dst = get_layout(model.data, params.get("target") or "headcraft")
    m = read_map_arrays(arrays)
    if not MIN_SIZE <= m.shape[0] <= MAX_SIZE:      # the input's size, whatever size is asked for
        raise UserError(f"the map is {m.shape[0]}^2; maps to convert have {MIN_SIZE} to {MAX_SIZE} texels a side")
    size = _size({"size": params.get("size", m.shape[0])})
    ctx.progress(0.3, "convert", f"{src.name} -> {dst.name} at {size}x{size}")
    faces = model.data.faces.astype(np.int64)
    src_ops = texels.map_operators(faces, src.uv, model.data.num_vertices, m.shape[0])
    M = texels.convert_matrix(faces, src.uv, src_ops, dst.uv, size)
    out_map = np.asarray(M @ m.reshape(-1, 3), np.float32).reshape(size, size, 3)
    out = {"map": out_map}
    names = _encode(ctx, out_map, fmts, params.get("name") or f"{model.data.name}_{dst.name}_object_{size}", out)
    return {"source": src.name, "target": dst.name, "size": size, "files": names}, out


@job("map.bake_colour")
def bake_colour_job(ctx, params, arrays):
    """A scan's colour (vertex colours, or a texture with per-corner UVs) onto a fitted
    detailed head's layout. `final` (dense vertices) and the scan must share one frame."""
    from .colour import bake_colour
    model, dense, layout = _layout(ctx, params)
    size = _size(params)
    final = _vectors(arrays, "final", dense.num_vertices)
    if "scan_vertices" not in arrays or "scan_faces" not in arrays:
        raise UserError("the scan's vertices and faces are needed (a point cloud has no surface to take colours from)")
    sv, sf = np.asarray(arrays["scan_vertices"], np.float64), np.asarray(arrays["scan_faces"], np.int64)
    if sv.ndim != 2 or sv.shape[1] != 3 or not np.isfinite(sv).all() or sf.ndim != 2 or sf.shape[1] != 3 \
            or len(sf) == 0 or sf.min() < 0 or sf.max() >= len(sv):
        raise UserError("the scan's vertices or faces are broken (NaN, wrong shape or bad indices)")
    colors, scan_uv, texture = arrays.get("scan_colors"), arrays.get("scan_uv"), arrays.get("texture")
    if colors is not None and np.shape(colors) != (len(sv), 3):
        raise UserError(f"scan colours have shape {np.shape(colors)}; expected ({len(sv)}, 3)")
    if colors is None and (scan_uv is None or texture is None):
        raise UserError("the scan has no colours: give it a colour attribute or an image texture")
    if colors is None and (np.shape(scan_uv) != (len(sf), 3, 2) or np.ndim(texture) != 3):
        raise UserError("the scan's texture needs per-corner UVs (F, 3, 2) and an (H, W, 3) image")
    uv, raster = _raster(ctx, model, dense, layout, size)
    m = bake_colour(raster, dense.faces, final, sv, sf, colors=colors, scan_uv=scan_uv, texture=texture,
                    progress=lambda f: ctx.progress(0.2 + 0.7 * f, "colour", "nearest points on the scan"))
    stem = params.get("name") or f"{model.data.name}_{layout.name}_colour_{size}"
    return ({"layout": layout.name, "size": size, "files": [f"{stem}.png"]},
            {"map": m, "dense_uv": uv, f"file__{stem}.png": np.frombuffer(formats.colour_png_bytes(m), np.uint8)})
