"""The range of procedural heads (backend procedural/scans.py, `Look`): 24 scans, three-quarter
view, vertex colours. `PYTHONPATH=backend/src .venv/bin/python tools/procedural_heads.py` writes
docs/images/procedural_heads.jpg (~2 min on 2 cores)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "procedural_heads.jpg"
TILE = 256
COLUMNS = 6
# Seeds 0-15 as random_look draws them, then 8 with one feature fixed, so every kind shows.
FIXED: list[dict[str, object]] = [dict(hair="afro", length_mm=70.0, curl=0.9), dict(headwear="turban", headwear_mm=120.0),
                                  dict(headwear="cap", headwear_mm=60.0, hair="crop"), dict(hair="bun", beard="none", headwear="none"),
                                  dict(hair="ponytail", headwear="none"), dict(beard="long", beard_mm=60.0, hair="medium", age=70.0),
                                  dict(hair="buzz", recession=0.9, beard="moustache", beard_mm=8.0, headwear="none"),
                                  dict(headwear="beanie", headwear_mm=8.0, hair="long")]


def _head_part(scan) -> np.ndarray:
    """The true surface above the lowest eighth (the neck stump) (hair, headwear and beards included)."""
    v = scan.truth_vertices
    lo, hi = v[:, 1].min(), v[:, 1].max()
    return v[v[:, 1] > lo + 0.12 * (hi - lo)]


def head_centre(scan) -> np.ndarray:
    """The middle of the head's bounding box: every head centred in its tile, whatever it wears."""
    v = _head_part(scan)
    return (v.min(0) + v.max(0)) / 2


def head_radius(scan) -> float:
    """Half the bounding box's largest side, a little more: the head fills its tile."""
    v = _head_part(scan)
    return 0.58 * float((v.max(0) - v.min(0)).max())


def main() -> int:
    from PIL import Image
    from headcraft_backend.fit.render import camera_for_head, render_mesh
    from headcraft_backend.head.registry import load_model_data
    from headcraft_backend.procedural.scans import make_scan, random_look

    data = load_model_data({"model": "openhead"})
    looks = [random_look(seed) for seed in range(16)] + [random_look(100 + i, **f) for i, f in enumerate(FIXED)]
    tiles = []
    for i, look in enumerate(looks):
        scan = make_scan(data, 200 + i, look=look, similarity=False, junk=False, shoulders=True, holes=0)
        cam = camera_for_head(centre=head_centre(scan), radius=head_radius(scan), yaw_deg=35.0, pitch_deg=8.0,
                              image_size=TILE, fov_deg=20.0)
        tiles.append(render_mesh(scan.vertices, scan.faces, cam, colors=scan.colors, shading=0.8).image)
        print(f"{i + 1}/{len(looks)}: {look.hair} {look.length_mm:.0f} mm, beard {look.beard}, "
              f"headwear {look.headwear}, age {look.age:.0f}", flush=True)
    rows = [np.concatenate(tiles[r:r + COLUMNS], 1) for r in range(0, len(tiles), COLUMNS)]
    Image.fromarray(np.concatenate(rows, 0)).save(OUT, quality=85)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
