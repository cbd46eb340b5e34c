"""UV layouts of a head model by name: "standard" (the model's own UVs), "headcraft" (built by
layout.unwrap, cached per model) and custom layouts users save or import (per model, in the
cache folder): UVs re-unwrapped in Blender, an OBJ of the model's topology with per-corner UVs
(the published HeadCraft layout's format), or an (F, 3, 2) array in a .npy file.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from ..cache import default_cache_dir, default_data_dir, hash_arrays, write_atomic
from ..head.data import HeadModelData
from ..errors import UserError
from ..head.uv_obj import corner_uvs_from_obj
from ..limits import MAX_LAYOUT_FILE_BYTES
from .unwrap import UNWRAP_VERSION, Layout, layout_report, triangle_groups, unwrap_layout
from .texels import chart_labels

BUILT_IN = ("headcraft", "standard")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def model_key(data: HeadModelData) -> str:
    h = hashlib.sha256(f"{data.name}/{UNWRAP_VERSION}".encode())
    hash_arrays(h, (data.v_template, np.float32), (data.faces, np.int32))
    for name in sorted(data.regions):
        h.update(name.encode())
        hash_arrays(h, (data.regions[name], np.int32))
    return h.hexdigest()[:20]


def topology_key(data: HeadModelData) -> str:
    """A user's layout depends on the model's triangles only (not on its shape or our builder)."""
    h = hashlib.sha256(data.name.encode())
    hash_arrays(h, (data.faces, np.int32))
    return h.hexdigest()[:20]


def _folder(data: HeadModelData, cache_dir: Path | None) -> Path:
    """The built layout's folder (a cache)."""
    return (cache_dir or default_cache_dir()) / "layouts" / f"{data.name}-{model_key(data)}"


def _user_folder(data: HeadModelData, cache_dir: Path | None) -> Path:
    """Saved and imported layouts (user data; `cache_dir` replaces the data folder in tests)."""
    return (cache_dir or default_data_dir()) / "user-layouts" / f"{data.name}-{topology_key(data)}"


def save_layout_file(layout: Layout, path: Path) -> None:
    meta = {"name": layout.name, "chart_names": layout.chart_names, "report": layout.report}

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, uv=layout.uv, chart=layout.chart,
                     meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    write_atomic(path, write, required=layout.name not in BUILT_IN)


def load_layout_file(path: Path, num_faces: int) -> Layout:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta_json"]).decode())
            layout = Layout(meta["name"], np.array(z["uv"]), np.array(z["chart"]), list(meta["chart_names"]),
                            meta.get("report", {}))
    except Exception as exc:  # zip/npy errors, missing keys, bad JSON
        raise ValueError(f"{path}: not a readable layout ({exc})") from exc
    if layout.uv.shape != (num_faces, 3, 2) or not np.isfinite(layout.uv).all():
        raise ValueError(f"{path}: layout for another mesh (uv {layout.uv.shape})")
    return layout


def layout_path(data: HeadModelData, name, cache_dir: Path | None = None) -> Path | None:
    """The file of a layout name: only names that saving accepts, only a plain file right in the
    model's layouts folder (no link out of it); None for anything else."""
    if not isinstance(name, str) or not (name in BUILT_IN or _NAME.fullmatch(name)):
        return None
    # saved layouts; before 0.2 they lived beside the built one, whose folder a new builder changes
    folders = [_folder(data, cache_dir)]
    if name not in BUILT_IN:
        folders.insert(0, _user_folder(data, cache_dir))
    for folder in folders:
        path = folder / f"{name}.npz"
        if not path.is_symlink() and path.is_file() and path.resolve().parent == folder.resolve():
            return path
    return None


def get_layout(data: HeadModelData, name: str = "headcraft", cache_dir: Path | None = None) -> Layout:
    if name == "standard":
        return Layout("standard", data.uv.astype(np.float32), np.zeros(len(data.faces), np.int16), ["standard"])
    path = layout_path(data, name, cache_dir)
    if path is not None:
        try:
            return load_layout_file(path, len(data.faces))
        except ValueError:
            if name not in BUILT_IN:
                raise UserError(f"the saved layout {name!r} of {data.name} is damaged; save it again") from None
    if name != "headcraft":     # one message for every name that is not a layout here
        raise UserError(f"{data.name} has no layout named {str(name)[:80]!r}; "
                        f"available: {', '.join(list_layouts(data, cache_dir))}")
    path = _folder(data, cache_dir) / "headcraft.npz"
    layout = unwrap_layout(data)
    save_layout_file(layout, path)
    return layout


def list_layouts(data: HeadModelData, cache_dir: Path | None = None) -> list[str]:
    custom = {p.stem for folder in (_user_folder(data, cache_dir), _folder(data, cache_dir)) if folder.is_dir()
              for p in folder.glob("*.npz") if p.stem not in BUILT_IN and _NAME.fullmatch(p.stem)}
    return [*BUILT_IN, *sorted(custom)]


