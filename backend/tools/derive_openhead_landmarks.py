"""Derive OpenHead's MediaPipe landmark embedding (all 478 face mesh + iris points).

    python backend/tools/derive_openhead_landmarks.py            # writes the asset
    python backend/tools/derive_openhead_landmarks.py --check    # derive and report, write nothing

Output: ``backend/src/headcraft_backend/assets/openhead-1-landmarks.npz`` (no pickle) with
  * ``mediapipe_index`` (478,) int32 -- MediaPipe landmark id 0..477
  * ``faces``           (478,) int32 -- OpenHead triangle (-1 where the landmark is not valid)
  * ``bary``            (478, 3) float32 -- barycentric coordinates in that triangle
  * ``valid``           (478,) bool  -- found on the surface in enough of the runs
  * ``spread_mm``       (478,) float32 -- median distance (mm, on the template) of the individual
    runs' points from the chosen one: how consistently the detector places the landmark; a
    natural per-landmark weight for fitting
  * ``meta_json``       uint8 -- JSON: how it was made (seed, identities, detector version)

How: the OpenHead template and NUM_IDENTITIES random identities (shape coefficients ~ N(0, 1)
times IDENTITY_SCALE, neutral expression) are each rendered grey-shaded (the model has no
texture) and run through the same pipeline scans use (:func:`detect_landmarks`: front view,
then a view turned to the face's estimated direction and framed on the face). Every detection is
lifted to a (triangle, barycentric) pair on the shared topology and mapped onto the *template*
with the same pair. Per landmark, the coordinate-wise median of those template points is
computed and the run whose point is nearest to it (the medoid) supplies the stored
(triangle, barycentric): always a real point on the surface. A landmark is valid when it landed
on the surface in at least MIN_VALID_FRACTION of the runs.

Deterministic up to MediaPipe's own numerics (fixed seed). Takes about half a minute.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "backend" / "src"))

from headcraft_backend.fit.landmarks import (  # noqa: E402
    FIT_LANDMARKS, NUM_MEDIAPIPE_LANDMARKS, OPENHEAD_LANDMARK_ASSET, REGIONS, detect_landmarks,
)
from headcraft_backend.head.registry import load_model_data  # noqa: E402

ASSET_DIR = REPO / "backend" / "src" / "headcraft_backend" / "assets"
SEED = 20251123
NUM_IDENTITIES = 40
IDENTITY_SCALE = 1.0
MIN_VALID_FRACTION = 0.8


def derive(verbose: bool = True) -> dict:
    import mediapipe
    data = load_model_data({"model": "openhead"})
    template = data.v_template.astype(np.float64)
    faces = data.faces.astype(np.int64)
    rng = np.random.default_rng(SEED)
    L = NUM_MEDIAPIPE_LANDMARKS
    samples_tri, samples_bary, samples_valid, samples_pt = [], [], [], []
    failures = 0
    t0 = time.time()
    for i in range(NUM_IDENTITIES + 1):
        coeffs = np.zeros(data.num_shape) if i == 0 else rng.normal(size=data.num_shape) * IDENTITY_SCALE
        verts = template + np.einsum("vck,k->vc", data.shapedirs.astype(np.float64), coeffs)
        try:
            res = detect_landmarks(verts, faces, keep_render=False)
        except Exception as exc:  # noqa: BLE001 - a failed identity is reported and skipped
            failures += 1
            if verbose:
                print(f"identity {i}: no face ({exc})")
            continue
        pt = np.full((L, 3), np.nan)
        ok = res.valid
        pt[ok] = np.einsum("nk,nkc->nc", res.bary[ok].astype(np.float64), template[faces[res.faces[ok]]])
        samples_tri.append(res.faces)
        samples_bary.append(res.bary)
        samples_valid.append(ok)
        samples_pt.append(pt)
        if verbose:
            print(f"identity {i}: yaw {res.yaw_deg:+.1f}, {ok.sum()} valid, "
                  f"confidence {res.confidence:.2f}")
    if len(samples_tri) < max(3, NUM_IDENTITIES // 2):
        raise RuntimeError(f"only {len(samples_tri)} of {NUM_IDENTITIES + 1} renders gave a face")
    tri = np.stack(samples_tri)             # (R, L)
    bary = np.stack(samples_bary)           # (R, L, 3)
    valid = np.stack(samples_valid)         # (R, L)
    pts = np.stack(samples_pt)              # (R, L, 3) on the template
    R = len(tri)

    out_tri = np.full(L, -1, np.int32)
    out_bary = np.zeros((L, 3), np.float32)
    out_valid = np.zeros(L, bool)
    spread = np.full(L, np.nan, np.float32)
    for j in range(L):
        ok = valid[:, j]
        if ok.sum() < MIN_VALID_FRACTION * R:
            continue
        p = pts[ok, j]
        med = np.median(p, axis=0)
        k = int(np.argmin(np.linalg.norm(p - med, axis=1)))
        run = np.nonzero(ok)[0][k]
        out_tri[j] = tri[run, j]
        out_bary[j] = bary[run, j]
        out_valid[j] = True
        spread[j] = float(np.median(np.linalg.norm(p - p[k], axis=1))) * 1000.0
    out_bary[out_valid] /= out_bary[out_valid].sum(1, keepdims=True)
    meta = {"seed": SEED, "identities": NUM_IDENTITIES + 1, "runs_with_face": int(R),
            "identity_scale": IDENTITY_SCALE, "min_valid_fraction": MIN_VALID_FRACTION,
            "mediapipe": getattr(mediapipe, "__version__", "?"),
            "model": f"{data.name} {data.version}", "num_faces": int(len(faces)),
            "tool": "backend/tools/derive_openhead_landmarks.py"}
    result = dict(mediapipe_index=np.arange(L, dtype=np.int32), faces=out_tri, bary=out_bary,
                  valid=out_valid, spread_mm=spread,
                  meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    if verbose:
        print(f"{R} runs with a face, {failures} without, {time.time() - t0:.1f} s")
        print(f"valid landmarks: {out_valid.sum()} / {L}; FIT_LANDMARKS valid: "
              f"{out_valid[FIT_LANDMARKS].sum()} / {len(FIT_LANDMARKS)}")
        for name, idx in REGIONS.items():
            s = spread[list(idx)]
            print(f"  {name:11s} spread median {np.nanmedian(s):.2f} mm, max {np.nanmax(s):.2f} mm")
    _check(result, len(faces))
    return result


def _check(a: dict, num_faces: int) -> None:
    L = NUM_MEDIAPIPE_LANDMARKS
    assert a["mediapipe_index"].shape == (L,) and a["faces"].shape == (L,)
    assert a["bary"].shape == (L, 3)
    v = a["valid"]
    assert v[FIT_LANDMARKS].all(), "a fitting landmark is not valid on OpenHead"
    assert (a["faces"][v] >= 0).all() and (a["faces"][v] < num_faces).all()
    assert (a["bary"][v] >= -1e-6).all() and np.allclose(a["bary"][v].sum(1), 1, atol=1e-5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="derive and report; write nothing")
    ap.add_argument("--out", type=Path, default=ASSET_DIR / OPENHEAD_LANDMARK_ASSET)
    args = ap.parse_args(argv)
    result = derive()
    if not args.check:
        np.savez_compressed(args.out, **result)
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
