"""docs/images/completion.jpg: a procedural head seen by one front depth camera, completed by the
bundled demo generator (`complete_scan`, the path of `headcraft-backend complete --depth`):
partial input | completed head | ground truth, from the front-left and from behind.

    PYTHONPATH=backend/src .venv/bin/python tools/completion_picture.py [--steps 250] [--latent-steps 500]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from headcraft_backend.compute import Compute
from headcraft_backend.fit.depth import Intrinsics
from headcraft_backend.fit.landmarks import model_landmark_embedding
from headcraft_backend.fit.pipeline import fit_options
from headcraft_backend.fit.render import camera_for_head, render_mesh
from headcraft_backend.generate.checkpoint import DEMO_MODEL, cached_generator
from headcraft_backend.generate.complete import complete_scan, completion_options, depth_scan
from headcraft_backend.generate.fit_latent import LatentFitSettings
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.layout.maps import mapped_head
from headcraft_backend.procedural.scans import depth_view, make_scan

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "completion.jpg"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1_000_500)
    ap.add_argument("--hair", default="bob")
    ap.add_argument("--steps", type=int, default=250, help="registration steps per stage")
    ap.add_argument("--latent-steps", type=int, default=500, help="steps of each latent-fit stage")
    args = ap.parse_args()
    data = load_model_data({"model": "openhead"})
    synth = make_scan(data, args.seed, hair=args.hair, holes=0, junk=False, scale=1.0, neck_hair=False)
    view = depth_view(synth)
    idx, tri, bary = model_landmark_embedding(data)
    lmk = synth.to_scan((synth.model_vertices[synth.model_faces[tri]] * bary[:, :, None]).sum(1))
    lmk = (lmk - view.position) @ view.rotation.T
    compute = Compute("cpu")
    head = mapped_head(compute, {"model": "openhead"})
    G, _ = cached_generator(compute, str(DEMO_MODEL))
    n = args.latent_steps
    options = completion_options(
        fit_options("preview", partial=True, coarse={"scale": 1.0}, stage1={"steps": args.steps},
                    stage2={"steps": args.steps}),
        LatentFitSettings(steps_z=n, steps_delta=n, steps_noise=n))
    done = complete_scan(compute, head, G, depth_scan(view.depth, Intrinsics(*view.intrinsics)), options,
                         dict(zip(idx.tolist(), lmk)))
    completed = synth.to_model(view.to_scan(done.fit.coarse.similarity.apply(done.final.astype(np.float64))))
    seen_faces = synth.truth_faces[view.truth_seen[synth.truth_faces].all(1)]
    meshes = [(synth.truth_vertices, seen_faces), (completed, head.dense.faces),
              (synth.truth_vertices, synth.truth_faces)]
    rows = []
    for yaw in (35.0, 160.0):
        cam = camera_for_head(synth.truth_vertices, yaw, image_size=360)
        rows.append(np.concatenate([render_mesh(v, f, cam).image for v, f in meshes], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(OUT, quality=85)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB); {done.visibility.mean():.0%} of the head seen")


if __name__ == "__main__":
    main()
