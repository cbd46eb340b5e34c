"""Jobs of the layout/bake capability: wire requests to layouts and maps (layout/maps.py)."""
from __future__ import annotations

import numpy as np

from ..handlers import LAYOUT, MODEL, Param, job, request_base, request_head, request_map, vectors
from ..errors import UserError
from ..head.registry import get_model
from ..limits import MAX_MAP_SIZE, MIN_MAP_SIZE
from . import formats
from .maps import apply_map, bake_displacement, convert_map, raster
from .tangent import SPACES
from .store import LAYOUT_FORMATS, dense_uv, get_layout, import_layout, list_layouts, save_custom_layout


SIZE = Param("int", 1024, "texels a side", lo=MIN_MAP_SIZE, hi=MAX_MAP_SIZE)
SPACE = Param("str", "object", "the displacement space", choices=SPACES)
FORMATS = Param("strings", [], "files to encode into the reply", choices=tuple(formats.FORMATS))
NAME = Param("str", None, "the files' stem")


def _encode(ctx, m, fmts, stem, out) -> list[str]:
    """Encoded files of a map into the reply (`file__<name>` byte arrays); their names."""
    names = []
    for f in fmts:
        ctx.progress(0.8, "files", f"encoding {f}")
        for name, data in formats.encode(m, f, stem).items():
            out[f"file__{name}"] = np.frombuffer(data, np.uint8)
            names.append(name)
    return names


@job("layout.get", {**MODEL, **LAYOUT},
     result="fields `layout layouts` (every name) `report chart_names`; arrays `uv (F,3,2)`, `chart (F,) <i2`, "
            "`dense_uv (Fd,3,2)`",
     notes="A layout's per-corner UVs on the coarse mesh and the dense template, with its report "
           "(`standard`'s report is empty).")
def layout_get_job(ctx, params, arrays):
    """A layout's per-corner UVs on the coarse mesh and the dense template, with its report."""
    head = request_head(ctx, params)
    layout, dense = head.layout, head.dense
    fields = {"layout": layout.name, "layouts": list_layouts(head.model.data), "report": layout.report,
              "chart_names": layout.chart_names}
    return fields, {"uv": layout.uv, "chart": layout.chart,
                    "dense_uv": dense_uv(dense.corner_tri, dense.corner_bary, layout.uv)}


@job("layout.save", {**MODEL, "name": Param("str", "", "the layout's name")},
     arrays="`uv (F,3,2)` per corner", result="fields `layout layouts report`",
     notes="Refused: a name that is not 1-64 letters, digits, space, `_ - .` (starting with a letter or digit) "
           "or is `headcraft`/`standard`; no `uv`, a wrong triangle count, NaN; a folder it cannot write. "
           "Replaces a saved layout of that name.")
def layout_save_job(ctx, params, arrays):
    model = get_model(ctx, params)
    if "uv" not in arrays:
        raise UserError("no UVs were sent (the 'uv' array is missing)")
    layout = save_custom_layout(model.data, str(params.get("name", "")), arrays["uv"])
    return {"layout": layout.name, "layouts": list_layouts(model.data), "report": layout.report}, {}


@job("layout.import", {**MODEL, "name": Param("str", "", "the layout's name"),
                       "format": Param("str", "obj", "the file's format", choices=LAYOUT_FORMATS),
                       "source": Param("str", "the layout file", "the file's name, for messages")},
     arrays="`file (n,) |u1`: the file's bytes", result="fields `layout layouts report`",
     notes="An OBJ of the model's triangles in order with per-corner UVs (`f v/vt`; the published HeadCraft "
           "layout's format) or an (F,3,2) `.npy`, stored as a named layout. Refused: another topology (the "
           "message names the first triangle that differs), a bad name (as `layout.save`), NaN UVs, a file "
           "over 256 MB. The report counts flipped and overlapping triangles and UVs outside the unit square.")
def layout_import_job(ctx, params, arrays):
    model = get_model(ctx, params)
    content = arrays.get("file")
    if content is None or content.dtype != np.uint8 or content.ndim != 1:
        raise UserError("no layout file was sent (the 'file' array of bytes is missing)")
    layout = import_layout(model.data, str(params["name"]), content.tobytes(), params["format"],
                           str(params["source"])[:200])
    return {"layout": layout.name, "layouts": list_layouts(model.data), "report": layout.report}, {}


@job("map.bake", {**MODEL, **LAYOUT, "size": SIZE, "space": SPACE, "formats": FORMATS,
                  "name": Param("str", None, "the files' stem (default `<model>_<layout>_<space>_<size>`)")},
     arrays="`base`, `displacement (Vd,3)`; optional `visibility (Vd,)`",
     result="fields `size space layout files clipped_fraction max_abs_units`; arrays `map (N,N,3)` in HeadCraft "
            "units, `mask (N,N) |u1` (texels inside charts), `visibility_map (N,N)` with `visibility`, "
            "`file__<name>`",
     notes="A detailed head's displacements baked into a map. Refused: a missing, wrongly shaped or non-finite "
           "`base`/`displacement`. `clipped_fraction`: chart texels beyond the PNG range (+-20 units).")
