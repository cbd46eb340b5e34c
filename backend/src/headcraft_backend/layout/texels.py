"""Maps over a UV layout: rasterise, bake per-vertex values, post-process seams, sample back.

Conventions (REFERENCE section 3): maps are (H, W, C) arrays, row 0 at the top (v = 1);
texel (row i, column j) has its centre at u = (j + 0.5) / W, v = 1 - (i + 0.5) / H; sampling is
bilinear between texel centres, clamped at the border.

Everything after rasterisation is linear in the map, so each step is a sparse matrix built once
per (layout, resolution) and reused for every map:
  fill   every empty texel takes its nearest covered texel (the Voronoi fill of supp. A.2),
  seams  texels within `SEAM_BLEND` texels of a seam are corrected towards the mean of both sides
         of the seam, fully at the seam and linearly less inwards (supp. A.2's copy and blend in
         one step; nearest seam points are searched in the texel's own chart only),
  sample bilinear lookups at per-corner UVs, averaged over each vertex's corners.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from ..raster import Camera, rasterize as rasterize_camera

SEAM_BLEND = 10.0          # texels over which a seam correction fades out (supp. A.2)
SEAM_REACH = 1.5           # texels: the band treated as "on the seam" (covers bilinear stencils)
GUTTER = 2.0              # texels around each chart that hold the field extrapolated


@dataclasses.dataclass
class Raster:
    """Which triangle covers each texel with a value (charts plus gutter), and where in it."""
    size: int
    texel: np.ndarray      # (N,) int64 flat index row * size + col, sorted, unique
    face: np.ndarray       # (N,) int32
    bary: np.ndarray       # (N, 3) float32
    overlaps: int          # texels claimed by more than one triangle's interior
    gutter: np.ndarray     # (N,) bool: texel lies outside its triangle (extrapolated)

    @property
    def mask(self) -> np.ndarray:
        """Texels holding a value (charts and gutter)."""
        m = np.zeros(self.size * self.size, bool)
        m[self.texel] = True
        return m.reshape(self.size, self.size)

    @property
    def covered(self) -> np.ndarray:
        """Texels inside a chart."""
        m = np.zeros(self.size * self.size, bool)
        m[self.texel[~self.gutter]] = True
        return m.reshape(self.size, self.size)


def texel_coords(uv: np.ndarray, size: int) -> np.ndarray:
    """UVs -> continuous (x = column, y = row) coordinates in which texel centres are integers."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], -1)


