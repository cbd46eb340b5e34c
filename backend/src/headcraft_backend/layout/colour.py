"""Colour of a scan baked onto a head's layout by nearest-surface projection (the texture
transfer of ReFLAME, seeds/003): every texel's point on the fitted detailed head takes the colour
of the closest point of the scan surface (its vertex colours, or its texture through its UVs).
"""
from __future__ import annotations

import numpy as np

from ..head.dense import closest_point_barycentric, nearest_triangles
from .texels import Raster


def sample_image(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookups of an (H, W, C) image (row 0 at the top) at UVs, wrapping like a texture."""
    h, w = img.shape[:2]
    uv = np.asarray(uv, np.float64) % 1.0
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    get = lambda yy, xx: img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # noqa: E731
    return ((1 - fx) * (1 - fy) * get(y0, x0) + fx * (1 - fy) * get(y0, x0 + 1)
            + (1 - fx) * fy * get(y0 + 1, x0) + fx * fy * get(y0 + 1, x0 + 1))


def unit_colours(a: np.ndarray) -> np.ndarray:
    """Colours as floats in [0, 1]: integer arrays (8- or 16-bit) are scaled by their range."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float64) / np.iinfo(a.dtype).max
    return a.astype(np.float64)


def bake_colour(raster: Raster, head_faces: np.ndarray, head_vertices: np.ndarray,
                scan_vertices: np.ndarray, scan_faces: np.ndarray, colors: np.ndarray | None = None,
                scan_uv: np.ndarray | None = None, texture: np.ndarray | None = None,
                progress=None) -> np.ndarray:
    """(size, size, 3) float colours in [0, 1]; texels outside the layout are black.
    The head and the scan must be in the same frame. Colours come from `colors` (per scan
    vertex) or from `texture` sampled at `scan_uv` (per scan triangle corner), as floats in
    [0, 1] or integers (8- or 16-bit)."""
    if colors is None and (scan_uv is None or texture is None):
        raise ValueError("the scan has neither vertex colours nor a texture")
    hv = np.asarray(head_vertices, np.float64)
    pts = np.einsum("nk,nkd->nd", raster.bary.astype(np.float64), hv[np.asarray(head_faces)[raster.face]])
    sv = np.asarray(scan_vertices, np.float64)
    sf = np.asarray(scan_faces, np.int64)
    out = np.zeros((raster.size * raster.size, 3), np.float32)
    chunk = 100_000
    for s in range(0, len(pts), chunk):
        if progress:
            progress(s / max(len(pts), 1))
        p = pts[s:s + chunk]
        tri = nearest_triangles(p, sv, sf, k=8)
        t = sv[sf[tri]]
        bary = closest_point_barycentric(p, t[:, 0], t[:, 1], t[:, 2])
        if colors is not None:
            col = np.einsum("nk,nkc->nc", bary, unit_colours(colors)[sf[tri]])
        else:
            assert texture is not None    # refused above when neither is given
            uv = np.einsum("nk,nkd->nd", bary, np.asarray(scan_uv, np.float64)[tri])
            col = sample_image(unit_colours(texture), uv)[:, :3]
        out[raster.texel[s:s + chunk]] = np.clip(col, 0, 1)
    return out.reshape(raster.size, raster.size, 3)

