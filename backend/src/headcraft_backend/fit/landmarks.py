"""Face landmarks on 3D scans: render, detect with MediaPipe FaceMesh, lift to the surface.

MediaPipe's legacy ``solutions.face_mesh.FaceMesh`` (pinned 0.10.21; the wheel carries its models,
so nothing is downloaded) finds 478 landmarks (468 face mesh points + 10 iris points with
``refine_landmarks=True``) on a render of the scan. Each 2D landmark is lifted to the scan's
surface through the renderer's triangle-id / barycentric buffer, so the result is a
(triangle, barycentric) pair on the *input* mesh and a 3D point in the input frame; no ray
casting against the mesh is needed.

The head models carry the same 478 landmarks as (triangle, barycentric) embeddings
(:func:`model_landmark_embedding`): OpenHead's is derived once by
``backend/tools/derive_openhead_landmarks.py`` and stored as ``assets/openhead-1-landmarks.npz``;
FLAME's comes with the user's ``mediapipe_landmark_embedding.npz`` (105 landmarks).

Real scans come in any orientation, size and finish: when the face is not found from the given
up/forward directions (or they are unknown), the coordinate axes are searched for an upright
face (:func:`_orientations`); scans of millions of triangles are rendered as a vertex-clustered
copy; a texture or vertex colours are rendered where the scan has them.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from importlib import resources

import numpy as np
from scipy.spatial import cKDTree

from ..errors import UserError
from ..raster import Camera
from .render import RenderResult, camera_for_head, head_frame, render_mesh, sample_texture
from .scan import cluster_decimate

__all__ = ["NUM_MEDIAPIPE_LANDMARKS", "FIT_LANDMARKS", "SURFACE_LANDMARKS", "FLAME_MEDIAPIPE_INDICES", "REGIONS",
           "LandmarkResult", "detect_landmarks", "detect_landmarks_on_scan", "lift_landmarks", "model_landmark_embedding",
           "load_openhead_embedding", "OPENHEAD_LANDMARK_ASSET"]

NUM_MEDIAPIPE_LANDMARKS = 478
OPENHEAD_LANDMARK_ASSET = "openhead-1-landmarks.npz"
# Landmark views render at most this many triangles (a denser scan: a vertex-clustered copy, under
# a pixel per vertex on the face in the refined 512-pixel views).
MAX_RENDER_FACES = 400_000
# The orientation search scores each view by BlazeFace alone, which looks at 128 pixels: a
# 256-pixel render of a copy of at most 40,000 triangles is enough, and the best few are tried.
_SEARCH_FACES = 40_000
_SEARCH_IMAGE_SIZE = 256
_SEARCH_TRIES = 3
_MAX_ROLL_DEG = 60.0

# MediaPipe face mesh indices by region (from the wheel's face_mesh_connections: FACEMESH_* sets).
# "left"/"right" are the subject's: MediaPipe's LEFT_EYE (263, 362, ...) is the subject's left eye,
# which is on the image's right in a frontal view and at +X in the head-model frame.
REGIONS: dict[str, tuple[int, ...]] = {
    "brow_left": (276, 282, 283, 285, 293, 295, 296, 300, 334, 336),
    "brow_right": (46, 52, 53, 55, 63, 65, 66, 70, 105, 107),
    "eye_left": (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466),
    "eye_right": (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246),
    # nose ridge (168 between the eyes ... 4 above the tip), alae (98/327, 129/358), base (2, 97, 326)
    "nose": (168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358),
    "lips_outer": (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321,
                   375, 405, 409),
    "lips_inner": (13, 14, 78, 80, 81, 82, 87, 88, 95, 178, 191, 308, 310, 311, 312, 317, 318,
                   324, 402, 415),
    "iris": tuple(range(468, 478)),
    "face_oval": (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172,
                  176, 234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389,
                  397, 400, 454),
}

# The 105 MediaPipe indices of FLAME's ``mediapipe_landmark_embedding.npz``, in that file's order
# (its ``landmark_indices`` array; the same list is used by SMIRK/MICA-style trackers): brows,
# left eye, right eye, nose, lips.
FLAME_MEDIAPIPE_INDICES: tuple[int, ...] = (
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336, 46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
    168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358,
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
    267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)

# The landmarks the 3DMM fit uses: the same 105 as FLAME's MediaPipe embedding (brows 20, eyes 32,
# nose 13, outer + inner lips 40), so OpenHead and FLAME fit against identical points.
# Left out on purpose: the iris (468-477: eyeball direction, not head shape) and the face oval
# (a silhouette contour: MediaPipe places it on the visible outline, which slides over the surface
# as the view or the face shape changes, so its lifted 3D points are not fixed surface points).
FIT_LANDMARKS: np.ndarray = np.array(FLAME_MEDIAPIPE_INDICES, np.int64)
# What the coarse fit trusts: the brows are left out too, as the detector puts them on the
# eyebrow hair (or its colour), 5-18 mm from where a grey render of the same skin puts them.
SURFACE_LANDMARKS: np.ndarray = np.setdiff1d(FIT_LANDMARKS, REGIONS["brow_left"] + REGIONS["brow_right"])

# Symmetric pairs (subject's left, subject's right) used to estimate which way the face looks.
_SYMMETRIC_PAIRS = ((263, 33), (362, 133), (276, 46), (300, 70), (334, 105), (291, 61),
                    (327, 98), (358, 129), (409, 185), (375, 146))


@dataclasses.dataclass
class LandmarkResult:
    points: np.ndarray         # (478, 3) float64 in the input frame; NaN where not valid
    valid: np.ndarray          # (478,) bool: the landmark lies on the mesh
    faces: np.ndarray          # (478,) int64 triangle of the input mesh (-1 where not valid)
    bary: np.ndarray           # (478, 3) float32 barycentrics in that triangle
    yaw_deg: float             # yaw (about `up`, from `forward`) of the view that gave them
    confidence: float          # 0..1: BlazeFace score x fraction of FIT_LANDMARKS valid
    image_points: np.ndarray   # (478, 2) continuous pixel coordinates (x=col, y=row)
    facing: np.ndarray         # (478,) |cos| between surface normal and view ray (0 = grazing)
    render: RenderResult | None = None   # the render the landmarks were found on (of a
                                         # vertex-clustered copy for a scan of millions of faces)
    attempts: list = dataclasses.field(default_factory=list)  # [(yaw_deg, found), ...]
    up: np.ndarray | None = None         # the up and forward directions the face was found with
    forward: np.ndarray | None = None
    searched: list = dataclasses.field(default_factory=list)  # orientation search: [(up, forward, face score)]


# --------------------------------------------------------------------------------------------
def _import_mediapipe():
    try:
        import mediapipe as mp  # slow (~1 s): only when landmarks are needed
        mp.solutions.face_mesh, mp.solutions.face_detection  # noqa: B018 - the legacy solutions
    except ImportError as exc:
        raise UserError("automatic face landmarks need the 'mediapipe' package (version 0.10.21) "
                        "in the HeadCraft backend's environment; install it (pip install "
                        "mediapipe==0.10.21) or place landmarks manually") from exc
    except AttributeError as exc:
        raise UserError("the installed 'mediapipe' has no legacy face_mesh solution; install "
                        "mediapipe==0.10.21 in the HeadCraft backend's environment or place "
                        "landmarks manually") from exc
    return mp


class _Detector:
    """MediaPipe FaceDetection (for a face score) + FaceMesh, opened once per detect call.

    A render counts as showing a face when BlazeFace's score is at least `min_face_score` *and*
    FaceMesh finds the landmarks. FaceMesh alone accepts BlazeFace scores >= 0.5, and a plain
    shaded sphere scores ~0.55; grey-shaded heads score 0.7-0.93 from the front up to 70 degrees
    to the side, so the default 0.65 rejects blobs without losing heads. Only upright faces count
    (eyes above the mouth, within `_MAX_ROLL_DEG` of the image's vertical): a view with the
    face on its side means the up direction is wrong.
    """

    def __init__(self, mp, min_face_score: float = 0.65):
        self.min_face_score = float(min_face_score)
        self.det = mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=0.05)
        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min(0.5, self.min_face_score))
        self.best_score = 0.0

    def face_score(self, image: np.ndarray) -> float:
        """BlazeFace's best score for an upright face in an RGB uint8 image (0 for none)."""
        d = self.det.process(np.ascontiguousarray(image))
        score = 0.0
        for x in d.detections or ():
            k = x.location_data.relative_keypoints      # right eye, left eye, nose tip, mouth, ...
            if len(k) >= 4:
                H, W = image.shape[:2]
                down = ((k[3].x - (k[0].x + k[1].x) / 2) * W, (k[3].y - (k[0].y + k[1].y) / 2) * H)
                if math.degrees(math.atan2(abs(down[0]), down[1])) > _MAX_ROLL_DEG:
                    continue
            score = max(score, float(x.score[0]))
        self.best_score = max(self.best_score, score)
        return score

    def __call__(self, image: np.ndarray):
        """RGB uint8 image -> ((478, 3) landmarks in pixels (x, y and MediaPipe's relative depth z,
        in pixel-width units), face score) or (None, score)."""
        H, W = image.shape[:2]
        img = np.ascontiguousarray(image)
        score = self.face_score(img)
        if score < self.min_face_score:
            return None, score
        res = self.mesh.process(img)
        if not res.multi_face_landmarks:
            return None, score
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * W, p.y * H, p.z * W) for p in lm], np.float64)
        if len(pts) != NUM_MEDIAPIPE_LANDMARKS:
            return None, score
        return pts, score

    def close(self):
        self.mesh.close()
        self.det.close()