def bake_job(ctx, params, arrays):
    """Per-vertex displacements of a detailed head -> a map (object or tangent space) in the
    chosen layout, plus encoded files and, for a partial fit, the visibility mask."""
    head = request_head(ctx, params)
    size, space, fmts = params["size"], params["space"], params["formats"]
    n = head.dense.num_vertices
    out = bake_displacement(ctx, head, size, vectors(arrays, "base", n), vectors(arrays, "displacement", n),
                            arrays.get("visibility"), space)
    stem = params.get("name") or f"{head.model.data.name}_{head.layout.name}_{space}_{size}"
    names = _encode(ctx, out["map"], fmts, stem, out)
    clipped, max_abs = formats.range_report(out["map"], out["mask"])
    return {"size": size, "space": space, "layout": head.layout.name, "files": names,
            "clipped_fraction": clipped, "max_abs_units": max_abs}, out


@job("map.apply", {**MODEL, **LAYOUT, "space": SPACE},
     arrays="a map; optional `coarse_vertices (V,3)` (the model's template otherwise)",
     result="fields `layout space size`; head arrays",
     notes="A map on any identity/expression: the coarse head rebuilt densely and displaced after seam "
           "processing. Refused: no map, an unreadable file, a map that is not square, 3-channel, finite, "
           "64-8192 texels a side (a `map` array too large is refused before it is copied).")
def apply_job(ctx, params, arrays):
    """A map on any identity/expression: the coarse head is rebuilt densely (consistent
    subdivision) and displaced by the map, after seam processing."""
    head = request_head(ctx, params)
    space = params["space"]
    m = request_map(arrays)
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), space)
    return {"layout": head.layout.name, "space": space, "size": int(m.shape[0])}, out


@job("map.convert", {**MODEL, "source": Param("str", "standard", "the map's layout"),
                     "target": Param("str", "headcraft", "the layout to convert to"),
                     "space": Param("str", "object", "only `object` converts (bake a tangent-space map again)",
                                    choices=SPACES),
                     "size": Param("int", None, "texels a side (default the input's)", lo=MIN_MAP_SIZE,
                                   hi=MAX_MAP_SIZE),
                     "formats": FORMATS, "name": Param("str", None, "the files' stem (default "
                                                       "`<model>_<target>_object_<size>`)")},
     arrays="a map", result="fields `source target size files`; arrays `map (size,size,3)`, `file__<name>`",
     notes="An object-space map from one layout of a model to another. Refused: a tangent-space map, a map "
           "outside 64-8192 texels a side, an unknown layout.")
def convert_job(ctx, params, arrays):
    """An object-space map from one layout of a model to another (e.g. standard -> headcraft)."""
    model = get_model(ctx, params)
    if params["space"] != "object":
        raise UserError("only object-space maps convert between layouts; bake a tangent-space map "
                        "again in the other layout")
    fmts = params["formats"]
    src, dst = get_layout(model.data, params["source"]), get_layout(model.data, params["target"])
    m = request_map(arrays)
    size = params.get("size", m.shape[0])
    ctx.progress(0.3, "convert", f"{src.name} -> {dst.name} at {size}x{size}")
    out_map = convert_map(model, src, dst, m, size)
    out = {"map": out_map}
    names = _encode(ctx, out_map, fmts, params.get("name") or f"{model.data.name}_{dst.name}_object_{size}", out)
    return {"source": src.name, "target": dst.name, "size": size, "files": names}, out


@job("map.bake_colour", {**MODEL, **LAYOUT, "size": SIZE,
                         "name": Param("str", None, "the file's stem (default `<model>_<layout>_colour_<size>`)")},
     arrays="`final (Vd,3)` (the detailed head), `scan_vertices (P,3)`, `scan_faces (Q,3)`, and `scan_colors "
            "(P,3)` or `scan_uv (Q,3,2)` per corner with `texture (H,W,3)`, row 0 at the top (colours as 0-1 "
            "floats or 8/16-bit integers); head and scan in one frame",
     result="fields `layout size files` (`[<name>.png]`); arrays `map (N,N,3)` colours in 0-1 (black outside "
            "the charts), `dense_uv (Fd,3,2)`, `file__<name>.png` (8-bit RGB)",
     notes="A scan's colour onto a fitted detailed head's layout. Refused: no scan faces (a point cloud), NaN "
           "or bad indices, colours not one per scan vertex, neither colours nor UVs and texture, UVs not "
           "(Q,3,2). The scan limits are not applied here (only the payload's).")
def bake_colour_job(ctx, params, arrays):
    """A scan's colour (vertex colours, or a texture with per-corner UVs) onto a fitted
    detailed head's layout. `final` (dense vertices) and the scan must share one frame."""
    from .colour import bake_colour
    head = request_head(ctx, params)
    size = params["size"]
    final = vectors(arrays, "final", head.dense.num_vertices)
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
    uv, r = raster(ctx, head, size)
    m = bake_colour(r, head.dense.faces, final, sv, sf, colors=colors, scan_uv=scan_uv, texture=texture,
                    progress=lambda f: ctx.progress(0.2 + 0.7 * f, "colour", "nearest points on the scan"))
    stem = params.get("name") or f"{head.model.data.name}_{head.layout.name}_colour_{size}"
    return ({"layout": head.layout.name, "size": size, "files": [f"{stem}.png"]},
            {"map": m, "dense_uv": uv, f"file__{stem}.png": np.frombuffer(formats.colour_png_bytes(m), np.uint8)})
