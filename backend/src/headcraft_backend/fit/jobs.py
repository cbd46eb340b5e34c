"""The `fit.scan` job: a scan (and optional hand-placed landmarks) in, a fitted head out."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..handlers import MODEL, Param, job
from ..head.dense import dense_template
from ..head.jobs import head_payload
from ..head.registry import get_model
from .pipeline import FitOptions, fit_options, fit_scan
from .register import CONVENTIONS
from .scan import sanitize

SCAN_PARAMS = {
    "name": Param("str", None, "the scan's name, for messages"),
    "up": Param("direction", [0, 1, 0], "the scan's up for the landmark renders; null or `\"auto\"`: search"),
    "forward": Param("direction", [0, 0, 1], "the way the face looks, as `up`"),
}
SCAN_ARRAYS = "scan arrays"


def directions(params: dict) -> tuple[tuple | None, tuple | None]:
    """The request's `up` and `forward` hints for the landmark renders: three numbers each
    (defaults +Y and +Z), or null / "auto" where unknown (the renders search for the face)."""
    out: list[tuple | None] = []
    for key, default in (("up", (0, 1, 0)), ("forward", (0, 0, 1))):
        value = params.get(key, default)
        if value is None or value == "auto":
            out.append(None)
            continue
        try:
            d = tuple(float(x) for x in value)
        except (TypeError, ValueError):
            d = ()
        if len(d) != 3 or not np.isfinite(d).all() or not any(d):
            raise UserError(f"'{key}' must be three numbers (a direction), null or \"auto\", not {value!r}")
        out.append(d)
    return out[0], out[1]


def options_from_params(params: dict) -> FitOptions:
    """A request's fit settings: preset, convention, partial/sparse, num_points, seed, up/forward
    and the per-stage overrides (`coarse`, `stage1`, `stage2`, `stage2_mode`; see fit_options)."""
    up, forward = directions(params)
    return fit_options(preset=params.get("preset", "paper"), convention=params.get("convention", "default"),
                       partial=bool(params.get("partial", False)), sparse=bool(params.get("sparse", False)),
                       num_points=params.get("num_points", 200_000), up=up, forward=forward,
                       seed=params.get("seed", 0), coarse=params.get("coarse"), stage1=params.get("stage1"),
                       stage2=params.get("stage2"), stage2_mode=params.get("stage2_mode"))


def _scan(params, arrays):
    if "vertices" not in arrays:
        raise UserError("no scan was sent (the 'vertices' array is missing)")
    return sanitize(arrays["vertices"], arrays.get("faces"), arrays.get("colors"),
                    name=params.get("name") or "the scan", texture=arrays.get("texture"), uv=arrays.get("uv"))


@job("fit.landmarks", SCAN_PARAMS, arrays=SCAN_ARRAYS,
     result="fields `yaw_deg confidence notes up forward` (the directions the face was found with); arrays "
            "`landmark_ids (K,) <i4` (MediaPipe indices), `landmark_points (K,3)` in the scan's frame",
     notes="Automatic landmarks on a scan, for the user to check and correct before fitting. Refused: no "
           "`vertices`, what scan clean-up refuses, a point cloud under 20,000 points.")
def detect_landmarks_job(ctx, params, arrays):
    """Automatic landmarks on a scan, for the user to check and correct before fitting."""
    from .landmarks import FIT_LANDMARKS, detect_landmarks_on_scan
    up, forward = directions(params)
    scan = _scan(params, arrays)
    ctx.progress(0.1, "landmarks", "rendering the scan and detecting the face")
    found = detect_landmarks_on_scan(scan, up=up, forward=forward, keep_render=False)
    ids = np.array([i for i in FIT_LANDMARKS if found.valid[i]], np.int32)
    return ({"yaw_deg": found.yaw_deg, "confidence": found.confidence, "notes": scan.notes,
             "up": found.up.tolist(), "forward": found.forward.tolist()},
            {"landmark_ids": ids, "landmark_points": found.points[ids].astype(np.float32)})


@job("fit.scan", {**MODEL, **SCAN_PARAMS,
                  "preset": Param("str", "paper", "1000 + 1000 or 250 + 250 registration steps",
                                  choices=("paper", "preview")),
                  "convention": Param("str", "default", "the registration's losses", choices=tuple(CONVENTIONS)),
                  "partial": Param("bool", False, "a single depth view or a partial scan"),
                  "sparse": Param("bool", False, "with `partial`: a sparse cloud"),
                  "num_points": Param("int", 200_000, "scan surface samples", lo=1000, hi=5_000_000),
                  "seed": Param("int", 0, "of the samples"),
                  "coarse": Param("dict", None, "fields of `CoarseSettings`, e.g. `scale` in scan units per metre, "
                                  "`w_landmarks`"),
                  "stage1": Param("dict", None, "fields of `StageSettings`: `steps lr w_chamfer w_edge "
                                  "w_laplacian prune` ..."),
                  "stage2": Param("dict", None, "as `stage1`"),
                  "stage2_mode": Param("str", None, "displacements along the normals", choices=("scalar", "vector"))},
     arrays="scan arrays; optional hand-placed `landmark_ids (K,)` with `landmark_points (K,3)` (scan frame)",
     result="fields `model version shape expr expr_names pose` (J lists of 3) `joint_names similarity {scale, "
            "rotation (9, row-major), translation} landmark_rmse_mm surface_median_mm landmarks_used report notes "
            "history` (last 4 steps) `head` (`head.build`'s fields); arrays `dense_faces (Fd,3) dense_uv (Fd,3,2) "
            "base final displacement (Vd,3) vertex_error_mm (Vd,) coarse_vertices (V,3)`, `visibility (Vd,) |u1` "
            "for a partial fit, `head__<name>`",
     notes="A scan (and optional hand-placed landmarks) in, a fitted head out. Refused before any work: an "
           "unknown settings field, a negative weight, `lr` <= 0, `scale` <= 0; landmark points that are not "
           "finite (K,3); then fewer than 6 usable landmarks; what scan clean-up refuses.")
def fit_scan_job(ctx, params, arrays):
    scan = _scan(params, arrays)
    manual = None
    if "landmark_ids" in arrays:
        ids, pts = arrays["landmark_ids"], arrays.get("landmark_points")
        if pts is None or pts.shape != (len(ids), 3) or not np.isfinite(pts).all():
            raise UserError("hand-placed landmarks must be finite (K, 3) points, one per id")
        manual = {int(i): p for i, p in zip(ids, pts)}
    options = options_from_params(params)
    model = get_model(ctx, params)
    ctx.progress(0.0, "dense template", "subdividing the template (cached after the first time)")
    dense = dense_template(model.data)
    res = fit_scan(model, dense, scan, options, manual, report=ctx.progress, device=ctx.device)
    sim = res.coarse.similarity
    fields = {
        "model": model.data.name, "version": model.data.version,
        "shape": res.coarse.shape.tolist(), "expr": res.coarse.expr.tolist(),
        "expr_names": list(model.data.expr_names), "pose": res.coarse.pose.tolist(),
        "joint_names": list(model.data.joint_names),
        "similarity": {"scale": sim.scale, "rotation": sim.rotation.ravel().tolist(),
                       "translation": sim.translation.tolist()},
        "landmark_rmse_mm": res.coarse.landmark_rmse_mm, "surface_median_mm": res.coarse.surface_median_mm,
        "landmarks_used": res.landmarks_used, "report": res.report, "notes": res.notes,
        "history": res.registration.history[-4:],
    }
    out = res.arrays(dense)
    # Everything Add Head needs, so Blender builds the fitted low-res head in the same step.
    head_fields, head_arrays = head_payload(model, len(res.coarse.shape), model.data.num_expr)
    fields["head"] = head_fields
    out.update({f"head__{k}": v for k, v in head_arrays.items()})
    return fields, out
