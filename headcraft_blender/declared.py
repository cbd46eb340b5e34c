"""The settings that feed a job parameter take its bounds, default and choices from the
backend's declaration (client/job_params.py, generated from `@job(...)` by
tools/protocol_catalogue.py), so each fact lives in one place."""
from __future__ import annotations

import typing
from typing import Any

from .client import job_params

# client/job_params.py is plain generated data, typed by inference (dict[str, dict[str, object]]):
# the same table typed by what its entries hold (each a parameter's declaration, a dict)
PARAMS = typing.cast("dict[str, dict[str, dict[str, Any]]]", job_params.PARAMS)


def numeric(kind: str, name: str, **ui) -> dict:
    """The declared `min`, `max` and `default` of a number parameter as bpy.props keywords.
    `ui` adds what the panel needs beyond the declaration: soft_min / soft_max where the panel's
    range is narrower, a hard bound the declaration leaves open, a default where none is
    declared (tests/blender/test_declared.py keeps every hard bound inside the declared one)."""
    p = PARAMS[kind][name]
    cast = int if p["type"] == "int" else float
    out = {key: cast(p[key]) for key in ("min", "max", "default") if p[key] is not None}
    return {**out, **ui}


def choices(kind: str, name: str, labels: dict) -> list[tuple[str, str, str]]:
    """EnumProperty items of a parameter with declared choices: (CHOICE, label, tooltip) for
    every declared choice `labels` (choice: (label, tooltip)) names, in the order of `labels`.
    The item's identifier is the choice in capitals (requests send it in lower case)."""
    declared = PARAMS[kind][name]["choices"]
    return [(c.upper(), label, tip) for c, (label, tip) in labels.items() if c in declared]


def default(kind: str, name: str):
    """The declared default; an enum's item identifier (capitals) for a parameter with choices."""
    p = PARAMS[kind][name]
    return p["default"].upper() if p["choices"] and isinstance(p["default"], str) else p["default"]
