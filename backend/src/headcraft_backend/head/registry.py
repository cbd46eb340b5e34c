"""Find and cache head models by name: the bundled OpenHead or the user's FLAME files."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..service.jobs import UserError
from .data import HeadModelData
from .model import HeadModel

MODELS = ("openhead", "flame")
OPENHEAD_ASSET = "openhead-1.npz"
FLAME_FILES = {"model_path": "FLAME model (generic_model.pkl or flame2023.pkl)",
               "masks_path": "FLAME_masks.pkl", "uv_path": "head_template.obj"}


def load_model_data(params: dict) -> HeadModelData:
    """params: {"model": "openhead"} or {"model": "flame", "flame": {model_path, masks_path,
    uv_path, landmark_path (optional)}}. Paths are on the backend's machine."""
    name = params.get("model", "openhead")
    if name == "openhead":
        with resources.as_file(resources.files("headcraft_backend.assets") / OPENHEAD_ASSET) as p:
            return HeadModelData.load_npz(p)
    if name == "flame":
        from .flame import load_flame
        paths = params.get("flame") or {}
        for key, what in FLAME_FILES.items():
            if not paths.get(key):
                raise UserError(f"FLAME is not configured: set the path to {what} in the "
                                f"HeadCraft preferences (files are downloaded from the FLAME "
                                f"website after accepting its licence)")
        return load_flame(paths["model_path"], paths["masks_path"], paths["uv_path"],
                          paths.get("landmark_path") or None)
    raise UserError(f"unknown head model {name!r}; choose one of {', '.join(MODELS)}")


def _cache_key(params: dict) -> tuple:
    name = params.get("model", "openhead")
    if name != "flame":
        return (name,)
    paths = params.get("flame") or {}
    stamp = []
    for key in sorted(paths):
        p = Path(paths[key]) if paths[key] else None
        stamp.append((key, str(p), p.stat().st_mtime_ns if p and p.is_file() else None))
    return (name, tuple(stamp))


def get_model(ctx, params: dict) -> HeadModel:
    """A HeadModel on the job's device, cached across jobs until the files change."""
    key = ("head_model", _cache_key(params), str(ctx.device))
    model = ctx.cache.get(key)
    if model is None:
        model = HeadModel(load_model_data(params)).to(ctx.device)
        ctx.cache[key] = model
    return model
