"""Find and cache head models by name: the bundled OpenHead or the user's FLAME files."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..cache import cached_by_files
from ..errors import UserError
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
                                f"website after accepting its license)")
        for key, what in FLAME_FILES.items():
            if not Path(paths[key]).is_file():
                raise UserError(f"Check the FLAME files in the HeadCraft preferences: {what} is not "
                                f"where they say.\nNot found: {paths[key]}")
        return load_flame(paths["model_path"], paths["masks_path"], paths["uv_path"],
                          paths.get("landmark_path") or None)
    raise UserError(f"unknown head model {name!r}; choose one of {', '.join(MODELS)}")


def _model_files(params: dict) -> tuple[tuple, list[str]]:
    """The cache key of a model's parameters (names and paths, not file times) and its files."""
    name = params.get("model", "openhead")
    paths = params.get("flame") if name == "flame" else None
    if not isinstance(paths, dict):
        return (str(name),), []
    named = sorted((str(k), str(v)) for k, v in paths.items() if v)
    return (str(name), tuple(named)), [v for _, v in named]


def get_model(ctx, params: dict) -> HeadModel:
    """A HeadModel on the job's device, cached across jobs until one of its files changes (then
    the new one replaces it)."""
    key, files = _model_files(params)
    return cached_by_files(ctx.cache, ("head_model", key, str(ctx.device)), files,
                           lambda: HeadModel(load_model_data(params)).to(ctx.device))
