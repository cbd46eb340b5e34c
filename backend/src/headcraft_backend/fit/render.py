"""Shaded renders of meshes for landmark detection and pictures, on the backend's rasteriser
(raster.py: no OpenGL, no display, no GPU needed).

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
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..raster import Camera, rasterize

__all__ = ["RenderResult", "render_mesh", "camera_for_head", "head_frame", "vertex_normals", "sample_texture"]

_BACKGROUND = (0, 0, 0)


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
