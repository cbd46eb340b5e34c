"""A gallery of generated heads: n samples of a generator on one identity (the model's neutral
template, so what differs from tile to tile is the generator's doing), each seen from the front
and three-quarter, rendered by the backend's own rasteriser (fit.render). Skin is light grey, and
the surface darkens towards brown with the displacement's length (0 at the skin, full at
`hair_mm`), so hair volumes read at a glance.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..compute import Compute
from ..fit.render import camera_for_head, render_mesh
from ..generate.checkpoint import cached_generator
from ..generate.sample import sample_maps
from ..layout.maps import apply_map, dense_base, mapped_head

SKIN = np.array([0.80, 0.78, 0.76])
HAIR = np.array([0.36, 0.24, 0.15])
VIEWS = (0.0, 40.0)          # yaw in degrees: front, three-quarter (towards the subject's left)


@dataclasses.dataclass
class Gallery:
    image: np.ndarray                 # (rows * tile, columns * 2 * tile, 3) uint8
    tiles: list[np.ndarray]           # per head: (tile, 2 * tile, 3) uint8, front | three-quarter
    seeds: list[int]
    hair_mm: list[float]              # per head: the 95th percentile of its displacement length (mm)


def gallery(checkpoint: str = "", model: str = "openhead", n: int = 16, seed: int = 1, psi: float = 0.7,
            tile: int = 192, columns: int = 4, hair_mm: float = 10.0, device: str = "cpu") -> Gallery:
    """n heads (seeds seed .. seed + n - 1, truncation psi) of `checkpoint` ("" = the bundled
    demo generator), `columns` heads a row, two views each."""
    if n < 1 or columns < 1 or tile < 16:
        raise ValueError("a gallery needs n >= 1 heads, columns >= 1 and tiles of 16 pixels or more")
    compute = Compute(device)
    head = mapped_head(compute, {"model": model})
    G, _ = cached_generator(compute, checkpoint)
    base = dense_base(compute, head).astype(np.float64)
    faces = head.dense.faces
    lo, hi = base.min(0), base.max(0)
    centre = (lo + hi) / 2
    centre[1] = lo[1] + 0.64 * (hi[1] - lo[1])          # the head, not the neck, in the middle
    radius = 0.5 * float((hi - lo).max())
    cams = [camera_for_head(centre=centre, radius=radius, yaw_deg=yaw, pitch_deg=5.0, image_size=tile,
                            fov_deg=20.0) for yaw in VIEWS]
    seeds = list(range(seed, seed + n))
    tiles, lengths = [], []
    for start in range(0, n, 16):                      # batched sampling: one map alone costs ~10x more
        for m in sample_maps(G, seeds[start:start + 16], psi):
            disp = apply_map(compute, head, m, base)["displacement"].astype(np.float64)
            length = np.linalg.norm(disp, axis=1) * 1e3
            t = np.clip(length / hair_mm, 0.0, 1.0)[:, None]
            colors = SKIN * (1 - t) + HAIR * t
            final = base + disp
            tiles.append(np.concatenate([render_mesh(final, faces, cam, colors=colors, shading=0.85).image
                                         for cam in cams], axis=1))
            lengths.append(float(np.percentile(length, 95)))
    blank = np.full_like(tiles[0], 255)
    padded = tiles + [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(padded[r:r + columns], axis=1) for r in range(0, len(padded), columns)]
    return Gallery(np.concatenate(rows, axis=0), tiles, seeds, lengths)
