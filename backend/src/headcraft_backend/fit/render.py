"""A small offscreen triangle rasteriser for the backend (no OpenGL, no display, no GPU needed).

Renders a triangle mesh to an RGB image together with a per-pixel triangle id and barycentric
buffer, so that anything found in the image (face landmarks, a mask) can be lifted back to the
surface exactly: the 3D point under pixel centre ``(row, col)`` is
``sum_k bary[row, col, k] * vertices[faces[tri_id[row, col], k]]``.

Conventions
-----------
* Camera space is OpenCV's: x right, y down, z forward (into the screen); a pixel ``(row, col)``
  covers ``[col, col + 1) x [row, row + 1)`` in continuous image coordinates, its centre is at
  ``(col + 0.5, row + 0.5)``; MediaPipe's normalised landmark ``(x, y)`` is at ``(x * W, y * H)``.
* Barycentrics in the buffer are those of the 3D surface point (perspective-correct), not of the
  2D screen position.
* Visibility is a z-buffer over all triangles; nothing is back-face culled (scans often have
  inconsistent winding), and shading uses ``|n . l|`` so flipped normals still look right.

The rasteriser is vectorised numpy (single-threaded on purpose: torch's thread pool made it 3-10x
slower whenever the two CPU cores were shared with other work): triangles are grouped by the
power-of-two size of their pixel bounding box and every candidate pixel of a group is tested at
once; the nearest triangle per pixel wins through ``np.minimum.at`` over a 64-bit key
(quantised depth << 32 | triangle id), and the winner's barycentrics are then recomputed exactly.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["Camera", "RenderResult", "render_mesh", "rasterize", "camera_for_head", "head_frame",
           "vertex_normals", "sample_texture"]

_BACKGROUND = (0, 0, 0)
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


@dataclasses.dataclass
class RenderResult:
    image: np.ndarray      # (H, W, 3) uint8 RGB
    tri_id: np.ndarray     # (H, W) int32, -1 where no triangle covers the pixel centre
    bary: np.ndarray       # (H, W, 3) float32 perspective-correct barycentrics (0 on background)
    depth: np.ndarray      # (H, W) float32 camera-space depth (inf on background)
    camera: Camera

    @property
    def mask(self) -> np.ndarray:
        return self.tri_id >= 0

    def surface_points(self, vertices, faces) -> np.ndarray:
        """(H, W, 3) world points under every pixel centre (NaN on background)."""
        v = np.asarray(vertices, np.float64)
        f = np.asarray(faces, np.int64)
        out = np.full(self.tri_id.shape + (3,), np.nan)
        m = self.mask
        tri = v[f[self.tri_id[m]]]                                  # (N, 3, 3)
        out[m] = np.einsum("nk,nkc->nc", self.bary[m].astype(np.float64), tri)
        return out


# --------------------------------------------------------------------------------------------
def _interp(b: np.ndarray, values: np.ndarray, corner: np.ndarray) -> np.ndarray:
    """Barycentric interpolation: b (N, 3), per-vertex values (V, C), corner (N, 3) -> (N, C)."""
    return (b[:, 0, None] * values[corner[:, 0]] + b[:, 1, None] * values[corner[:, 1]]
            + b[:, 2, None] * values[corner[:, 2]])


def vertex_normals(vertices, faces, chunk: int = 1 << 18) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3), a chunk of triangles at a time; zero for
    unused vertices."""
    v = np.asarray(vertices)
    f = np.asarray(faces, np.int64)
    n = np.zeros((len(v), 3))
    for s in range(0, len(f), chunk):
        fc = f[s:s + chunk]
        t = v[fc].astype(np.float64)
        fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        for k in range(3):
            for c in range(3):
                n[:, c] += np.bincount(fc[:, k], weights=fn[:, c], minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


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


def rasterize(camera: Camera, vertices, faces, near: float | None = None):
    """Z-buffer rasterisation of pixel centres.

    Returns (tri_id (H, W) int32 with -1 for background, bary (H, W, 3) float32 perspective-correct,
    depth (H, W) float32 camera-space z with inf for background).
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


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup (N, 2) uv -> (N, C) float in [0, 1]; v is flipped (row = (1 - v) * H).
    Only the looked-up texels are converted to float, not the whole image."""
    tex = np.asarray(texture)
    scale = 255.0 if tex.dtype == np.uint8 else (65535.0 if tex.dtype == np.uint16 else 1.0)
    if tex.ndim == 2:
        tex = tex[..., None]
    Ht, Wt = tex.shape[:2]
    x = np.clip(uv[:, 0] * Wt - 0.5, 0, Wt - 1)
    y = np.clip((1.0 - uv[:, 1]) * Ht - 0.5, 0, Ht - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, Wt - 1)
    y1 = np.minimum(y0 + 1, Ht - 1)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]

    def t(r, c):
        return tex[r, c].astype(np.float32)

    out = ((t(y0, x0) * (1 - fx) + t(y0, x1) * fx) * (1 - fy)
           + (t(y1, x0) * (1 - fx) + t(y1, x1) * fx) * fy)
    return out / scale


