"""The one triangle rasteriser of the backend (numpy; no OpenGL, display or GPU): meshes seen by
a camera (landmark renders, depth views of procedural scans, evaluation pictures) and UV
layouts seen flat (maps: every texel's triangle).

Conventions: camera space is OpenCV's (x right, y down, z forward); pixel (row, col) covers
[col, col + 1) x [row, row + 1) in continuous image coordinates, its centre at
(col + 0.5, row + 0.5). A pixel belongs to the nearest triangle whose closed interior holds its
centre; at equal depth the triangle with the lowest index wins.

Vectorised and single-threaded on purpose (torch's thread pool made it 3-10x slower whenever the
two CPU cores were shared): triangles are grouped by the power-of-two size of their pixel
bounding box and every candidate pixel of a group is tested at once; the nearest triangle per
pixel wins through np.minimum.at over a 64-bit key (quantised depth << 32 | triangle id), and
the winner's barycentrics are then recomputed exactly (perspective-correct).
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Camera", "rasterize"]

_MAX_CANDIDATES = 1 << 20     # candidate pixels tested per chunk (~40 bytes each at the peak)
_DEPTH_BITS = 30               # key = quantised depth << 32 | triangle id


@dataclasses.dataclass
class Camera:
    """A pinhole (perspective) or orthographic camera.

    rotation: (3, 3) world -> camera rotation; its rows are the camera's right, down and forward
    axes in world coordinates. position: (3,) the centre of projection (perspective) or a point on
    the image plane's axis (orthographic), in world coordinates. focal: pixels per unit of
    x/z (perspective); scale: pixels per world unit (orthographic). (cx, cy): the principal point
    in continuous pixel coordinates.
    """
    rotation: np.ndarray
    position: np.ndarray
    width: int
    height: int
    projection: str = "perspective"   # or "orthographic"
    focal: float = 1.0
    scale: float = 1.0
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self):
        self.rotation = np.asarray(self.rotation, np.float64).reshape(3, 3)
        self.position = np.asarray(self.position, np.float64).reshape(3)
        if self.projection not in ("perspective", "orthographic"):
            raise ValueError(f"projection must be 'perspective' or 'orthographic', "
                             f"not {self.projection!r}")
        if self.cx is None:
            self.cx = self.width / 2.0
        if self.cy is None:
            self.cy = self.height / 2.0

    @property
    def view_direction(self) -> np.ndarray:
        """The direction the camera looks along (world coordinates)."""
        return self.rotation[2].copy()

    def to_camera(self, points) -> np.ndarray:
        p = np.asarray(points, np.float64)
        return (p - self.position) @ self.rotation.T

    def project(self, points) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> continuous pixel coordinates (..., 2) as (x=col, y=row), and
        camera-space depth (...)."""
        c = self.to_camera(points)
        z = c[..., 2]
        if self.projection == "perspective":
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = self.focal * c[..., :2] / z[..., None]
        else:
            xy = self.scale * c[..., :2]
        xy = xy + np.array([self.cx, self.cy])
        return xy, z

    def pixel_footprint(self, depth) -> np.ndarray:
        """World-space size of one pixel at camera-space depth `depth`."""
        if self.projection == "perspective":
            return np.asarray(depth, np.float64) / self.focal
        return np.full(np.shape(depth), 1.0 / self.scale)


def _screen_space(camera: Camera, vertices: np.ndarray):
    """Vertices -> (x, y) pixel coordinates, camera depth z, and the screen-affine depth key
    (orthographic: z; perspective: -1/z; smaller is nearer)."""
    c = camera.to_camera(vertices)
    z = c[:, 2]
    if camera.projection == "perspective":
        zs = np.where(z > 1e-12, z, np.nan)
        xy = camera.focal * c[:, :2] / zs[:, None]
        key = -1.0 / zs
    else:
        xy = camera.scale * c[:, :2]
        key = z.copy()
    xy = xy + np.array([camera.cx, camera.cy])
    return xy, z, key