def rasterize(uv: np.ndarray, size: int, gutter: float = GUTTER) -> Raster:
    """Texels whose centre lies in a triangle of the per-corner UVs (F, 3, 2) (the lowest
    triangle index wins where charts overlap), plus a gutter of `gutter` texels around every
    chart: the backend's rasteriser looking straight at the UV square."""
    uv = np.asarray(uv, np.float64)
    p = texel_coords(uv, size)                                  # (F, 3, 2)
    flat = Camera(rotation=np.diag([1.0, -1.0, -1.0]), position=np.zeros(3), width=size, height=size,
                  projection="orthographic", scale=float(size), cx=0.0, cy=float(size))
    corners = np.concatenate([uv.reshape(-1, 2), np.zeros((uv.size // 2, 1))], 1)
    counts = np.zeros(size * size, np.int64)
    tri_id, bary_img, _ = rasterize_camera(flat, corners, np.arange(len(corners)).reshape(-1, 3), coverage=counts)
    texel = np.flatnonzero(tri_id.ravel() >= 0)
    face = tri_id.ravel()[texel].astype(np.int64)
    bary = bary_img.reshape(-1, 3)[texel].astype(np.float64)
    overlaps = int(np.maximum(counts - 1, 0).sum())
    if gutter > 0 and len(texel):
        # texels just outside the charts extrapolate their nearest covered texel's triangle, so
        # bilinear lookups at chart borders see the field continued, not a copy
        empty = np.ones(size * size, bool)
        empty[texel] = False
        dist, (iy, ix) = distance_transform_edt(empty.reshape(size, size), return_indices=True)
        near = np.flatnonzero((dist.ravel() > 0) & (dist.ravel() <= gutter))
        src = np.searchsorted(texel, (iy * size + ix).ravel()[near])
        gface = face[src]
        gy, gx = np.divmod(near, size)
        gbary = _barycentric(p[gface], np.stack([gx, gy], 1).astype(np.float64))
        ok = (gbary > -1.0).all(1)          # never from a sliver far away
        texel = np.concatenate([texel, near[ok]])
        face = np.concatenate([face, gface[ok]])
        bary = np.concatenate([bary, gbary[ok]])
        outside = np.concatenate([np.zeros(len(texel) - ok.sum(), bool), np.ones(ok.sum(), bool)])
        order = np.argsort(texel)
        texel, face, bary, outside = texel[order], face[order], bary[order], outside[order]
    else:
        outside = np.zeros(len(texel), bool)
    return Raster(size, texel, face.astype(np.int32), bary.astype(np.float32), int(overlaps), outside)


def _barycentric(tri: np.ndarray, pts: np.ndarray) -> np.ndarray:
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, pts - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-30, np.nan, den)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    out = np.stack([1 - l1 - l2, l1, l2], 1)
    return np.nan_to_num(out, nan=-1.0)


def bake(raster: Raster, faces: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex values (V, C), or per-corner values (F, 3, C), -> (size, size, C) float32 map
    and its coverage mask (charts only, without the gutter)."""
    values = np.asarray(values, np.float32)
    corner = values[raster.face] if values.ndim == 3 else values[faces[raster.face]]   # (N, 3, C)
    out = np.zeros((raster.size * raster.size, values.shape[1]), np.float32)
    out[raster.texel] = np.einsum("nk,nkc->nc", raster.bary, corner)
    return out.reshape(raster.size, raster.size, -1), raster.covered


def bilinear_matrix(uv: np.ndarray, size: int) -> sp.csr_matrix:
    """(P, size*size) rows that bilinearly sample a flattened map at P UVs."""
    xy = texel_coords(np.asarray(uv).reshape(-1, 2), size)
    xy = np.clip(xy, 0, size - 1)
    x0 = np.minimum(np.floor(xy[:, 0]).astype(np.int64), size - 2 if size > 1 else 0)
    y0 = np.minimum(np.floor(xy[:, 1]).astype(np.int64), size - 2 if size > 1 else 0)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    rows = np.repeat(np.arange(len(xy)), 4)
    cols = np.stack([y0 * size + x0, y0 * size + x1, y1 * size + x0, y1 * size + x1], 1).ravel()
    w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1).ravel()
    return sp.csr_matrix((w, (rows, cols)), shape=(len(xy), size * size))


# ------------------------------------------------------------------------------------------------
# Seams and sampling
# ------------------------------------------------------------------------------------------------
def _edge_twins(faces: np.ndarray, uv: np.ndarray):
    """Every interior edge once: (E, 2, 2, 2) UVs [side][end] with the ends of side 1 matched
    to side 0's, and (E, 2) the two triangles."""
    F = len(faces)
    a = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    ca = np.concatenate([np.stack([np.arange(F) * 3 + i, np.arange(F) * 3 + (i + 1) % 3], 1) for i in range(3)])
    key = np.sort(a, 1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, a, ca = key[order], a[order], ca[order]
    i = np.flatnonzero((key[1:] == key[:-1]).all(1))
    flat = uv.reshape(-1, 2)
    s0, s1 = flat[ca[i]], flat[ca[i + 1]]
    swap = a[i, 0] != a[i + 1, 0]
    s1 = np.where(swap[:, None, None], s1[:, ::-1], s1)
    return np.stack([s0, s1], 1), np.stack([ca[i, 0] // 3, ca[i + 1, 0] // 3], 1)


def seam_edges(faces: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mesh edges whose two triangles give their ends different UVs: (S, 2, 2, 2) UVs
    [side][end] (side 0 = one triangle, side 1 = the other) and (S, 2) those triangles."""
    sides, pair = _edge_twins(faces, uv)
    differ = np.abs(sides[:, 0] - sides[:, 1]).max((1, 2)) > 1e-7
    return sides[differ], pair[differ]


def chart_labels(faces: np.ndarray, uv: np.ndarray, twins=None) -> np.ndarray:
    """Chart (UV island) of every triangle: triangles sharing an edge with equal UVs."""
    sides, pair = twins if twins is not None else _edge_twins(faces, uv)
    joined = np.abs(sides[:, 0] - sides[:, 1]).max((1, 2)) <= 1e-7
    a, b = pair[joined].T
    A = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(faces), len(faces)))
    return sp.csgraph.connected_components(A, directed=False)[1]


@dataclasses.dataclass
class MapOperators:
    """Sparse operators over flattened (size*size, C) maps for one layout and resolution."""
    size: int
    raster: Raster
    process: sp.csr_matrix      # fill + seam correction: processed = process @ map
    fill: sp.csr_matrix         # the fill alone (tangent-space maps: the two sides of a seam
                                # have different frames, so their values must not be averaged)
    corners: sp.csr_matrix      # (3F, size*size) bilinear lookups at every triangle corner
    average: sp.csr_matrix      # (V, 3F) mean over each vertex's corners
    sample: sp.csr_matrix       # average @ corners: per-vertex values from a processed map
    seam_samples: np.ndarray    # (S, 2, 2) matching UV points on both sides of seams (for checks)

    def processed(self, m: np.ndarray) -> np.ndarray:
        flat = np.asarray(m, np.float32).reshape(self.size * self.size, -1)
        return (self.process @ flat).astype(np.float32).reshape(self.size, self.size, -1)

    def apply(self, m: np.ndarray) -> np.ndarray:
        """Per-vertex values (V, C) from a raw map: fill, seams, bilinear, corner average."""
        flat = np.asarray(m, np.float32).reshape(self.size * self.size, -1)
        return np.asarray(self.sample @ (self.process @ flat), np.float32)

    def apply_corners(self, m: np.ndarray, seams: bool = True) -> np.ndarray:
        """Per-corner values (F, 3, C) from a raw map (for tangent-space maps)."""
        flat = np.asarray(m, np.float32).reshape(self.size * self.size, -1)
        pre = self.process if seams else self.fill
        return np.asarray(self.corners @ (pre @ flat), np.float32).reshape(-1, 3, flat.shape[1])


def map_operators(faces: np.ndarray, uv: np.ndarray, num_vertices: int, size: int,
                  raster: Raster | None = None, seams: bool = True) -> MapOperators:
    faces = np.asarray(faces, np.int64)
    uv = np.asarray(uv, np.float64)
    raster = raster if raster is not None else rasterize(uv, size)
    n = size * size
    covered = raster.mask       # charts and gutter hold values; the fill covers the rest
    if not covered.any():
        raise ValueError("the layout covers no texel at this resolution")
    # Voronoi fill: each empty texel copies its nearest covered texel
    _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
    nearest = (iy * size + ix).ravel()
    fill = sp.csr_matrix((np.ones(n), (np.arange(n), nearest)), shape=(n, n))
    process = fill
    samples = np.zeros((0, 2, 2))
    if seams:
        correction, samples = _seam_correction(faces, uv, raster, size, nearest)
        process = ((sp.identity(n, format="csr") + correction) @ fill).tocsr()
    # bilinear lookups at every corner, averaged per vertex
    corner_rows = bilinear_matrix(uv, size)
    vert = faces.ravel()
    counts = np.bincount(vert, minlength=num_vertices).astype(np.float64)
    avg = sp.csr_matrix((1.0 / np.maximum(counts[vert], 1), (vert, np.arange(len(vert)))),
                        shape=(num_vertices, len(vert)))
    sample = (avg @ corner_rows).tocsr().astype(np.float32)
    return MapOperators(size, raster, process.astype(np.float32).tocsr(), fill.astype(np.float32),
                        corner_rows.astype(np.float32),
                        avg.astype(np.float32), sample, samples)


def _seam_correction(faces, uv, raster: Raster, size: int, nearest: np.ndarray):
    """Sparse C with processed = (I + C) @ filled: texels near a seam move towards the mean of
    the two sides at their nearest seam point (same chart), weight 1 - d / SEAM_BLEND.
    `nearest`: the filled texel each texel copies (the Voronoi fill)."""
    n = size * size
    twins = _edge_twins(faces, uv)
    seam = np.abs(twins[0][:, 0] - twins[0][:, 1]).max((1, 2)) > 1e-7
    edges, pair = twins[0][seam], twins[1][seam]                 # (S, side, end, 2), (S, 2)
    if len(edges) == 0:
        return sp.csr_matrix((n, n)), np.zeros((0, 2, 2))
    chart_of_face = chart_labels(faces, uv, twins)
    px = texel_coords(edges, size)                               # (S, 2, 2, 2)
    length = np.linalg.norm(px[:, :, 1] - px[:, :, 0], axis=-1).max(1)
    steps = np.maximum(np.ceil(length * 4).astype(np.int64), 1)  # a point every 1/4 texel
    e = np.repeat(np.arange(len(edges)), steps + 1)
    t = (np.arange(len(e)) - np.repeat(np.concatenate([[0], np.cumsum(steps + 1)[:-1]]), steps + 1)) / steps[e]
    pts = edges[e, :, 0] * (1 - t)[:, None, None] + edges[e, :, 1] * t[:, None, None]   # (P, 2, 2) uv
    side_chart = chart_of_face[pair][e]                                                # (P, 2)
    # the chart of every texel: covered ones from their triangle, empty ones from the fill
    tex_chart = np.full(n, -1, np.int64)
    tex_chart[raster.texel] = chart_of_face[raster.face]
    tex_chart = tex_chart[nearest]
    # search seam points per chart: a large offset per chart keeps charts apart in one tree
    gap = 4.0 * size
    own = np.concatenate([pts[:, 0], pts[:, 1]])                 # point on its own side
    other = np.concatenate([pts[:, 1], pts[:, 0]])
    chart = np.concatenate([side_chart[:, 0], side_chart[:, 1]])
    key_pts = texel_coords(own, size) + np.stack([chart * gap, np.zeros_like(chart)], 1)
    tree = cKDTree(key_pts)
    ty, tx = np.divmod(np.arange(n), size)
    q = np.stack([tx + tex_chart * gap, ty], 1).astype(np.float64)
    dist, nearest = tree.query(q, distance_upper_bound=SEAM_BLEND)
    near = np.isfinite(dist)
    tex = np.flatnonzero(near)
    w = np.clip(1.0 - np.maximum(dist[near] - SEAM_REACH, 0) / (SEAM_BLEND - SEAM_REACH), 0, 1)
    s = nearest[near]
    # correction = w * (mean of both sides - own side) = w/2 * (other - own), bilinear on the map
    B_other = bilinear_matrix(other[s], size)
    B_own = bilinear_matrix(own[s], size)
    C = sp.diags(0.5 * w) @ (B_other - B_own)                   # (len(tex), n)
    rows = sp.csr_matrix((np.ones(len(tex)), (tex, np.arange(len(tex)))), shape=(n, len(tex)))
    return (rows @ C).tocsr(), np.stack([pts[:, 0], pts[:, 1]], 1)


def convert_matrix(faces: np.ndarray, src_uv: np.ndarray, src: MapOperators, dst_uv: np.ndarray,
                   dst_size: int) -> sp.csr_matrix:
    """(dst_size^2, src_size^2): a map in one layout resampled into another layout of the same
    mesh (per-corner UVs of both), through the source's fill and seam processing. Texels outside
    the destination's charts and gutter stay zero."""
    r = rasterize(dst_uv, dst_size)
    where = np.einsum("nk,nkd->nd", r.bary.astype(np.float64), np.asarray(src_uv, np.float64)[r.face])
    rows = bilinear_matrix(where, src.size) @ src.process
    place = sp.csr_matrix((np.ones(len(r.texel)), (r.texel, np.arange(len(r.texel)))),
                          shape=(dst_size * dst_size, len(r.texel)))
    return (place @ rows).tocsr().astype(np.float32)
