"""`headcraft-backend eval-fit`: fit procedural scans with known ground truth and report the
distance of the result to the true surface per region (mm), stage 1 vs stage 2, and new
self-intersections on the face."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..head.model import HeadModel
from ..errors import UserError
from ..fit.landmarks import model_landmark_embedding
from ..fit.metrics import count_self_intersections, fit_report, format_table
from ..fit.pipeline import FitOptions, fit_scan
from ..fit.scan import sanitize
from ..head.dense import dense_template
from ..procedural.scans import make_scan
from ..units import to_metres

HAIR_STYLES = ("none", "short", "long")
# The fit moves only the scalp in stage 1 and freezes the neck (the paper's method), so the
# suite puts hair volume on the scalp: long hair hanging over the neck is out of its reach.
NECK_HAIR = False


def _to_true_model_frame(result_model, fitted_sim, scan) -> np.ndarray:
    """Fitted model frame -> scan frame -> the synthetic head's true model frame."""
    in_scan = fitted_sim.apply(result_model)
    return (in_scan - scan.translation) @ scan.rotation / scan.scale


def evaluate(data, n: int = 3, options: FitOptions | None = None, seed: int = 100,
             report=print) -> list[dict]:
    model = HeadModel(data)
    dense = dense_template(data)
    options = options or FitOptions(preset="preview")
    rows = []
    for i in range(n):
        hair = HAIR_STYLES[i % len(HAIR_STYLES)]
        synth = make_scan(data, seed + i, hair=hair, neck_hair=NECK_HAIR)
        scan = sanitize(synth.vertices, synth.faces, synth.colors, name=f"synthetic scan {seed + i}")
        # The orientation hints a user gives by importing the scan upright (here: exact).
        opts = dataclasses.replace(options, up=tuple(synth.rotation @ [0.0, 1.0, 0.0]),
                                   forward=tuple(synth.rotation @ [0.0, 0.0, 1.0]))
        t = time.perf_counter()
        try:
            res, landmarks = fit_scan(model, dense, scan, opts), "detected"
        except UserError as exc:  # the detector missed this face: measure the registration anyway
            report(f"scan {seed + i}: {exc}; using ground-truth landmarks")
            idx, tri, bary = model_landmark_embedding(data)
            truth_lmk = synth.to_scan((synth.model_vertices[synth.model_faces[tri]] * bary[:, :, None]).sum(1))
            res, landmarks = fit_scan(model, dense, scan, opts, dict(zip(idx.tolist(), truth_lmk))), "ground truth"
        seconds = time.perf_counter() - t
        sim = res.coarse.similarity
        truth = (synth.truth_vertices, synth.truth_faces, synth.truth_regions)
        reports = {}
        for name, verts in (("stage 1", to_metres(res.registration.stage1)), ("stage 2", res.final)):
            reports[name] = fit_report(_to_true_model_frame(verts, sim, synth), dense.faces, dense.regions,
                                       *truth, mm_per_unit=1000.0)
        face = dense.regions["face"]
        crossings = {name: count_self_intersections(v, dense.faces, face, within=True)
                     for name, v in (("template", res.base), ("result", res.final))}
        row = {"seed": seed + i, "hair": hair, "seconds": seconds, "reports": reports, "landmarks": landmarks,
               "face_self_intersections": crossings, "notes": scan.notes}
        rows.append(row)
        report(f"\nscan {seed + i} (hair: {hair}, {landmarks} landmarks, fitted in {seconds:.0f} s; "
               f"face self-intersections template {crossings['template']} -> result {crossings['result']})")
        report(format_table(reports["stage 2"]))
        s1, s2 = (reports[k]["regions"]["face"]["result_to_scan"]["median"] for k in ("stage 1", "stage 2"))
        report(f"face median result->truth: stage 1 {s1:.3f} mm, stage 2 {s2:.3f} mm")
    return rows


def summary(rows: list[dict]) -> str:
    """Targets of the Fit-a-scan issue, per scan (every scan must meet them)."""
    def per_scan(region=None, stat="median", stage="stage 2"):
        return [(r["reports"][stage]["regions"][region] if region else r["reports"][stage]["head"])
                ["result_to_scan"][stat] for r in rows]

    def listed(vals):
        return ", ".join(f"{r['hair']} {v:.3f}" for r, v in zip(rows, vals))

    face, head95 = per_scan("face"), per_scan(None, "p95")
    s1 = per_scan("face", stage="stage 1")
    new_x = [r["face_self_intersections"]["result"] - r["face_self_intersections"]["template"] for r in rows]
    ok = lambda c: "ok" if c else "MISSED"  # noqa: E731
    detected = sum(r["landmarks"] == "detected" for r in rows)
    return "\n".join([
        f"landmarks detected automatically on {detected} of {len(rows)} scans (hair volume on the scalp)",
        f"face median, mm (target <= 0.5): {listed(face)}: {ok(max(face) <= 0.5)}",
        f"whole-head 95th percentile, mm (target <= 2): {listed(head95)}: {ok(max(head95) <= 2.0)}",
        f"stage 2 better than stage 1 on the face (stage 1 face median): {listed(s1)}: "
        f"{ok(all(b < a for a, b in zip(s1, face)))}",
        f"new face self-intersections per scan: {new_x}: {ok(max(new_x) <= 0)}",
    ])