def render_mesh(vertices, faces, camera: Camera, *, colors=None, texture=None, uv=None,
                shading: float | None = None, albedo: float = 0.8, ambient: float = 0.25,
                background=_BACKGROUND, smooth: bool = True) -> RenderResult:
    """Render a triangle mesh.

    colors: (V, 3) per-vertex colours in [0, 1] (or uint8). texture: (H, W, 3|4) image with
    uv: (F, 3, 2) per-corner or (V, 2) per-vertex UVs (v up, row = (1 - v) * H).
    shading: how much Lambert headlight shading multiplies the colour, 0 = flat colour,
    1 = full; default 1 for the grey render and 0.3 when colours or a texture are given.
    Without colours the mesh is grey (`albedo`) and shaded.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("faces index vertices that do not exist")
    tri_id, bary, depth = rasterize(camera, v, f)
    H, W = tri_id.shape
    img = np.empty((H, W, 3), np.float32)
    img[:] = np.asarray(background, np.float32) / (255.0 if max(background) > 1 else 1.0)
    m = tri_id >= 0
    if m.any():
        t = tri_id[m].astype(np.int64)
        b = bary[m].astype(np.float64)
        corner = f[t]                                                    # (N, 3)
        if texture is not None:
            if uv is None:
                raise ValueError("a texture needs UVs")
            uvs = np.asarray(uv, np.float64)
            uvc = uvs[t] if uvs.ndim == 3 else uvs[corner]                # (N, 3, 2)
            col = sample_texture(texture, np.einsum("nk,nkc->nc", b, uvc))[:, :3]
            if col.shape[1] == 1:
                col = np.repeat(col, 3, 1)
        elif colors is not None:
            c = np.asarray(colors)
            c = c.astype(np.float64) / (255.0 if c.dtype == np.uint8 else 1.0)
            col = _interp(b, c[:, :3], corner)
        else:
            col = np.full((len(t), 3), albedo)
        if shading is None:
            shading = 1.0 if (texture is None and colors is None) else 0.7
        if shading > 0:
            if smooth:
                n = _interp(b, vertex_normals(v, f), corner)
            else:
                tv = v[corner]
                n = np.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
            if camera.projection == "perspective":
                pts = _interp(b, v, corner)
                light = camera.position - pts
                light /= np.maximum(np.linalg.norm(light, axis=1, keepdims=True), 1e-300)
            else:
                light = -camera.view_direction[None]
            lam = np.abs((n * light).sum(1))
            lit = ambient + (1.0 - ambient) * lam
            col = col * ((1.0 - shading) + shading * lit)[:, None]
        img[m] = col
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return RenderResult(image=image, tri_id=tri_id, bary=bary, depth=depth, camera=camera)


# --------------------------------------------------------------------------------------------
def _unit(a, name) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(3)
    n = np.linalg.norm(a)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"{name} must be a non-zero 3-vector")
    return a / n


def _rotate(vec, axis, angle_rad) -> np.ndarray:
    """Rodrigues rotation of `vec` about unit `axis` (right-handed)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return vec * c + np.cross(axis, vec) * s + axis * np.dot(axis, vec) * (1 - c)


def head_frame(up=(0, 1, 0), forward=(0, 0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Unit up and forward, forward made perpendicular to up."""
    u = _unit(up, "up")
    fw = np.asarray(forward, np.float64).reshape(3)
    fw = fw - u * np.dot(fw, u)
    return u, _unit(fw, "forward (must not be parallel to up)")


def camera_for_head(vertices=None, yaw_deg: float = 0.0, *, centre=None, radius: float | None = None,
                    up=(0, 1, 0), forward=(0, 0, 1), pitch_deg: float = 0.0,
                    image_size: int | tuple[int, int] = 512, projection: str = "perspective",
                    fov_deg: float = 25.0, fill: float = 0.95) -> Camera:
    """A camera that looks at a head from direction `forward` turned by `yaw_deg` about `up`.

    vertices: the scan (any units); used for the default centre (bounding-box centre) and radius
    (largest distance from the centre). up/forward: the head's up and facing directions in the
    scan's frame (defaults: the model frame, Y up, face +Z). Positive yaw turns the camera about
    `up` by the right-hand rule (in the model frame towards +X, the subject's left); positive pitch
    raises the camera above the face. The sphere (centre, radius) fills `fill` of the smaller image
    side.
    """
    if isinstance(image_size, (tuple, list)):
        W, H = int(image_size[0]), int(image_size[1])
    else:
        W = H = int(image_size)
    u, fw = head_frame(up, forward)
    if centre is None or radius is None:
        if vertices is None:
            raise ValueError("camera_for_head needs vertices or both centre and radius")
        v = np.asarray(vertices, np.float64).reshape(-1, 3)
        c = (v.min(0) + v.max(0)) / 2 if centre is None else np.asarray(centre, np.float64)
        if radius is None:
            radius = float(np.linalg.norm(v - c, axis=1).max())
        centre = c
    centre = np.asarray(centre, np.float64).reshape(3)
    if not radius or radius <= 0 or not np.isfinite(radius):
        raise ValueError("radius must be positive")
    d = _rotate(fw, u, math.radians(yaw_deg))
    side = np.cross(u, d)
    d = _rotate(d, _unit(side, "side"), -math.radians(pitch_deg))
    z_cam = -d                                   # looking at the head
    y_cam = -(u - z_cam * np.dot(u, z_cam))      # image down = -up
    y_cam /= np.linalg.norm(y_cam)
    x_cam = np.cross(y_cam, z_cam)
    R = np.stack([x_cam, y_cam, z_cam])
    half = min(W, H) / 2.0
    if projection == "perspective":
        tan_half = math.tan(math.radians(fov_deg) / 2)
        focal = half / tan_half
        # the sphere's angular radius asin(r / dist) should span `fill` of the half field of view
        dist = radius / math.sin(math.atan(fill * tan_half))
        return Camera(R, centre + d * dist, W, H, "perspective", focal=focal)
    if projection == "orthographic":
        return Camera(R, centre + d * (2.0 * radius), W, H, "orthographic",
                      scale=fill * half / radius)
    raise ValueError(f"projection must be 'perspective' or 'orthographic', not {projection!r}")
