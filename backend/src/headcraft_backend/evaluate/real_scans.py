"""Fit quality on real scans, which have no ground truth (`headcraft-backend eval-real`).

Per scan and region: distances result->scan and scan->result (median and 95th percentile, mm),
triangles folded over against the fitted template (normal reversed), new self-intersections,
the fraction of vertices whose normal turns more than 30 degrees from the scan's, and the
time; plus a picture per scan: scan | fitted | detailed | error colours, front and
three-quarter, rendered by the backend's own rasteriser (flat shading shows every crease).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..fit.metrics import self_intersecting_pairs, surface_distances
from ..fit.pipeline import FitOptions, fit_scan
from ..fit.render import camera_for_head, render_mesh, vertex_normals
from ..fit.scan import SCAN_SUFFIXES, Scan, load_scan_file
from ..head.dense import dense_template

REGIONS = ("face", "scalp", "ears", "neck")
NORMAL_TURN_DEG = 30.0


def find_scans(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SCAN_SUFFIXES)


def _face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def quality(base: np.ndarray, final: np.ndarray, faces: np.ndarray, regions: dict,
            scan_v: np.ndarray, scan_f: np.ndarray | None, scan_points: np.ndarray) -> dict:
    """The figures of one fit; all inputs in the model frame, metres."""
    mm = 1000.0
    d_rs = (surface_distances(final, scan_v, scan_f) if scan_f is not None
            else cKDTree(scan_v).query(final, workers=-1)[0]) * mm
    d_sr, nearest = cKDTree(final).query(scan_points, workers=-1)
    d_sr = d_sr * mm
    folded = (_face_normals(base, faces) * _face_normals(final, faces)).sum(1) < 0
    vn = vertex_normals(final, faces)
    if scan_f is not None:
        _, tri, _ = surface_distances(final, scan_v, scan_f, return_closest=True)
        sn = _face_normals(scan_v, scan_f)[tri]
    else:
        sn = Scan(scan_v, None).surface_normals(final)
    turned = np.degrees(np.arccos(np.clip(np.abs((vn * sn).sum(1)), 0, 1))) > NORMAL_TURN_DEG
    out = {}
    for name in REGIONS:
        member = np.zeros(len(final), bool)
        member[np.asarray(regions.get(name, []), np.int64)] = True
        if not member.any():
            continue
        tri_in = member[faces].all(1)
        new_x = len(self_intersecting_pairs(final, faces, member, within=True)) - \
            len(self_intersecting_pairs(base, faces, member, within=True))
        sr = d_sr[member[nearest]]
        out[name] = {"result_to_scan_median": float(np.median(d_rs[member])),
                     "result_to_scan_p95": float(np.percentile(d_rs[member], 95)),
                     "scan_to_result_median": float(np.median(sr)) if sr.size else float("nan"),
                     "scan_to_result_p95": float(np.percentile(sr, 95)) if sr.size else float("nan"),
                     "folded": int(folded[tri_in].sum()), "new_self_intersections": max(0, new_x),
                     "normal_turned": float(turned[member].mean())}
    return out


def _error_colours(err_mm: np.ndarray, limit: float = 2.0) -> np.ndarray:
    t = np.clip(err_mm / limit, 0, 1)[:, None]
    return (1 - t) * np.array([0.2, 0.75, 0.3]) + t * np.array([0.85, 0.15, 0.1])


def render_sheet(scan_v, scan_f, base, final, faces, err_mm, size: int = 360) -> np.ndarray:
    """(2 rows: front, three-quarter) x (scan, fitted, detailed, error colours), uint8 RGB."""
    centre = (final.min(0) + final.max(0)) / 2
    radius = float(np.linalg.norm(final - centre, axis=1).max()) * 1.05
    rows = []
    for yaw in (0.0, 35.0):
        cam = camera_for_head(centre=centre, radius=radius, yaw_deg=yaw, image_size=size)
        tiles = []
        if scan_f is not None:
            tiles.append(render_mesh(scan_v, scan_f, cam, smooth=False).image)
        else:
            tiles.append(render_mesh(final, faces, cam, colors=np.full((len(final), 3), 0.4)).image)
        tiles.append(render_mesh(base, faces, cam, smooth=False).image)
        tiles.append(render_mesh(final, faces, cam, smooth=False).image)
        tiles.append(render_mesh(final, faces, cam, colors=_error_colours(err_mm), shading=0.5).image)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def evaluate_scan(path: Path, model, options: FitOptions, out_dir: Path | None = None,
                  landmarks: dict | None = None, report=None) -> dict:
    """Fit one scan file; the figures (and the picture in out_dir)."""
    scan = load_scan_file(path)
    dense = dense_template(model.data)
    t = time.perf_counter()
    res = fit_scan(model, dense, scan, options, landmarks, report=report)
    seconds = time.perf_counter() - t
    sim = res.coarse.similarity
    scan_v = sim.inverse(np.asarray(scan.vertices, np.float64))
    points = sim.inverse(scan.sample_points(options.num_points, options.seed).astype(np.float64))
    figures = quality(res.base, res.final, dense.faces, dense.regions, scan_v,
                      scan.faces if scan.is_mesh else None, points)
    row: dict[str, Any] = {"scan": path.name, "seconds": seconds, "regions": figures,
           "landmarks_used": res.landmarks_used, "notes": res.notes}
    if out_dir is not None:
        from PIL import Image
        out_dir.mkdir(parents=True, exist_ok=True)
        sheet = render_sheet(scan_v, scan.faces if scan.is_mesh else None, res.base, res.final, dense.faces,
                             res.vertex_error_mm)
        row["picture"] = str(out_dir / f"{path.stem}.png")
        Image.fromarray(sheet).save(row["picture"])
    return row


def format_rows(rows: list[dict]) -> str:
    head = (f"{'scan':<22} {'region':<7} {'r->s med':>8} {'p95':>6} {'s->r med':>8} {'p95':>6} "
            f"{'folded':>6} {'new x':>6} {'>30deg':>7} {'time s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        for i, (name, f) in enumerate(r["regions"].items()):
            lines.append(f"{r['scan'] if i == 0 else '':<22} {name:<7} {f['result_to_scan_median']:>8.3f} "
                         f"{f['result_to_scan_p95']:>6.2f} {f['scan_to_result_median']:>8.3f} "
                         f"{f['scan_to_result_p95']:>6.2f} {f['folded']:>6d} {f['new_self_intersections']:>6d} "
                         f"{f['normal_turned']:>7.1%} {r['seconds'] if i == 0 else float('nan'):>7.0f}")
    return "\n".join(lines).replace("    nan", "       ")
