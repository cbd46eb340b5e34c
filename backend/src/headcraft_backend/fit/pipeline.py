"""Fit a scan end to end: landmarks -> coarse 3DMM fit -> dense template -> two-stage
displacements -> error figures. Used by the `fit.scan` job and `headcraft-backend fit`."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..head.model import HeadModel
from ..errors import UserError
from .coarse import CoarseFit, CoarseSettings, fit_coarse
from .register import RegistrationResult, RegistrationSettings, Registration, preset
from .scan import Scan
from ..head.dense import DenseRebuild, DenseTemplate
from ..units import MM_PER_UNIT, to_metres, to_units

Report = Callable[[float, str, str], None]


@dataclasses.dataclass
class FitOptions:
    preset: str = "paper"                 # "paper" (1000 + 1000 steps) or "preview"
    convention: str = "default"           # registration losses (fit/register.py CONVENTIONS)
    partial: bool = False                 # a single depth view or a sparse cloud
    sparse: bool = False
    num_points: int = 200_000             # scan surface samples used by the registration
    up: tuple = (0.0, 1.0, 0.0)           # scan-frame hints for the landmark renders
    forward: tuple = (0.0, 0.0, 1.0)
    coarse: CoarseSettings = dataclasses.field(default_factory=CoarseSettings)
    registration: RegistrationSettings | None = None   # overrides preset/convention/partial
    seed: int = 0

    def registration_settings(self) -> RegistrationSettings:
        if self.registration is not None:
            return self.registration
        s = preset(self.preset, self.convention, self.partial)
        s.sparse, s.seed = self.sparse, self.seed
        return s


def fit_options(preset: str = "paper", convention: str = "default", partial: bool = False,
                sparse: bool = False, num_points: int = 200_000, up=(0.0, 1.0, 0.0), forward=(0.0, 0.0, 1.0),
                seed: int = 0, coarse: dict | None = None, stage1: dict | None = None,
                stage2: dict | None = None, stage2_mode: str | None = None) -> FitOptions:
    """FitOptions from a preset plus overrides, checked: coarse (CoarseSettings fields),
    stage1/stage2 (StageSettings fields: steps, lr, w_chamfer, w_edge, w_laplacian, prune...),
    stage2_mode ("scalar" or "vector"). UserError for anything a fit cannot use."""
    try:
        opts = FitOptions(preset=preset, convention=convention, partial=partial, sparse=sparse,
                          num_points=int(num_points), up=up, forward=forward, seed=int(seed))
        opts.coarse = dataclasses.replace(CoarseSettings(), **(coarse or {}))
        reg = opts.registration_settings()
        for key, override in (("stage1", stage1), ("stage2", stage2)):
            if override:
                setattr(reg, key, dataclasses.replace(getattr(reg, key), **override))
        if stage2_mode is not None:
            if stage2_mode not in ("scalar", "vector"):
                raise ValueError(f"stage2_mode must be 'scalar' or 'vector', not {stage2_mode!r}")
            reg.stage2_mode = stage2_mode
        opts.registration = reg
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad fit settings: {exc}") from None
    c = opts.coarse
    if (c.scale is not None and not c.scale > 0) or min(c.w_landmarks, c.w_surface, c.w_shape, c.w_expr,
                                                        c.w_pose, c.w_jaw_side, c.hair_weight) < 0:
        raise UserError(f"bad coarse-fit settings: {c}")
    for s in (opts.registration.stage1, opts.registration.stage2):
        if s.steps < 0 or s.lr <= 0 or min(s.w_chamfer, s.w_edge, s.w_laplacian, s.prune) < 0:
            raise UserError(f"bad fit settings: {s}")
    if not 1000 <= opts.num_points <= 5_000_000:
        raise UserError(f"num_points {opts.num_points}: choose 1,000 to 5,000,000 scan samples")
    return opts


@dataclasses.dataclass
class FitResult:
    coarse: CoarseFit
    registration: RegistrationResult
    base: np.ndarray              # (Vd, 3) dense template of the fitted 3DMM, model frame, metres
    final: np.ndarray             # (Vd, 3) detailed head, model frame, metres
    displacement: np.ndarray      # (Vd, 3) final - base, metres
    vertex_error_mm: np.ndarray   # (Vd,) distance of each detailed vertex to the scan
    report: dict                  # per-region error figures (mm)
    landmarks_used: int
    notes: list[str]

    def arrays(self, dense: DenseTemplate) -> dict[str, np.ndarray]:
        """The detailed head as it is sent and saved: dense mesh, base, final, displacement,
        errors, the coarse head and, for a partial fit, the visibility (float32 and int32)."""
        out = {"dense_faces": dense.faces.astype(np.int32), "dense_uv": dense.uv.astype(np.float32),
               "base": self.base.astype(np.float32), "final": self.final.astype(np.float32),
               "displacement": self.displacement.astype(np.float32),
               "vertex_error_mm": self.vertex_error_mm.astype(np.float32),
               "coarse_vertices": self.coarse.vertices.astype(np.float32)}
        if self.registration.visibility is not None:
            out["visibility"] = self.registration.visibility.astype(np.uint8)
        return out


def scan_landmarks(scan: Scan, options: FitOptions, manual: dict[int, np.ndarray] | None,
                   report: Report) -> dict[int, np.ndarray]:
    """MediaPipe index -> scan-frame point, from the user's points or the detector."""
    if manual:
        return {int(k): np.asarray(v, np.float64) for k, v in manual.items()}
    from .landmarks import detect_landmarks_on_scan
    report(0.0, "landmarks", "rendering the scan and detecting the face")
    found = detect_landmarks_on_scan(scan, up=options.up, forward=options.forward)
    return {int(i): found.points[i] for i in np.flatnonzero(found.valid)}


