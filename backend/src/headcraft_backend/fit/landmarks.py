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
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from importlib import resources

import numpy as np

from ..service.jobs import UserError
from .render import Camera, RenderResult, camera_for_head, head_frame, render_mesh

__all__ = ["NUM_MEDIAPIPE_LANDMARKS", "FIT_LANDMARKS", "SURFACE_LANDMARKS", "FLAME_MEDIAPIPE_INDICES", "REGIONS",
           "LandmarkResult", "detect_landmarks", "detect_landmarks_on_scan", "lift_landmarks", "model_landmark_embedding",
           "load_openhead_embedding", "OPENHEAD_LANDMARK_ASSET"]

NUM_MEDIAPIPE_LANDMARKS = 478
OPENHEAD_LANDMARK_ASSET = "openhead-1-landmarks.npz"

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
    render: RenderResult | None = None   # the render the landmarks were found on
    attempts: list = dataclasses.field(default_factory=list)  # [(yaw_deg, found), ...]

    @property
    def fit_points(self) -> np.ndarray:
        return self.points[FIT_LANDMARKS]

    @property
    def fit_valid(self) -> np.ndarray:
        return self.valid[FIT_LANDMARKS]


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
    to the side, so the default 0.65 rejects blobs without losing heads.
    """

    def __init__(self, mp, min_face_score: float = 0.65):
        self.min_face_score = float(min_face_score)
        self.det = mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=0.05)
        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min(0.5, self.min_face_score))
        self.best_score = 0.0

    def __call__(self, image: np.ndarray):
        """RGB uint8 image -> ((478, 3) landmarks in pixels (x, y and MediaPipe's relative depth z,
        in pixel-width units), face score) or (None, score)."""
        H, W = image.shape[:2]
        img = np.ascontiguousarray(image)
        d = self.det.process(img)
        score = float(max((x.score[0] for x in d.detections), default=0.0)) if d.detections else 0.0
        self.best_score = max(self.best_score, score)
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


def detect_landmarks(vertices, faces, colors=None, texture=None, uv=None, up=(0, 1, 0),
                     forward=(0, 0, 1), yaws=(0, -20, 20, -40, 40), *, centre=None,
                     radius: float | None = None, image_size: int = 512,
                     projection: str = "perspective", refine: bool = True,
                     background=(0, 0, 0), keep_render: bool = True,
                     snap_fraction: float = 0.04, snap_px: int = 2,
                     face_margin: float = 1.6, pitch_deg: float = 0.0,
                     refine_offsets=(-8.0, 0.0, 8.0), zooms=(1.0, 0.5),
                     min_face_score: float = 0.65) -> LandmarkResult:
    """Find MediaPipe's 478 face landmarks on a scan and lift them onto its surface.

    vertices (V, 3) / faces (F, 3): the scan in any units; up/forward: its (rough) up and facing
    directions. colors (V, 3) or texture + uv (F, 3, 2 or V, 2) make a coloured render; without
    them the mesh is shaded grey. The head is rendered from `forward` and, while no face is found,
    from the other `yaws` (degrees about `up`). With `refine`, once a face is found the camera is
    turned to where the face actually looks (estimated from MediaPipe's 3D landmarks), framed on
    the face, and the detection repeated from that yaw plus `refine_offsets`; per landmark the
    medoid of those views' surface points is kept (the first detection is kept when none of the
    refined views finds the face). `yaw_deg` in the result is the yaw of the face, relative to
    `forward`, as the refinement estimated it (or the yaw of the first successful view).
    centre/radius: the sphere to frame (default: bounding-box centre, farthest vertex); each
    yaw is tried at every `zooms` factor of it, zoomed views keeping the top of the scan in frame.
    snap_fraction: landmarks that fall more than this fraction of `radius` behind the nearest
    surface within `snap_px` pixels (through closed lips into the mouth) are moved onto that
    surface (see :func:`lift_landmarks`); 0 disables it. face_margin: the refined view frames a
    sphere of this many times the fit landmarks' extent. min_face_score: the BlazeFace score a
    view needs to count as a face (a shaded sphere scores ~0.55, grey heads 0.7-0.93).

    Raises UserError when no face is found from any view.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or f.ndim != 2 or f.shape[1] != 3 or not len(f):
        raise UserError("the scan must be a triangle mesh with vertices and faces")
    if not np.isfinite(v).all():
        raise UserError("the scan has NaN or infinite vertex coordinates")
    up_u, fw_u = head_frame(up, forward)
    if centre is None:
        centre = (v.min(0) + v.max(0)) / 2
    centre = np.asarray(centre, np.float64).reshape(3)
    if radius is None:
        radius = float(np.linalg.norm(v - centre, axis=1).max())
    snap_depth = snap_fraction * radius if snap_fraction else None
    mp = _import_mediapipe()
    detector = _Detector(mp, min_face_score)

    def render_at(yaw, c=centre, r=radius):
        cam = camera_for_head(v, yaw, centre=c, radius=r, up=up_u, forward=fw_u, pitch_deg=pitch_deg,
                              image_size=image_size, projection=projection)
        return render_mesh(v, f, cam, colors=colors, texture=texture, uv=uv, background=background)

    def attempt(rend):
        pts2d, score = detector(rend.image)
        if pts2d is None:
            return None
        tri, bary, valid, facing = lift_landmarks(rend, v, f, pts2d[:, :2], snap_depth=snap_depth,
                                                  snap_px=snap_px)
        return dict(pts2d=pts2d, score=score, tri=tri, bary=bary, valid=valid, facing=facing,
                    render=rend, points=_points(v, f, tri, bary, valid))

    # Zoomed-in views keep the top of the scan in frame: a head on shoulders or with clutter
    # below is too small in the full view for the face detector.
    top = float(((v - centre) @ up_u).max())
    framings = [(centre + up_u * (top - z * radius), z * radius) for z in zooms]
    attempts = []
    found = None
    try:
        for yaw in yaws:
            for c, r in framings:
                found = attempt(render_at(float(yaw), c, r))
                attempts.append((float(yaw), found is not None))
                if found is not None:
                    found["yaw"] = float(yaw)
                    break
            if found is not None:
                break
        if found is None:
            raise UserError(
                f"no face found on the scan (tried {len(attempts)} views at yaw "
                f"{', '.join(dict.fromkeys(f'{a:g}' for a, _ in attempts))} degrees; best face score "
                f"{detector.best_score:.2f}, {min_face_score:g} needed): check that the head's up "
                f"and forward directions are set correctly and the face is not hidden, or place "
                f"landmarks manually")
        if refine:
            yaw = _face_yaw(found["pts2d"], found["render"].camera, up_u, fw_u)
            fit_ok = found["valid"][FIT_LANDMARKS]
            if yaw is not None and fit_ok.sum() >= 20:
                fp = found["points"][FIT_LANDMARKS][fit_ok]
                c = (fp.min(0) + fp.max(0)) / 2
                # the face landmarks span brows..lips; frame the whole face with margin
                r = face_margin * float(np.linalg.norm(fp - c, axis=1).max())
                views = []
                for off in sorted(refine_offsets, key=abs):   # the straightest view first
                    again = attempt(render_at(yaw + float(off), c, r))
                    attempts.append((yaw + float(off), again is not None))
                    if again is not None and again["valid"][FIT_LANDMARKS].sum() >= fit_ok.sum() * 0.9:
                        views.append(again)
                if views:
                    found = _combine_views(views, v, f)
                    found["yaw"] = float(yaw)
    finally:
        detector.close()

    fit_valid = found["valid"][FIT_LANDMARKS].mean()
    return LandmarkResult(
        points=found["points"], valid=found["valid"], faces=found["tri"], bary=found["bary"],
        yaw_deg=found["yaw"], confidence=float(found["score"] * fit_valid),
        image_points=found["pts2d"][:, :2], facing=found["facing"],
        render=found["render"] if keep_render else None, attempts=attempts)


# --------------------------------------------------------------------------------------------
def detect_landmarks_on_scan(scan, up=(0, 1, 0), forward=(0, 0, 1), **kw) -> LandmarkResult:
    """detect_landmarks for a cleaned Scan: a point cloud is first given a surface (screened
    Poisson) to render, and its landmarks stay on that surface, within a point spacing or so
    of the cloud."""
    if scan.is_mesh:
        return detect_landmarks(scan.vertices, scan.faces, colors=scan.colors, up=up, forward=forward, **kw)
    from .scan import surface_from_points
    if len(scan.vertices) < 20_000:
        raise UserError(f"the point cloud has {len(scan.vertices):,} points, too sparse to find a face "
                        f"automatically (20,000 or more are needed): place landmarks by hand")
    v, f = surface_from_points(scan.vertices)
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
