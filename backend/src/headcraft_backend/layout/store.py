"""UV layouts of a head model by name: "standard" (the model's own UVs), "headcraft" (built by
layout.build, cached per model) and custom layouts users save (per model, in the cache folder).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from ..cache import default_cache_dir, hash_arrays, write_atomic
from ..head.data import HeadModelData
from ..errors import UserError
from .build import BUILDER_VERSION, Layout, build_layout, layout_report

BUILT_IN = ("headcraft", "standard")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def model_key(data: HeadModelData) -> str:
    h = hashlib.sha256(f"{data.name}/{BUILDER_VERSION}".encode())
    hash_arrays(h, (data.v_template, np.float32), (data.faces, np.int32))
    for name in sorted(data.regions):
        h.update(name.encode())
        hash_arrays(h, (data.regions[name], np.int32))
    return h.hexdigest()[:20]


def _folder(data: HeadModelData, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "layouts" / f"{data.name}-{model_key(data)}"


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
    folder = _folder(data, cache_dir)
    path = folder / f"{name}.npz"
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder.resolve():
        return None
    return path


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
    layout = build_layout(data)
    save_layout_file(layout, path)
    return layout


def list_layouts(data: HeadModelData, cache_dir: Path | None = None) -> list[str]:
    folder = _folder(data, cache_dir)
    custom = sorted(p.stem for p in folder.glob("*.npz") if p.stem not in BUILT_IN) if folder.is_dir() else []
    return [*BUILT_IN, *custom]


def save_custom_layout(data: HeadModelData, name: str, uv: np.ndarray, cache_dir: Path | None = None) -> Layout:
    """Check and store per-corner UVs a user made (e.g. re-unwrapped in Blender)."""
    if name in BUILT_IN or not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"layout name {name!r}: use letters, digits, space, '_', '-' or '.' "
                        f"(up to 64), and not {' or '.join(BUILT_IN)}")
    uv = np.asarray(uv, np.float32)
    if uv.shape != (len(data.faces), 3, 2):
        raise UserError(f"the layout has UVs for {uv.shape[0] if uv.ndim else 0} triangles; "
                        f"{data.name} has {len(data.faces)} (was the head's topology changed?)")
    if not np.isfinite(uv).all():
        raise UserError("the layout has NaN or infinite UVs")
    chart = np.zeros(len(uv), np.int16)
    layout = Layout(name, uv, chart, ["custom"])
    layout.report = layout_report(data.v_template.astype(np.float64), data.faces.astype(np.int64),
                                  uv.astype(np.float64), chart, ["custom"])
    try:
        save_layout_file(layout, _folder(data, cache_dir) / f"{name}.npz")
    except OSError as exc:
        raise UserError(f"cannot save the layout: {exc}") from None
    return layout


def dense_uv(corner_tri: np.ndarray, corner_bary: np.ndarray, layout_uv: np.ndarray) -> np.ndarray:
    """(Fd, 3, 2) dense per-corner UVs: each dense corner interpolates the coarse triangle's UVs."""
    return np.einsum("fck,fkd->fcd", corner_bary, layout_uv[corner_tri]).astype(np.float32)