def lift_landmarks(render: RenderResult, vertices, faces, xy, *, snap_depth: float | None = None,
                   snap_px: int = 3, max_gap_px: float = 0.75
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lift continuous pixel positions (N, 2) to the surface of the rendered mesh.

    For each position the triangles covering the 3x3 pixel centres around it are tested exactly
    (screen-space barycentrics of the position itself, nearest containing triangle wins); if none
    contains it (just past the silhouette, a sub-pixel crack) the position is clamped into the
    candidate it is least outside of, when that moves it by at most `max_gap_px` pixels.
    Positions farther over the background are invalid.

    snap_depth (scan units): a landmark whose surface point lies more than this behind the
    nearest surface within `snap_px` pixels (it fell through a slit such as closed lips into the
    mouth cavity, or past an occluding edge) is moved to the nearest pixel of that front surface.

    Returns (faces (N,) int64 with -1 where invalid, bary (N, 3) float32, valid (N,) bool,
    facing (N,) |cos| between normal and view ray).
    """
    cam = render.camera
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    N = len(xy)
    H, W = render.tri_id.shape
    out_f = np.full(N, -1, np.int64)
    out_b = np.zeros((N, 3), np.float32)
    finite = np.isfinite(xy).all(1)
    col0 = np.floor(np.where(finite, xy[:, 0], -10)).astype(np.int64)
    row0 = np.floor(np.where(finite, xy[:, 1], -10)).astype(np.int64)
    # candidate triangles from the 3x3 pixels around the one containing the position
    dr, dc = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
    rr = row0[:, None] + dr.reshape(-1)[None]
    cc = col0[:, None] + dc.reshape(-1)[None]
    inimg = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
    cand = np.where(inimg, render.tri_id[np.clip(rr, 0, H - 1), np.clip(cc, 0, W - 1)], -1)
    ok = cand >= 0
    tri = v[f[np.where(ok, cand, 0)]]                                      # (N, 9, 3, 3)
    pxy, z = cam.project(tri)                                              # (N, 9, 3, 2), (N, 9, 3)
    p0, p1, p2 = pxy[..., 0, :], pxy[..., 1, :], pxy[..., 2, :]
    P = xy[:, None, :]

    def cross(a, b):
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    area = cross(p1 - p0, p2 - p0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w0 = cross(p2 - p1, P - p1) / area
        w1 = cross(p0 - p2, P - p2) / area
    w = np.stack([w0, w1, 1 - w0 - w1], -1)                                # screen barycentrics
    inside = ok & np.isfinite(w).all(-1) & (w >= -1e-6).all(-1) & (np.abs(area) > 1e-12)
    wc = np.clip(w, 0, None)
    if cam.projection == "perspective":
        with np.errstate(divide="ignore", invalid="ignore"):
            wc = wc / z
    with np.errstate(divide="ignore", invalid="ignore"):
        wc = wc / wc.sum(-1, keepdims=True)
        depth = (wc * z).sum(-1)
    depth = np.where(inside & np.isfinite(depth), depth, np.inf)
    best = depth.argmin(1)
    hit = np.isfinite(depth[np.arange(N), best])
    out_f[hit] = cand[hit, best[hit]]
    out_b[hit] = wc[hit, best[hit]]
    # fall-back (the position is just past a silhouette or in a sub-pixel crack): the candidate
    # triangle it is least outside of, the position clamped into it, if that moves it less than
    # `max_gap_px`
    rest = np.nonzero(~hit & finite & ok.any(1))[0]
    if len(rest):
        wr = np.where(ok[rest, :, None] & np.isfinite(w[rest]), w[rest], -np.inf)   # (n, 9, 3)
        k = wr.min(-1).argmax(1)
        wk = np.clip(wr[np.arange(len(rest)), k], 0, None)
        wk = wk / np.maximum(wk.sum(-1, keepdims=True), 1e-300)
        pk = pxy[rest, k]                                                       # (n, 3, 2)
        moved = np.linalg.norm((wk[..., None] * pk).sum(1) - xy[rest], axis=1)
        good = moved <= max_gap_px
        zk = z[rest, k]
        b3 = wk / zk if cam.projection == "perspective" else wk
        b3 = b3 / b3.sum(-1, keepdims=True)
        out_f[rest[good]] = cand[rest[good], k[good]]
        out_b[rest[good]] = b3[good]
    if snap_depth is not None and snap_px > 0:
        _snap_to_front(render, xy, out_f, out_b, snap_depth, snap_px, v, f)
    valid = out_f >= 0
    # how squarely the surface faces the camera at each landmark
    facing = np.zeros(N)
    if valid.any():
        t = v[f[out_f[valid]]]
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
        p = np.einsum("nk,nkc->nc", out_b[valid].astype(np.float64), t)
        if cam.projection == "perspective":
            ray = p - cam.position
            ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-300)
        else:
            ray = np.broadcast_to(cam.view_direction, p.shape)
        facing[valid] = np.abs((n * ray).sum(1))
    return out_f, out_b, valid, facing


def _snap_to_front(render: RenderResult, xy, out_f, out_b, snap_depth, snap_px, v, f) -> None:
    """In place: move lifted landmarks that lie behind a nearby front surface onto it."""
    cam = render.camera
    H, W = render.tri_id.shape
    rng = np.arange(-snap_px, snap_px + 1)
    dr, dc = np.meshgrid(rng, rng, indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)
    for i in np.nonzero(out_f >= 0)[0]:
        p = out_b[i].astype(np.float64) @ v[f[out_f[i]]]
        d = float(cam.to_camera(p)[2])
        r0, c0 = int(np.floor(xy[i, 1])), int(np.floor(xy[i, 0]))
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        rr, cc = rr[ok], cc[ok]
        depth = render.depth[rr, cc].astype(np.float64)
        front = depth.min()
        if not np.isfinite(front) or d <= front + snap_depth:
            continue
        cand = depth <= front + snap_depth
        dist = np.hypot(cc[cand] + 0.5 - xy[i, 0], rr[cand] + 0.5 - xy[i, 1])
        k = int(np.argmin(dist))
        out_f[i] = render.tri_id[rr[cand][k], cc[cand][k]]
        out_b[i] = render.bary[rr[cand][k], cc[cand][k]]


def _points(vertices, faces, tri, bary, valid) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    pts = np.full((len(tri), 3), np.nan)
    if valid.any():
        pts[valid] = np.einsum("nk,nkc->nc", bary[valid].astype(np.float64),
                               v[f[tri[valid]]])
    return pts


def _face_yaw(mp_points, camera: Camera, up, forward) -> float | None:
    """The yaw (degrees, about `up`, from `forward`) the face actually looks at.

    Uses MediaPipe's own 3D landmarks (image x, y and its relative depth z, all in pixels), not the
    lifted ones: landmarks on the far side of a turned face are hidden, and lifting them would put
    them on the wrong surface. The subject's left-right axis is the mean direction through the
    symmetric pairs, rotated from camera to world coordinates.
    """
    axes = []
    for a, b in _SYMMETRIC_PAIRS:
        d = mp_points[a] - mp_points[b]
        n = np.linalg.norm(d)
        if np.isfinite(n) and n > 0:
            axes.append(d / n)
    if len(axes) < 3:
        return None
    x = np.mean(axes, 0) @ camera.rotation          # camera (x right, y down, z away) -> world
    x = x - up * np.dot(x, up)
    if np.linalg.norm(x) < 1e-9:
        return None
    fw = np.cross(x, up)                      # model frame: +X (subject's left) x +Y = +Z
    fw /= np.linalg.norm(fw)
    side = np.cross(up, forward)
    return math.degrees(math.atan2(np.dot(fw, side), np.dot(fw, forward)))


def _upright_frame(mp_points, camera: Camera) -> tuple[np.ndarray, np.ndarray] | None:
    """(up, forward) of a view turned about its axis so that the face in it is upright, forward
    pointing at the camera; from the image direction of the face's left-right axis (the
    symmetric pairs). MediaPipe's depths are too rough to correct the pitch as well."""
    axes = []
    for a, b in _SYMMETRIC_PAIRS:
        d = mp_points[a, :2] - mp_points[b, :2]
        n = np.linalg.norm(d)
        if np.isfinite(n) and n > 0:
            axes.append(d / n)
    if len(axes) < 3:
        return None
    x = np.mean(axes, 0)
    up = np.array([x[1], -x[0], 0.0]) @ camera.rotation       # camera (x right, y down) -> world
    if np.linalg.norm(up) < 1e-9:
        return None
    return up / np.linalg.norm(up), -camera.view_direction