def rasterize(camera: Camera, vertices, faces, near: float | None = None, cull_back: bool = False,
              coverage: np.ndarray | None = None):
    """Z-buffer rasterisation of pixel centres.

    Returns (tri_id (H, W) int32 with -1 for background, bary (H, W, 3) float32 perspective-correct,
    depth (H, W) float32 camera-space z with inf for background). `cull_back` drops triangles
    wound clockwise in the image (facing away under counter-clockwise winding); `coverage`, an
    (H * W,) int array when given, is incremented at every pixel whose centre lies strictly
    inside a triangle (overlapping UV charts show as counts above 1).
    """
    H, W = int(camera.height), int(camera.width)
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    tri_out = np.full((H, W), -1, np.int32)
    bary_out = np.zeros((H, W, 3), np.float32)
    depth_out = np.full((H, W), np.inf, np.float32)
    if len(f) == 0 or len(v) == 0:
        return tri_out, bary_out, depth_out
    if len(f) >= 2 ** 31:
        raise ValueError("too many triangles for the rasteriser (2^31)")

    xy, z, key = _screen_space(camera, v)
    if near is None:
        near = 1e-9
    ok_v = np.isfinite(xy).all(1) & np.isfinite(key)
    if camera.projection == "perspective":
        ok_v &= z > near                       # triangles crossing the near plane are dropped
    key = np.nan_to_num(key)
    tri_ok = ok_v[f].all(1)
    ft = np.ascontiguousarray(f.T)
    X0, X1, X2 = np.nan_to_num(xy[:, 0])[ft]                          # (F,) corner columns
    Y0, Y1, Y2 = np.nan_to_num(xy[:, 1])[ft]                          # (F,) corner rows
    area2 = (X1 - X0) * (Y2 - Y0) - (Y1 - Y0) * (X2 - X0)
    tri_ok &= np.abs(area2) > 1e-12
    if cull_back:
        tri_ok &= area2 > 0
    # first / last pixel whose centre lies inside the bounding box, clipped to the image
    lo_x = np.maximum(np.ceil(np.minimum(np.minimum(X0, X1), X2) - 0.5), 0)
    lo_y = np.maximum(np.ceil(np.minimum(np.minimum(Y0, Y1), Y2) - 0.5), 0)
    hi_x = np.minimum(np.floor(np.maximum(np.maximum(X0, X1), X2) - 0.5), W - 1)
    hi_y = np.minimum(np.floor(np.maximum(np.maximum(Y0, Y1), Y2) - 0.5), H - 1)
    tri_ok &= (hi_x >= lo_x) & (hi_y >= lo_y)
    idx = np.nonzero(tri_ok)[0]
    if len(idx) == 0:
        return tri_out, bary_out, depth_out

    # quantise the depth key over the vertices of the triangles that can be seen
    kk = key[f[idx]]                                                  # (N, 3)
    kmin, kmax = float(kk.min()), float(kk.max())
    with np.errstate(over="ignore", divide="ignore"):
        kscale = ((1 << _DEPTH_BITS) - 1) / (kmax - kmin) if kmax > kmin else 0.0
    if not np.isfinite(kscale):
        kscale = 0.0                           # a flat scene: every depth key is the same
    kk = (kk - kmin) * kscale

    lo_i = np.stack([lo_x[idx], lo_y[idx]], 1).astype(np.int64)
    size = np.stack([hi_x[idx], hi_y[idx]], 1).astype(np.int64) - lo_i + 1   # (N, 2) bbox w, h
    # Everything tested per pixel is affine in the pixel position, so it is set up per triangle:
    # value(col, row) = value at the bbox's first pixel centre + d/dcol * j + d/drow * i, for
    # w0, w1 (normalised edge functions: barycentrics in screen space, positive inside for
    # either winding) and the screen-affine depth key.
    ai = area2[idx]
    cx0 = lo_i[:, 0] + 0.5
    cy0 = lo_i[:, 1] + 0.5
    coef = np.empty((len(idx), 3, 3))                                  # (w0, w1, zkey) x (c, dj, di)
    # w0 = cross(p2 - p1, P - p1) / area, w1 = cross(p0 - p2, P - p2) / area
    for k, (xa, ya, xb, yb) in enumerate(((X1, Y1, X2, Y2), (X2, Y2, X0, Y0))):
        ex, ey = (xb[idx] - xa[idx]) / ai, (yb[idx] - ya[idx]) / ai
        coef[:, k, 0] = ex * (cy0 - ya[idx]) - ey * (cx0 - xa[idx])
        coef[:, k, 1] = -ey
        coef[:, k, 2] = ex
    # zkey = w0 k0 + w1 k1 + (1 - w0 - w1) k2
    d0, d1 = kk[:, 0] - kk[:, 2], kk[:, 1] - kk[:, 2]
    coef[:, 2, 0] = coef[:, 0, 0] * d0 + coef[:, 1, 0] * d1 + kk[:, 2]
    coef[:, 2, 1] = coef[:, 0, 1] * d0 + coef[:, 1, 1] * d1
    coef[:, 2, 2] = coef[:, 0, 2] * d0 + coef[:, 1, 2] * d1

    # group triangles by the power-of-two bucket of their bounding box width and height
    bw = np.ceil(np.log2(size[:, 0])).astype(np.int64)
    bh = np.ceil(np.log2(size[:, 1])).astype(np.int64)
    group = bw * 64 + bh
    order = np.argsort(group, kind="stable")
    groups, counts = np.unique(group[order], return_counts=True)

    empty = np.iinfo(np.int64).max
    zbuf = np.full(H * W, empty, np.int64)
    qmax = float((1 << _DEPTH_BITS) - 1)
    start = 0
    for g, n in zip(groups.tolist(), counts.tolist()):
        sel = order[start:start + n]
        start += n
        gw, gh = 1 << (g // 64), 1 << (g % 64)
        chunk = max(1, _MAX_CANDIDATES // (gw * gh))
        jj = np.tile(np.arange(gw, dtype=np.float64), gh)[None]       # (1, per)
        ii = np.repeat(np.arange(gh, dtype=np.float64), gw)[None]
        for c0 in range(0, n, chunk):
            s = sel[c0:c0 + chunk]
            c = coef[s]                                                # (n, 3, 3)
            w0 = c[:, 0, 0, None] + c[:, 0, 1, None] * jj + c[:, 0, 2, None] * ii
            w1 = c[:, 1, 0, None] + c[:, 1, 1, None] * jj + c[:, 1, 2, None] * ii
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w0 + w1 <= 1.0 + 1e-9)
            if gw > 1:
                inside &= jj < size[s, 0, None]
            if gh > 1:
                inside &= ii < size[s, 1, None]
            if coverage is not None:
                strict = inside & (w0 > 1e-7) & (w1 > 1e-7) & (w0 + w1 < 1.0 - 1e-7)
                r2, c2 = np.nonzero(strict)
                np.add.at(coverage, (lo_i[s[r2], 1] + ii[0, c2].astype(np.int64)) * W
                          + lo_i[s[r2], 0] + jj[0, c2].astype(np.int64), 1)
            rows, cols = np.nonzero(inside)
            if not len(rows):
                continue
            ts = s[rows]
            jc, ic = jj[0, cols], ii[0, cols]
            zq = c[rows, 2, 0] + c[rows, 2, 1] * jc + c[rows, 2, 2] * ic
            zq = np.clip(zq, 0.0, qmax).astype(np.int64)
            pix = (lo_i[ts, 1] + ic.astype(np.int64)) * W + lo_i[ts, 0] + jc.astype(np.int64)
            np.minimum.at(zbuf, pix, (zq << 32) | idx[ts])

    pix = np.nonzero(zbuf != empty)[0]
    if len(pix) == 0:
        return tri_out, bary_out, depth_out
    tri = zbuf[pix] & 0xFFFFFFFF
    # exact (unquantised) barycentrics of the winner at each pixel centre
    px = (pix % W) + 0.5
    py = (pix // W) + 0.5
    x0, x1, x2 = X0[tri], X1[tri], X2[tri]
    y0, y1, y2 = Y0[tri], Y1[tri], Y2[tri]
    a = area2[tri]
    w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / a
    w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / a
    b = np.clip(np.stack([w0, w1, 1.0 - w0 - w1], 1), 0.0, 1.0)
    tz = z[f[tri]]                                                    # (N, 3) camera depth
    if camera.projection == "perspective":
        b = b / tz                                                    # perspective correction
    b /= b.sum(1, keepdims=True)
    tri_out.reshape(-1)[pix] = tri
    bary_out.reshape(-1, 3)[pix] = b
    depth_out.reshape(-1)[pix] = (b * tz).sum(1)
    return tri_out, bary_out, depth_out
