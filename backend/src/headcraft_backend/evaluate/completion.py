"""Completion of single depth views on procedural heads with ground truth (`build.py eval`): the
error of the part the view does not see (back of the head, hair) for the completed head, the
fitted template alone (no displacement) and the PCA baseline's completion.

Each head is seen by one pinhole depth camera in front of the face (procedural depth_view); the
depth image goes through the same path as `headcraft-backend complete --depth`. The landmarks are
the ground truth's (in the camera frame), so the table measures completion, not landmark
detection. All three rows share each head's partial registration; the error is the distance from
each truth vertex the view does not see to the row's surface (mm).
"""
from __future__ import annotations

import time

import numpy as np

from ..compute import Compute
from ..fit.depth import Intrinsics
from ..fit.landmarks import model_landmark_embedding
from ..fit.metrics import surface_distances
from ..generate.checkpoint import cached_generator
from ..generate.complete import CompletionOptions, complete_map, complete_scan, depth_scan
from ..layout.maps import apply_map, mapped_head
from ..procedural.scans import depth_view, make_scan

COMPLETION_SEED = 1_000_500        # held apart from training sets (seeds below 1,000,000)
HAIR = ("bob", "short", "long")    # hair the back of the head has to be completed with
ROWS = ("completed (HeadCraft)", "PCA baseline", "template, no displacement")


def unseen_errors(data, checkpoint: str, pca: str | None, options: CompletionOptions, n: int = 3,
                  device: str = "auto", report=print) -> dict[str, list[np.ndarray]]:
    """Row name -> per head, the unseen truth vertices' distances (mm) to the row's head."""
    compute = Compute(device)
    head = mapped_head(compute, {"model": data.name})
    G, _ = cached_generator(compute, checkpoint)
    P = cached_generator(compute, pca)[0] if pca else None
    idx, tri, bary = model_landmark_embedding(data)
    rows: dict[str, list[np.ndarray]] = {r: [] for r in ROWS if P is not None or r != "PCA baseline"}
    for i in range(n):
        t = time.perf_counter()
        synth = make_scan(data, COMPLETION_SEED + i, hair=HAIR[i % len(HAIR)], holes=0, junk=False, scale=1.0,
                          neck_hair=False)
        view = depth_view(synth)
        true_lmk = synth.to_scan((synth.model_vertices[synth.model_faces[tri]] * bary[:, :, None]).sum(1))
        lmk = (true_lmk - view.position) @ view.rotation.T           # scan frame -> camera frame
        scan = depth_scan(view.depth, Intrinsics(*view.intrinsics), f"depth view {i}")
        done = complete_scan(compute, head, G, scan, options, dict(zip(idx.tolist(), lmk)))
        heads = {ROWS[0]: done.final, ROWS[2]: done.base}
        if P is not None:
            m = complete_map(P, done.partial_map, done.mask, options)[0]
            heads[ROWS[1]] = done.base + apply_map(compute, head, m, done.base)["displacement"]
        unseen = synth.truth_vertices[~view.truth_seen]
        sim = done.fit.coarse.similarity
        for name, verts in heads.items():      # fitted frame -> camera -> scan -> the truth's model frame
            model = synth.to_model(view.to_scan(sim.apply(np.asarray(verts, np.float64))))
            rows[name].append(surface_distances(unseen, model, head.dense.faces) * 1000.0)
        report(f"head {i + 1} of {n} (seed {COMPLETION_SEED + i}, hair {synth.hair}): {len(unseen):,} unseen truth "
               f"vertices, {done.visibility.mean():.0%} of the head registered as seen, "
               f"{time.perf_counter() - t:.0f} s")
    return rows


def format_table(rows: dict[str, list[np.ndarray]]) -> str:
    """Median and 95th percentile per head and the mean of the medians, per row (mm)."""
    n = len(next(iter(rows.values())))
    heads = "  ".join(f"{f'head {i + 1} med / p95':>17}" for i in range(n))
    lines = [f"{'unseen part, truth -> result (mm)':<34}{heads}  {'mean median':>11}"]
    for name, errs in rows.items():
        cells = "  ".join(f"{np.median(e):>8.2f} / {np.percentile(e, 95):>6.2f}" for e in errs)
        lines.append(f"{name:<34}{cells}  {np.mean([np.median(e) for e in errs]):>11.2f}")
    return "\n".join(lines)