def save_custom_layout(data: HeadModelData, name: str, uv: np.ndarray, cache_dir: Path | None = None) -> Layout:
    """Check and store per-corner UVs a user made (re-unwrapped in Blender, or imported)."""
    if name in BUILT_IN or not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"layout name {name!r}: use letters, digits, space, '_', '-' or '.' "
                        f"(up to 64), and not {' or '.join(BUILT_IN)}")
    uv = np.asarray(uv, np.float32)
    if uv.shape != (len(data.faces), 3, 2):
        raise UserError(f"the layout has UVs for {uv.shape[0] if uv.ndim else 0} triangles; "
                        f"{data.name} has {len(data.faces)} (was the head's topology changed?)")
    if not np.isfinite(uv).all():
        raise UserError("the layout has NaN or infinite UVs")
    chart, names = _named_charts(data, uv)
    layout = Layout(name, uv, chart, names)
    layout.report = layout_report(data.v_template.astype(np.float64), data.faces.astype(np.int64),
                                  uv.astype(np.float64), chart, names)
    try:
        save_layout_file(layout, _user_folder(data, cache_dir) / f"{name}.npz")
    except OSError as exc:
        raise UserError(f"cannot save the layout: {exc}") from None
    return layout


def _named_charts(data: HeadModelData, uv: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """UV islands, each named after the region most of its triangles belong to (face.0, rest.1,
    eyeballs.0 ...), so a user's layout is reported per chart group like the built one."""
    island = chart_labels(data.faces, uv)
    groups = triangle_groups(data, data.faces.astype(np.int64))
    chart = np.zeros(len(uv), np.int16)
    names: list[str] = []
    for i in np.unique(island):
        sel = island == i
        kinds, counts = np.unique(groups[sel], return_counts=True)
        kind = str(kinds[counts.argmax()])
        names.append(f"{kind}.{sum(n.startswith(kind + '.') for n in names)}")
        chart[sel] = len(names) - 1
    return chart, names


LAYOUT_FORMATS = ("obj", "npy")


def import_layout(data: HeadModelData, name: str, content: bytes, fmt: str, source: str = "the layout file",
                  cache_dir: Path | None = None) -> Layout:
    """A layout file's bytes -> a saved layout of `data`: an OBJ of the model's triangles, in
    order, with per-corner UVs (f v/vt), or an (F, 3, 2) float array in a .npy file."""
    if len(content) > MAX_LAYOUT_FILE_BYTES:
        raise UserError(f"{source}: {len(content) / 1e6:.0f} MB; a layout file is at most "
                        f"{MAX_LAYOUT_FILE_BYTES / 1e6:.0f} MB")
    if fmt == "obj":
        uv = corner_uvs_from_obj(content.decode("utf-8", "replace").splitlines(), data.faces, source, data.name)
    elif fmt == "npy":
        try:
            arr = np.load(io.BytesIO(content), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"{source}: not a readable .npy array ({exc})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu" or arr.shape != (len(data.faces), 3, 2):
            raise UserError(f"{source}: expected per-corner UVs of shape ({len(data.faces)}, 3, 2) (triangles x "
                            f"corners x uv) for {data.name}, got {getattr(arr, 'dtype', '?')} "
                            f"{getattr(arr, 'shape', '?')}")
        uv = arr
    else:
        raise UserError(f"layout format {fmt!r}: choose {' or '.join(LAYOUT_FORMATS)}")
    return save_custom_layout(data, name, uv, cache_dir)


_HALVES: dict[str, tuple[float, float]] = {}


def halves(data: HeadModelData, layout: Layout) -> tuple[float, float]:
    """Fractions of the face's UV area in the left half (u < 0.5) and of the rest of the head
    (scalp, back, ears, neck) in the right half: the packing HeadCraft generators assume
    (remembered per model and UVs: every generator request checks it)."""
    h = hashlib.sha1(model_key(data).encode())
    hash_arrays(h, (layout.uv, np.float32))
    key = h.hexdigest()
    if key not in _HALVES:
        _HALVES[key] = _halves(data, layout)
    return _HALVES[key]


def _halves(data: HeadModelData, layout: Layout) -> tuple[float, float]:
    groups = triangle_groups(data, data.faces.astype(np.int64))
    uv = layout.uv.astype(np.float64)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    left = uv[:, :, 0].mean(1) < 0.5
    out = []
    for group, side in (("face", left), ("rest", ~left)):
        sel = groups == group
        out.append(float(area[sel & side].sum() / max(area[sel].sum(), 1e-30)))
    return out[0], out[1]


def dense_uv(corner_tri: np.ndarray, corner_bary: np.ndarray, layout_uv: np.ndarray) -> np.ndarray:
    """(Fd, 3, 2) dense per-corner UVs: each dense corner interpolates the coarse triangle's UVs."""
    return np.einsum("fck,fkd->fcd", corner_bary, layout_uv[corner_tri]).astype(np.float32)