def _combine_views(views: list[dict], v, f) -> dict:
    """Per landmark, the medoid (the view's surface point nearest the coordinate-wise median) of
    the views where it is valid; the first view supplies the image, render and score."""
    if len(views) == 1:
        return views[0]
    out = dict(views[0])
    tri = np.stack([x["tri"] for x in views])
    bary = np.stack([x["bary"] for x in views])
    valid = np.stack([x["valid"] for x in views])
    pts = np.stack([x["points"] for x in views])
    facing = np.stack([x["facing"] for x in views])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)               # all-NaN columns
        med = np.nanmedian(np.where(valid[..., None], pts, np.nan), axis=0)    # (L, 3)
    dist = np.linalg.norm(pts - med[None], axis=-1)
    dist = np.where(valid, dist, np.inf)
    k = dist.argmin(0)
    L = np.arange(tri.shape[1])
    out["valid"] = valid.any(0)
    out["tri"] = np.where(out["valid"], tri[k, L], -1)
    out["bary"] = bary[k, L]
    out["facing"] = facing[k, L]
    out["points"] = _points(v, f, out["tri"], out["bary"], out["valid"])
    out["score"] = float(np.mean([x["score"] for x in views]))
    return out


@dataclasses.dataclass
class _Mesh:
    """What the landmark views render: a mesh with its colours or texture, and the cell size it
    was vertex-clustered with (0 for the input itself)."""
    v: np.ndarray
    f: np.ndarray
    colors: np.ndarray | None = None
    texture: np.ndarray | None = None
    uv: np.ndarray | None = None
    cell: float = 0.0

    def coarser(self, max_faces: int) -> _Mesh:
        """This mesh vertex-clustered to at most max_faces / 2 vertices when it has more than
        max_faces triangles (a texture becomes vertex colours), else itself."""
        if len(self.f) <= max_faces:
            return self
        if self.texture is not None:
            colors = _texture_colours(self.texture, self.uv, self.f, len(self.v))
        elif self.colors is not None:       # the means are floats: 8-bit colours become 0-1 first
            colors = np.asarray(self.colors)
            colors = colors / 255.0 if colors.dtype == np.uint8 else colors
        else:
            colors = None
        v, f, (c,), cell = cluster_decimate(self.v, self.f, max_faces // 2, colors)
        return _Mesh(v, f, c, cell=cell)

    def render(self, camera: Camera, background) -> RenderResult:
        return render_mesh(self.v, self.f, camera, colors=self.colors, texture=self.texture, uv=self.uv,
                           background=background)


def _texture_colours(texture, uv, f, n: int, chunk: int = 1 << 20) -> np.ndarray:
    """Per-vertex colours (n, C) from a texture: sampled at per-vertex uv (n, 2), or averaged over
    each vertex's corners for per-corner uv (F, 3, 2), a chunk of corners at a time."""
    uv = np.asarray(uv, np.float64)
    if uv.ndim == 2:
        return sample_texture(texture, uv)
    corners, uv = np.asarray(f, np.int64).reshape(-1), uv.reshape(-1, 2)
    total = None
    for s in range(0, len(corners), chunk):
        col = sample_texture(texture, uv[s:s + chunk])
        part = np.stack([np.bincount(corners[s:s + chunk], col[:, k], n) for k in range(col.shape[1])], 1)
        total = part if total is None else total + part
    return total / np.maximum(np.bincount(corners, minlength=n), 1)[:, None]


def _orientations(v) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Sets of (up, forward) pairs to search when the scan's orientation is unknown: each
    coordinate direction as up with the four perpendicular to it as forward (a face halfway
    between two of them is 45 degrees off, which still scores as a face); then, when the scan's
    principal axes are more than 20 degrees off the coordinate axes (a tilted scan), the same
    for them."""
    sample = np.asarray(v[:: max(1, len(v) // 100_000)], np.float64)
    centred = sample - sample.mean(0)
    principal = np.linalg.eigh(centred.T @ centred)[1].T[::-1]          # rows, widest spread first
    frames = [np.eye(3)[[1, 2, 0]]]                                     # Y (the usual up), Z, X
    if np.abs(principal).max(1).min() < math.cos(math.radians(20)):
        frames.append(principal)
    return [[(s_up * frame[i], s_fw * frame[j]) for i in range(3) for s_up in (1.0, -1.0)
             for j in range(3) if j != i for s_fw in (1.0, -1.0)] for frame in frames]


def _direction_name(d) -> str:
    """'+X' for a coordinate axis, the rounded vector otherwise."""
    d = np.asarray(d, np.float64)
    k = int(np.argmax(np.abs(d)))
    if abs(abs(d[k]) - 1.0) < 1e-9:
        return ("+" if d[k] > 0 else "-") + "XYZ"[k]
    return "(" + ", ".join(f"{x:.2f}" for x in d) + ")"


def _barycentric(q, tri) -> np.ndarray:
    """Barycentrics (N, 3) of points q (N, 3) in triangles tri (N, 3, 3); (1, 0, 0) for a degenerate one."""
    e1, e2, w = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], q - tri[:, 0]
    d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    dw1, dw2 = (w * e1).sum(1), (w * e2).sum(1)
    den = d11 * d22 - d12 * d12
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = np.nan_to_num((d22 * dw1 - d12 * dw2) / den)
        b2 = np.nan_to_num((d11 * dw2 - d12 * dw1) / den)
    return np.stack([1.0 - b1 - b2, b1, b2], 1)


def _onto_surface(points, valid, v, f, reach: float):
    """Landmarks found on a vertex-clustered copy moved to the nearest point of the input mesh
    (v, f): (triangles, bary, valid). Only triangles with a vertex within `reach` of a landmark
    are searched; a landmark with no surface within `reach` becomes invalid."""
    from .metrics import surface_distances
    tri = np.full(len(points), -1, np.int64)
    bary = np.zeros((len(points), 3), np.float32)
    idx = np.flatnonzero(valid)
    if len(idx):
        near = np.isfinite(cKDTree(points[idx]).query(v, distance_upper_bound=reach)[0])
        cand = np.flatnonzero(near[f].any(1))
        if len(cand):
            d, t, q = surface_distances(points[idx], v, f[cand], return_closest=True)
            ok = d <= reach
            tri[idx[ok]] = cand[t[ok]]
            bary[idx[ok]] = _barycentric(q[ok], np.asarray(v, np.float64)[f[tri[idx[ok]]]])
    return tri, bary, tri >= 0


def detect_landmarks(vertices, faces, colors=None, texture=None, uv=None, up=(0, 1, 0),
                     forward=(0, 0, 1), yaws=(0, -20, 20, -40, 40), *, centre=None,
                     radius: float | None = None, image_size: int = 512,
                     projection: str = "perspective", refine: bool = True,
                     background=(0, 0, 0), keep_render: bool = True,
                     snap_fraction: float = 0.04, snap_px: int = 2,
                     face_margin: float = 1.6, pitch_deg: float = 0.0,
                     refine_offsets=(-8.0, 0.0, 8.0), zooms=(1.0, 0.5),
                     min_face_score: float = 0.65,
                     max_render_faces: int = MAX_RENDER_FACES) -> LandmarkResult:
    """Find MediaPipe's 478 face landmarks on a scan and lift them onto its surface.

    vertices (V, 3) / faces (F, 3): the scan in any units; up/forward: its (rough) up and facing
    directions, or None where unknown. colors (V, 3) or texture + uv (F, 3, 2 or V, 2) make a
    coloured render; without them the mesh is shaded grey. The head is rendered from `forward`
    and, while no face is found, from the other `yaws` (degrees about `up`). When that finds no
    face, or up/forward are unknown, every orientation of :func:`_orientations` (24 pairs of
    coordinate axes, more for a tilted scan) is rendered small and coarse, and those where the
    detector sees an upright face are tried in the same way, the best face score first, turned
    about the view axis so that the face is upright. With `refine`, once a face is found the
    camera is turned to where the face actually looks (estimated from MediaPipe's 3D landmarks),
    framed on the face, and the detection repeated from that yaw plus `refine_offsets`; per
    landmark the medoid of those views' surface points is kept (the first detection is kept when
    none of the refined views finds the face). The result's `up` and `forward` are the directions
    used, `yaw_deg` the yaw of the face relative to that `forward`, as the refinement estimated
    it (or the yaw of the first successful view).
    centre/radius: the sphere to frame (default: bounding-box centre, farthest vertex); each
    yaw is tried at every `zooms` factor of it, zoomed views keeping the top of the scan in frame
    (and at halves of the last factor while they still span the scan's width: a bust on a plinth).
    snap_fraction: landmarks that fall more than this fraction of `radius` behind the nearest
    surface within `snap_px` pixels (through closed lips into the mouth) are moved onto that
    surface (see :func:`lift_landmarks`); 0 disables it. face_margin: the refined view frames a
    sphere of this many times the fit landmarks' extent. min_face_score: the BlazeFace score a
    view needs to count as a face (a shaded sphere scores ~0.55, grey heads 0.7-0.93).
    max_render_faces: a mesh with more triangles is rendered as a vertex-clustered copy (a texture
    becoming vertex colours there) and the landmarks are moved to the nearest input surface.

    Raises UserError when no face is found from any view.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or f.ndim != 2 or f.shape[1] != 3 or not len(f):
        raise UserError("the scan must be a triangle mesh with vertices and faces")
    if not np.isfinite(v).all():
        raise UserError("the scan has NaN or infinite vertex coordinates")
    if centre is None:
        centre = (v.min(0) + v.max(0)) / 2
    centre = np.asarray(centre, np.float64).reshape(3)
    if radius is None:
        radius = float(np.linalg.norm(v - centre, axis=1).max())
    snap_depth = snap_fraction * radius if snap_fraction else None
    # Millions of sub-pixel triangles add time and aliasing, not detail: such a scan is rendered
    # as a vertex-clustered copy, and the landmarks are moved onto the input surface at the end.
    mesh = _Mesh(v, f, colors, texture, uv).coarser(max_render_faces)
    mp = _import_mediapipe()
    detector = _Detector(mp, min_face_score)

    def camera(up_u, fw_u, yaw, c, r, size=image_size):
        return camera_for_head(None, yaw, centre=c, radius=r, up=up_u, forward=fw_u, pitch_deg=pitch_deg,
                               image_size=size, projection=projection)

    def attempt(rend):
        pts2d, score = detector(rend.image)
        if pts2d is None:
            return None
        tri, bary, valid, facing = lift_landmarks(rend, mesh.v, mesh.f, pts2d[:, :2], snap_depth=snap_depth,
                                                  snap_px=snap_px)
        return dict(pts2d=pts2d, score=score, tri=tri, bary=bary, valid=valid, facing=facing,
                    render=rend, points=_points(mesh.v, mesh.f, tri, bary, valid))

    def framings(up_u):
        # Zoomed-in views keep the top of the scan in frame: a head on shoulders or with clutter
        # below is too small in the full view for the face detector. A scan much taller than
        # wide (a bust on a plinth) gets closer views still, down to its width.
        rel = mesh.v - centre
        top = float((rel @ up_u).max())
        side = np.cross(up_u, np.eye(3)[int(np.argmin(np.abs(up_u)))])
        side /= np.linalg.norm(side)
        width = max(float(np.ptp(rel @ side)), float(np.ptp(rel @ np.cross(up_u, side))))
        zs = list(zooms)
        while zs and zs[-1] * radius > width:
            zs.append(zs[-1] / 2)
        return [(centre + up_u * (top - z * radius), z * radius) for z in zs]

    def find(up_u, fw_u):
        views = framings(up_u)
        for yaw in yaws:
            for c, r in views:
                found = attempt(mesh.render(camera(up_u, fw_u, float(yaw), c, r), background))
                attempts.append((float(yaw), found is not None))
                if found is not None:
                    found.update(yaw=float(yaw), up=up_u, forward=fw_u)
                    return found
        return None

    def ranked():
        """The search's orientations where an upright face is seen, the best face score first
        (the principal axes are only tried when no coordinate axes give one)."""
        coarse = mesh.coarser(_SEARCH_FACES)
        for k, pairs in enumerate(_orientations(mesh.v)):
            if k == 0:
                tried.append(", ".join(f"{_direction_name(u)}/{_direction_name(w)}" for u, w in pairs))
            else:
                axes = ", ".join(_direction_name(u) for u, _ in pairs[::8])
                tried.append(f"the same for the principal axes {axes}")
            for up_u, fw_u in pairs:
                score = 0.0
                for c, r in framings(up_u):
                    rend = coarse.render(camera(up_u, fw_u, 0.0, c, r, _SEARCH_IMAGE_SIZE), background)
                    score = max(score, detector.face_score(rend.image))
                    if score >= min_face_score:
                        break
                searched.append((up_u, fw_u, score))
            faces = sorted((x for x in searched if x[2] >= min_face_score), key=lambda x: -x[2])
            if faces:
                return faces
        return []

    searched: list[tuple]   # (up, forward, face score)
    attempts, searched, tried = [], [], []
    found = None
    try:
        if up is not None and forward is not None:
            try:
                up_u, fw_u = head_frame(up, forward)
            except ValueError as exc:
                raise UserError(f"the up and forward directions: {exc}") from None
            tried.append(f"{_direction_name(up_u)}/{_direction_name(fw_u)} at yaw "
                         f"{', '.join(dict.fromkeys(f'{float(a):g}' for a in yaws))} degrees")
            found = find(up_u, fw_u)
        if found is None:
            for up_u, fw_u, _ in ranked()[:_SEARCH_TRIES]:
                found = find(up_u, fw_u)
                if found is not None:
                    # an axis-aligned guess: turned so that the face is upright before refining
                    upright = _upright_frame(found["pts2d"], found["render"].camera)
                    if upright is not None:
                        found.update(up=upright[0], forward=upright[1], yaw=0.0)
                    break
        if found is None:
            raise UserError(
                f"no face found on the scan (views tried, as up/forward: {'; then '.join(tried)}; "
                f"best face score {detector.best_score:.2f}, {min_face_score:g} needed): check that the "
                f"face is not hidden, then give the landmarks in a file (headcraft-backend fit --landmarks "
                f"FILE) or place them manually")
        if refine:
            up_u, fw_u = found["up"], found["forward"]
            yaw = _face_yaw(found["pts2d"], found["render"].camera, up_u, fw_u)
            fit_ok = found["valid"][FIT_LANDMARKS]
            if yaw is not None and fit_ok.sum() >= 20:
                fp = found["points"][FIT_LANDMARKS][fit_ok]
                c = (fp.min(0) + fp.max(0)) / 2
                # the face landmarks span brows..lips; frame the whole face with margin
                r = face_margin * float(np.linalg.norm(fp - c, axis=1).max())
                views = []
                for off in sorted(refine_offsets, key=abs):   # the straightest view first
                    again = attempt(mesh.render(camera(up_u, fw_u, yaw + float(off), c, r), background))
                    attempts.append((yaw + float(off), again is not None))
                    if again is not None and again["valid"][FIT_LANDMARKS].sum() >= fit_ok.sum() * 0.9:
                        views.append(again)
                if views:
                    found = dict(_combine_views(views, mesh.v, mesh.f), yaw=float(yaw), up=up_u, forward=fw_u)
    finally:
        detector.close()

    tri, bary, valid = found["tri"], found["bary"], found["valid"]
    if mesh.cell:
        tri, bary, valid = _onto_surface(found["points"], valid, v, f, 3.0 * mesh.cell)
    fit_valid = valid[FIT_LANDMARKS].mean()
    return LandmarkResult(
        points=_points(v, f, tri, bary, valid), valid=valid, faces=tri, bary=bary,
        yaw_deg=found["yaw"], confidence=float(found["score"] * fit_valid),
        image_points=found["pts2d"][:, :2], facing=found["facing"],
        render=found["render"] if keep_render else None, attempts=attempts,
        up=found["up"], forward=found["forward"], searched=searched)


# --------------------------------------------------------------------------------------------
def detect_landmarks_on_scan(scan, up=(0, 1, 0), forward=(0, 0, 1), **kw) -> LandmarkResult:
    """detect_landmarks for a cleaned Scan (its colours or texture are rendered): a point cloud
    is first given a surface (screened Poisson, through at most 500,000 of its points) to render,
    and its landmarks stay on that surface, within a point spacing or so of the cloud. up/forward
    None: unknown (see detect_landmarks)."""
    if scan.is_mesh:
        return detect_landmarks(scan.vertices, scan.faces, colors=scan.colors, texture=scan.texture,
                                uv=scan.uv, up=up, forward=forward, **kw)
    from .scan import surface_from_points
    if len(scan.vertices) < 20_000:
        raise UserError(f"the point cloud has {len(scan.vertices):,} points, too sparse to find a face "
                        f"automatically (20,000 or more are needed): place landmarks by hand")
    v, f = surface_from_points(scan.sample_points(500_000))
    if len(f) == 0:
        raise UserError("no surface could be made from the point cloud: place landmarks by hand")
    return detect_landmarks(v, f, up=up, forward=forward, **kw)


def load_openhead_embedding() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenHead's MediaPipe landmark embedding from the bundled asset: (mediapipe_index (L,) int64,
    faces (L,) int64, bary (L, 3) float32), valid landmarks only."""
    res = resources.files("headcraft_backend.assets") / OPENHEAD_LANDMARK_ASSET
    with resources.as_file(res) as p:
        with np.load(p, allow_pickle=False) as z:
            idx = np.asarray(z["mediapipe_index"], np.int64)
            tri = np.asarray(z["faces"], np.int64)
            bary = np.asarray(z["bary"], np.float32)
            valid = np.asarray(z["valid"], bool) if "valid" in z.files else tri >= 0
    keep = valid & (tri >= 0)
    return idx[keep], tri[keep], bary[keep]


def model_landmark_embedding(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A head model's MediaPipe landmarks as (mediapipe_index (L,), faces (L,), bary (L, 3)).

    OpenHead: the bundled ``openhead-1-landmarks.npz``. FLAME: ``data.landmark_faces`` /
    ``landmark_bary`` when they are the 105-point MediaPipe embedding (their MediaPipe ids are
    :data:`FLAME_MEDIAPIPE_INDICES`, the published file's order). Raises UserError otherwise.
    """
    if data.name == "openhead":
        idx, tri, bary = load_openhead_embedding()
        if tri.size and tri.max() >= len(data.faces):
            raise UserError(f"the OpenHead landmark asset does not match OpenHead {data.version} "
                            f"(triangle {tri.max()} of {len(data.faces)})")
        return idx, tri, bary
    if data.landmark_faces is not None and len(data.landmark_faces) == len(FLAME_MEDIAPIPE_INDICES):
        return (np.array(FLAME_MEDIAPIPE_INDICES, np.int64),
                np.asarray(data.landmark_faces, np.int64),
                np.asarray(data.landmark_bary, np.float32))
    if data.landmark_faces is None:
        raise UserError(f"the {data.name} head model has no landmark embedding: set the path to "
                        f"FLAME's mediapipe_landmark_embedding.npz in the HeadCraft preferences, "
                        f"or place landmarks manually")
    raise UserError(f"the {data.name} head model's landmark embedding has "
                    f"{len(data.landmark_faces)} points, not the 105 of FLAME's MediaPipe "
                    f"embedding (mediapipe_landmark_embedding.npz); automatic landmarks need that "
                    f"file, or place landmarks manually")