def fit_scan(model: HeadModel, dense: DenseTemplate, scan: Scan, options: FitOptions,
             manual_landmarks: dict[int, np.ndarray] | None = None, report: Report | None = None,
             device="cpu") -> FitResult:
    report = report or (lambda f, s, m: None)
    stage = lambda lo, hi: (lambda f, s, m: report(lo + (hi - lo) * f, s, m))  # noqa: E731
    from .landmarks import SURFACE_LANDMARKS, model_landmark_embedding
    lmk = scan_landmarks(scan, options, manual_landmarks, stage(0.0, 0.05))
    idx, tri, bary = model_landmark_embedding(model.data)
    # Only fixed surface points: no iris, no face-oval contour (it slides with the view), no brows.
    have = np.array([int(i) in lmk for i in idx]) & np.isin(idx, SURFACE_LANDMARKS)
    if have.sum() < 6:
        raise UserError(f"only {int(have.sum())} usable landmarks on the scan; at least 6 are needed "
                        f"(eye corners, nose tip, mouth corners): place them by hand")
    points = scan.sample_points(options.num_points, options.seed)
    targets = np.stack([lmk[int(i)] for i in idx[have]])
    coarse = fit_coarse(model, points, targets, tri[have], bary[have], options.coarse, stage(0.05, 0.15))
    rebuild = DenseRebuild(dense, model.data.faces).to(device)
    with torch.no_grad():
        base = rebuild(torch.as_tensor(coarse.vertices, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
    scan_units = to_units(coarse.similarity.inverse(points)).astype(np.float32)
    reg = Registration(to_units(base), dense.faces, dense.regions, scan_units,
                       options.registration_settings(), device, stage(0.15, 0.97)).run()
    final = to_metres(reg.final)
    notes = list(scan.notes)
    if reg.untangled:
        notes.append(f"{reg.untangled} face and hair vertices moved less so that no triangles cross or turn over")
    report(0.97, "errors", "measuring the fit")
    surface = None if scan.faces is None else (to_units(coarse.similarity.inverse(scan.vertices)), scan.faces)
    err, table = error_report(final, dense, scan_units, surface)
    return FitResult(coarse=coarse, registration=reg, base=base, final=final,
                     displacement=final - base, vertex_error_mm=err, report=table,
                     landmarks_used=int(have.sum()), notes=notes)


def error_report(final_m: np.ndarray, dense: DenseTemplate, scan_units: np.ndarray,
                 scan_surface: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Distances in mm of the model frame: result->scan per vertex (to the scan's surface when
    `scan_surface` (vertices in units, faces) is given, else to its nearest sample point) and
    scan->result per scan point to the nearest result vertex (assigned to that vertex's
    region), as `eval-real` measures; median and 95th percentile."""
    from .metrics import surface_distances
    final_units = to_units(final_m)
    d_rs, _ = cKDTree(scan_units).query(final_units, workers=-1)
    if scan_surface is not None:        # exact where the sample spacing matters (within 4 mm)
        near = d_rs < 0.5
        d_rs[near] = surface_distances(final_units[near], *scan_surface)
    d_sr, nearest = cKDTree(final_units).query(scan_units, workers=-1)
    d_rs, d_sr = d_rs * MM_PER_UNIT, d_sr * MM_PER_UNIT
    table = {"all": _stats(d_rs, d_sr)}
    for name, idx in dense.regions.items():
        member = np.zeros(len(final_m), bool)
        member[idx] = True
        table[name] = _stats(d_rs[member], d_sr[member[nearest]])
    return d_rs.astype(np.float32), table


def _stats(result_to_scan: np.ndarray, scan_to_result: np.ndarray) -> dict:
    """None where a region has no scan point nearest to it (the back of a head seen from the
    front): JSON has no NaN."""
    def q(a, p):
        return float(np.percentile(a, p)) if a.size else None
    return {"result_to_scan_median": q(result_to_scan, 50), "result_to_scan_p95": q(result_to_scan, 95),
            "scan_to_result_median": q(scan_to_result, 50), "scan_to_result_p95": q(scan_to_result, 95),
            "vertices": int(result_to_scan.size), "scan_points": int(scan_to_result.size)}


def format_report(table: dict) -> str:
    """The fit's own error figures (distances to the scan) as a fixed-width table."""
    lines = [f"{'region':<12} {'result->scan median':>20} {'p95':>7} {'scan->result median':>20} {'p95':>7}  (mm)"]
    def mm(v, width):
        return f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}"
    for name, r in table.items():
        lines.append(f"{name:<12} {mm(r['result_to_scan_median'], 20)} {mm(r['result_to_scan_p95'], 7)} "
                     f"{mm(r['scan_to_result_median'], 20)} {mm(r['scan_to_result_p95'], 7)}")
    return "\n".join(lines)
