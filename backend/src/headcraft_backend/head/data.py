"""The arrays that define a parametric head model, independent of where they came from.

Frame and units for every head model: metres, Y up, face towards +Z (FLAME's convention).
The Blender side converts to Z up at one place (headcraft_blender/meshdata.py).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NoReturn

import numpy as np

from ..errors import HeadModelError

FORMAT_VERSION = 1
JOINT_NAMES = ("global", "neck", "jaw", "eye_L", "eye_R")
PARENTS = (-1, 0, 1, 1, 1)
# Region masks every model provides (vertex indices into v_template).
REGION_NAMES = ("face", "scalp", "neck", "ears", "eyeballs", "eye_region", "nose", "lips",
                "inner_mouth")


@dataclasses.dataclass
class HeadModelData:
    name: str                      # "openhead" or "flame"
    version: str                   # e.g. "1.0" or "2020"
    v_template: np.ndarray         # (V, 3) float32
    faces: np.ndarray              # (F, 3) int32
    uv: np.ndarray                 # (F, 3, 2) float32, per triangle corner
    shapedirs: np.ndarray          # (V, 3, S) float32, one unit of coefficient per column
    exprdirs: np.ndarray           # (V, 3, E) float32
    expr_names: list[str]          # E names (ARKit names for OpenHead, Exp000... for FLAME)
    J_regressor: np.ndarray        # (J, V) float32, rows sum to 1
    lbs_weights: np.ndarray        # (V, J) float32, rows sum to 1
    regions: dict[str, np.ndarray]  # name -> int32 vertex indices
    posedirs: np.ndarray | None = None   # (P, V*3) float32 pose correctives, P = 9 * (J - 1)
    landmark_faces: np.ndarray | None = None  # (L,) int32 triangle per landmark
    landmark_bary: np.ndarray | None = None   # (L, 3) float32 barycentric coordinates
    parents: tuple[int, ...] = PARENTS
    joint_names: tuple[str, ...] = JOINT_NAMES
    licence: str = ""

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    def validate(self, source: str = "head model") -> "HeadModelData":
        """Check shapes, finiteness and index ranges; raise HeadModelError naming `source`."""
        def fail(msg: str) -> NoReturn:
            raise HeadModelError(f"{source}: {msg}")

        V = self.v_template.shape[0] if self.v_template.ndim == 2 else -1
        if self.v_template.ndim != 2 or self.v_template.shape[1] != 3 or V < 4:
            fail(f"v_template must be (V, 3), got {self.v_template.shape}")
        J = len(self.joint_names)
        checks: dict[str, tuple[np.ndarray, tuple[int | None, ...]]] = {
            "faces": (self.faces, (None, 3)),
            "uv": (self.uv, (self.faces.shape[0], 3, 2)),
            "shapedirs": (self.shapedirs, (V, 3, None)),
            "exprdirs": (self.exprdirs, (V, 3, None)),
            "J_regressor": (self.J_regressor, (J, V)),
            "lbs_weights": (self.lbs_weights, (V, J)),
        }
        if self.posedirs is not None:
            checks["posedirs"] = (self.posedirs, (9 * (J - 1), V * 3))
        if self.landmark_faces is not None:
            L = self.landmark_faces.shape[0]
            if self.landmark_bary is None:
                fail("landmark_faces without landmark_bary")
            checks["landmark_bary"] = (self.landmark_bary, (L, 3))
            if L and (self.landmark_faces.min() < 0 or self.landmark_faces.max() >= len(self.faces)):
                fail("landmark_faces index triangles that do not exist")
        for key, (arr, shape) in checks.items():
            if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
                fail(f"{key} has shape {arr.shape}, expected {shape} (None = any)")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                fail(f"{key} contains NaN or infinite values")
        if not np.isfinite(self.v_template).all():
            fail("v_template contains NaN or infinite values")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            fail("faces index vertices that do not exist")
        if len(self.expr_names) != self.exprdirs.shape[2]:
            fail(f"{len(self.expr_names)} expression names for {self.exprdirs.shape[2]} expressions")
        if len(self.parents) != J or self.parents[0] != -1:
            fail(f"parents {self.parents} do not describe a tree of {J} joints")
        for name, idx in self.regions.items():
            if idx.size and (idx.min() < 0 or idx.max() >= V):
                fail(f"region {name!r} indexes vertices that do not exist")
        return self

    # -- compact on-disk form (npz without pickle) ------------------------------------------
    def save_npz(self, path: str | Path) -> None:
        meta = {"format_version": FORMAT_VERSION, "name": self.name, "version": self.version,
                "expr_names": list(self.expr_names), "joint_names": list(self.joint_names),
                "parents": list(self.parents), "licence": self.licence}
        arrays: dict[str, np.ndarray] = {
            "meta_json": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "v_template": self.v_template.astype(np.float32),
            "faces": self.faces.astype(np.int32),
            "uv": self.uv.astype(np.float32),
            "shapedirs": self.shapedirs.astype(np.float32),
            "exprdirs": self.exprdirs.astype(np.float32),
            "J_regressor": self.J_regressor.astype(np.float32),
            "lbs_weights": self.lbs_weights.astype(np.float32),
        }
        if self.posedirs is not None:
            arrays["posedirs"] = self.posedirs.astype(np.float32)
        if self.landmark_faces is not None:
            assert self.landmark_bary is not None, "validate() refuses landmark_faces without landmark_bary"
            arrays["landmark_faces"] = self.landmark_faces.astype(np.int32)
            arrays["landmark_bary"] = self.landmark_bary.astype(np.float32)
        for name, idx in self.regions.items():
            arrays[f"region__{name}"] = np.asarray(idx, np.int32)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path) -> "HeadModelData":
        path = Path(path)
        if not path.is_file():
            raise HeadModelError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta_json"]).decode())
                if meta.get("format_version") != FORMAT_VERSION:
                    raise HeadModelError(f"{path}: format version {meta.get('format_version')} "
                                         f"is not {FORMAT_VERSION}")
                get = lambda k: np.array(z[k])  # noqa: E731
                data = cls(
                    name=meta["name"], version=meta["version"],
                    v_template=get("v_template"), faces=get("faces"), uv=get("uv"),
                    shapedirs=get("shapedirs"), exprdirs=get("exprdirs"),
                    expr_names=list(meta["expr_names"]), J_regressor=get("J_regressor"),
                    lbs_weights=get("lbs_weights"),
                    regions={k[len("region__"):]: get(k) for k in z.files if k.startswith("region__")},
                    posedirs=get("posedirs") if "posedirs" in z.files else None,
                    landmark_faces=get("landmark_faces") if "landmark_faces" in z.files else None,
                    landmark_bary=get("landmark_bary") if "landmark_bary" in z.files else None,
                    parents=tuple(meta["parents"]), joint_names=tuple(meta["joint_names"]),
                    licence=meta.get("licence", ""),
                )
        except HeadModelError:
            raise
        except Exception as exc:  # zip errors, missing keys, bad JSON
            raise HeadModelError(f"{path}: not a readable head model file ({exc})") from exc
        return data.validate(str(path))
