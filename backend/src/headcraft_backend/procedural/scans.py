"""Procedural test scans with ground truth, made from a head model (OpenHead or FLAME).

A scan is built in five steps, all deterministic from one integer seed:

1. Ground truth coefficients: identity 0.8 * N(0, 1) (first 100 components), expression (OpenHead:
   2-5 ARKit keys in [0, 0.6], never tongueOut; PCA models: N(0, 0.5) on the first 50
   components), a small neck pose (N(0, 3.4 deg) per axis, clipped to 8.6 deg) and a small jaw
   opening (0-6.9 deg). Eyes and the global joint stay at rest (the similarity covers it).
2. The true surface, in the MODEL frame (metres, Y up, face +Z): the posed coarse head is
   refined by edge splitting (every edge longer than a per-region threshold is split until none
   is: 1.5 mm on face and ears, 2.5 mm on scalp and neck, 4 mm in the mouth: 148K vertices /
   295K triangles for OpenHead; the topology is computed once per model on the template and
   cached in memory, ~2-3 s), and the refined vertices
   are placed on a smooth surface by Phong tessellation of the coarse triangles (shape factor
   0.75), so the truth is smoother and finer than the coarse model. Added on top:
   * hair: an outward offset along heavily smoothed normals on the scalp, fading at the hairline,
     the ears and the nape; styles in HAIRSTYLES (short = 3-8 mm, long = 8-14 mm on top growing
     to 20-30 mm down the back of the head and neck, ...), with a low-frequency thickness
     variation and ~0.2-0.5 mm strand ridges;
   * skin detail on the face: random bumps (wavelengths 2.5-12 mm, RMS 0.10-0.18 mm, peaks
     ~0.5 mm) and forehead wrinkles (0.1-0.3 mm), which a high-detail registration can recover.
   Or, with `look=` (a Look, `random_look(seed)`), hair of real volume (bald to 8 cm afros, buns,
   ponytails, fringes, partings, receding hairlines), facial hair, headwear (cap with a brim,
   beanie, headband, a 10-20 cm turban), ear shape and age-dependent pores and wrinkles: all
   offsets of the same dense surface, slope-capped and thinned where a triangle would turn over.
3. What a scanner sees: vertices visible from any of ~22 directions around and above the head
   (z-buffer of the posed coarse head, so the mouth interior, the eyeballs behind the lids and
   deep ear folds drop out), minus `holes` random geodesic patches (radius 5-15 mm; at most one,
   3-6 mm, on the face, so the face keeps most of its area).
4. Artefacts: Gaussian noise along the normals (noise_mm), junk (a shoulder stub joined to the
   neck opening and 2-4 floating fragments 15-30 cm from the head), optional vertex colour.
5. A random similarity x_scan = scale * R @ x_model + t: rotations up to 25 deg about each axis
   (max_rotation_deg), scale = unit (1, 100 or 1000: metres, centimetres, millimetres) x U(0.9, 1.1).

The scan keeps the truth's vertex numbering where it can: `scan_truth_index[i]` is the truth
vertex a scan vertex came from (-1 for junk and stub), so masks and errors can be compared
vertex by vertex. Nothing here touches the disk; two scans with the same seed are identical.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from ..head.data import HeadModelData
from ..head.topology import adjacency, averaging, unique_edges
from ..fit.render import vertex_normals
from ..raster import Camera, rasterize

if TYPE_CHECKING:
    from ..head.model import HeadModel

__all__ = ["HAIRSTYLES", "Look", "SyntheticScan", "PartialView", "DepthView", "make_scan", "random_look",
           "partial_view", "depth_view", "sparse_subset", "similarity_matrix", "truth_on_template"]

HAIRSTYLES = ("none", "buzz", "short", "long", "bob", "bun", "ponytail", "fringe", "beard")
# Styles that leave the face region bare (face truth == clean head + skin detail).
BARE_FACE_STYLES = ("none", "buzz", "short", "long", "bob", "bun", "ponytail")

# Edge-split thresholds in metres (per coarse vertex, the smallest of its regions wins).
SPLIT_THRESHOLDS = {"face": 1.5e-3, "ears": 1.5e-3, "eye_region": 1.5e-3, "nose": 1.5e-3,
                    "lips": 1.5e-3, "eyeballs": 2.0e-3, "scalp": 2.5e-3, "neck": 2.5e-3,
                    "inner_mouth": 4.0e-3}
DEFAULT_THRESHOLD = 2.5e-3
PHONG_ALPHA = 0.75
VIEW_PIXEL = 1.25e-3          # z-buffer pixel for the scanner's visibility test (metres)
VIEW_TOLERANCE = 1.2e-3       # depth slack of the visibility test (metres)
UNITS = (1.0, 100.0, 1000.0)  # metres, centimetres, millimetres


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SyntheticScan:
    """A procedural scan and its ground truth. Scan arrays are in the SCAN frame; truth and
    model arrays in the MODEL frame (metres, Y up, face +Z): x_scan = scale * R @ x + t."""
    vertices: np.ndarray            # (N, 3) float64 scan vertices (scan frame)
    faces: np.ndarray               # (M, 3) int32
    colors: np.ndarray | None       # (N, 3) uint8 RGB vertex colours, or None
    points: np.ndarray | None       # (P, 3) float64 point cloud sampled on the scan (scan frame)
    point_normals: np.ndarray | None  # (P, 3) unit normals of those points
    scale: float                    # model metres -> scan units
    rotation: np.ndarray            # (3, 3)
    translation: np.ndarray         # (3,) in scan units
    shape: np.ndarray               # (S,) float32 identity coefficients (model's full length)
    expr: np.ndarray                # (E,) float32 expression coefficients
    pose: np.ndarray                # (J, 3) float32 axis-angle per joint
    truth_vertices: np.ndarray      # (Vt, 3) float64 true surface (hair + detail), model frame
    truth_faces: np.ndarray         # (Ft, 3) int32, no holes
    truth_regions: dict[str, np.ndarray]  # region name -> int32 truth vertex indices (may overlap)
    truth_hair_mm: np.ndarray       # (Vt,) float32 hair thickness added at each truth vertex (mm)
    truth_detail_mm: np.ndarray     # (Vt,) float32 signed skin detail offset (mm)
    truth_observed: np.ndarray      # (Vt,) bool: the vertex is in the scan (visible, not in a hole)
    truth_base_vertices: np.ndarray  # (Vt, 3) the same refined surface without hair and detail
    model_vertices: np.ndarray      # (V, 3) float64 posed coarse head (no hair), model frame
    model_faces: np.ndarray         # (F, 3) int32
    scan_truth_index: np.ndarray    # (N,) int64 truth vertex of each scan vertex, -1 = junk/stub
    seed: int
    hair: str
    noise_mm: float
    expression_keys: dict[str, float]  # OpenHead: the ARKit keys used; PCA models: {}
    model_name: str
    look: dict[str, float | str | bool] = dataclasses.field(default_factory=dict)  # the Look's fields; {} for `hair`

    @property
    def mm_per_scan_unit(self) -> float:
        return 1000.0 / self.scale

    def similarity_matrix(self) -> np.ndarray:
        """4x4 matrix mapping model-frame points (metres) to the scan frame."""
        return similarity_matrix(self.scale, self.rotation, self.translation)

    def to_scan(self, x) -> np.ndarray:
        return self.scale * np.asarray(x, np.float64) @ self.rotation.T + self.translation

    def to_model(self, y) -> np.ndarray:
        return (np.asarray(y, np.float64) - self.translation) @ self.rotation / self.scale


@dataclasses.dataclass
class PartialView:
    """A single-view depth-map-like point cloud of a scan (one point per covered pixel)."""
    points: np.ndarray              # (K, 3) scan frame
    normals: np.ndarray             # (K, 3) unit normals (facing the camera)
    truth_index: np.ndarray         # (K,) truth vertex nearest each point's triangle corner, -1 = junk
    view_dir: np.ndarray            # (3,) unit, scan frame: from the head towards the camera
    view_dir_model: np.ndarray      # (3,) the same in the model frame
    pixel_index: np.ndarray         # (K,) row * width + column in the depth image
    image_shape: tuple[int, int]    # (H, W)
    pixel_size: float               # scan units


@dataclasses.dataclass
class DepthView:
    """A pinhole depth camera's image of a scan, as a depth sensor gives it (fit/depth.py's
    conventions: OpenCV camera frame, z-depth, 0 where nothing was seen)."""
    depth: np.ndarray               # (H, W) float64 z-depth in scan units, 0 = background
    intrinsics: tuple[float, float, float, float]   # fx, fy, cx, cy (pixels; pixel centres at integers)
    rotation: np.ndarray            # (3, 3) scan frame -> camera frame (rows: right, down, forward)
    position: np.ndarray            # (3,) the camera's centre, scan frame
    truth_seen: np.ndarray          # (Vt,) bool: truth vertices this view sees

    def to_scan(self, points) -> np.ndarray:
        """Camera-frame points -> the scan frame."""
        return np.asarray(points, np.float64) @ self.rotation + self.position


def similarity_matrix(scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = scale * np.asarray(rotation)
    m[:3, 3] = translation
    return m


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _unit(v, axis=-1):
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _euler(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _graph(v, f):
    e = unique_edges(f)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    return adjacency(e, len(v), w)


def _laplacian_average(f, n):
    """Row-normalised vertex adjacency (uniform averaging operator)."""
    return averaging(unique_edges(f), n)


def _geodesic(graph, sources, limit):
    if len(sources) == 0:
        return np.full(graph.shape[0], np.inf)
    return dijkstra(graph, directed=False, indices=sources, min_only=True, limit=limit)


# ------------------------------------------------------------------------------------------------
# Refinement by edge splitting (crack-free: decisions are per edge)
# ------------------------------------------------------------------------------------------------
# Child triangles of a face, as indices into its 6 points [V0, V1, V2, M01, M12, M20] after
# rotating the face so that the split pattern is canonical.
_ONE = np.array([[0, 3, 2], [3, 1, 2]])                     # edge 0 split
_TWO_A = np.array([[0, 3, 5], [3, 1, 2], [3, 2, 5]])        # edges 0 and 2 split, diagonal M01-V2
_TWO_B = np.array([[0, 3, 5], [3, 1, 5], [5, 1, 2]])        # diagonal V1-M20
_THREE = np.array([[0, 3, 5], [1, 4, 3], [2, 5, 4], [3, 4, 5]])


def refine(vertices, faces, vertex_threshold, max_iter: int = 10):
    """Split every edge longer than the mean threshold of its end points until none is.

    Returns faces (Fd, 3), the coarse triangle of each dense triangle (Fd,), the barycentric
    coordinates of each dense corner in that triangle (Fd, 3, 3), and the dense vertex count.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    thr = np.asarray(vertex_threshold, np.float64)
    parent = np.arange(len(f))
    cb = np.broadcast_to(np.eye(3), (len(f), 3, 3)).copy()
    for _ in range(max_iter):
        n = len(v)
        a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
        key = np.minimum(a, b) * n + np.maximum(a, b)
        uk, inv = np.unique(key, return_inverse=True)
        ua, ub = uk // n, uk % n
        split = np.linalg.norm(v[ua] - v[ub], axis=1) > 0.5 * (thr[ua] + thr[ub])
        if not split.any():
            break
        new_id = np.full(len(uk), -1, np.int64)
        new_id[split] = n + np.arange(split.sum())
        v = np.concatenate([v, 0.5 * (v[ua[split]] + v[ub[split]])])
        thr = np.concatenate([thr, 0.5 * (thr[ua[split]] + thr[ub[split]])])
        fe = inv.reshape(-1, 3)
        s = split[fe]
        k = s.sum(1)
        same = k == 0                                      # untouched faces are kept as they are
        nf, npar, ncb = [f[same]], [parent[same]], [cb[same]]
        act = np.flatnonzero(~same)
        s, k = s[act], k[act]
        mid = new_id[fe[act]]
        # Rotation so that: k=1 -> edge 0 split; k=2 -> edges 0 and 2 split (edge 1 not).
        r = np.zeros(len(act), np.int64)
        r[k == 1] = np.argmax(s[k == 1], 1)
        r[k == 2] = (np.argmin(s[k == 2], 1) - 1) % 3
        idx = (np.arange(3)[None] + r[:, None]) % 3
        rows = np.arange(len(act))[:, None]
        V = f[act][rows, idx]
        M = mid[rows, idx]
        B = cb[act][rows, idx]                             # (m, 3, 3) corner barycentrics
        MB = 0.5 * (B + B[:, [1, 2, 0]])                   # midpoints of edges 0, 1, 2
        P = np.concatenate([V, M], 1)                      # (m, 6)
        PB = np.concatenate([B, MB], 1)                    # (m, 6, 3)
        par = parent[act]

        def emit(sel, pattern):
            if not sel.any():
                return
            ids = np.flatnonzero(sel)
            nf.append(P[ids][:, pattern].reshape(-1, 3))
            npar.append(np.repeat(par[ids], len(pattern)))
            ncb.append(PB[ids][:, pattern].reshape(-1, 3, 3))

        emit(k == 1, _ONE)
        two = k == 2
        if two.any():
            m2 = np.where(two[:, None], M, 0)
            d_a = np.linalg.norm(v[m2[:, 0]] - v[V[:, 2]], axis=1)
            d_b = np.linalg.norm(v[V[:, 1]] - v[m2[:, 2]], axis=1)
            emit(two & (d_a <= d_b), _TWO_A)
            emit(two & (d_a > d_b), _TWO_B)
        emit(k == 3, _THREE)
        f = np.concatenate(nf)
        parent = np.concatenate(npar)
        cb = np.concatenate(ncb)
    return f, parent, cb, len(v)


# ------------------------------------------------------------------------------------------------
# Per-model cache: refined topology, region weights, geodesic fields
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Dense:
    faces: np.ndarray               # (Fd, 3) int32
    vtri: np.ndarray                # (Vd,) coarse triangle per dense vertex
    vbary: np.ndarray               # (Vd, 3) barycentrics in it
    corner_ids: np.ndarray          # (Vd, 3) coarse vertex ids of that triangle
    region_w: dict[str, np.ndarray]  # continuous membership per region (Vd,)
    regions: dict[str, np.ndarray]  # name -> dense vertex indices (membership >= 0.5)
    rest: np.ndarray                # (Vd, 3) refined neutral template
    graph: sp.csr_matrix            # dense edge graph, rest lengths (metres)
    avg: sp.csr_matrix              # dense uniform averaging operator
    coarse_avg: sp.csr_matrix       # coarse uniform averaging operator
    dist: dict[str, np.ndarray]     # geodesic distance (mm) to region sets
    boundary_loops: list[np.ndarray]  # ordered dense boundary loops, lowest (neck) first
    head_centre: np.ndarray
    model: HeadModel
    ear_rings: list[np.ndarray] = dataclasses.field(default_factory=list)  # ear borders, +X side first


_CACHE: dict[str, _Dense] = {}
_LOCK = threading.Lock()


def _model_key(data: HeadModelData) -> str:
    h = hashlib.sha1()
    for a in (data.v_template, data.faces, data.shapedirs[:, :, :1], data.exprdirs[:, :, :1]):
        h.update(np.ascontiguousarray(a).tobytes())
    for k in sorted(data.regions):
        h.update(k.encode())
        h.update(np.ascontiguousarray(data.regions[k]).tobytes())
    return f"{data.name}:{data.version}:{h.hexdigest()}"


def _phong(X, N, corner_ids, bary, alpha=PHONG_ALPHA):
    """Phong tessellation of coarse triangles at barycentric points, and interpolated normals."""
    P = X[corner_ids]                   # (Vd, 3, 3)
    Nc = N[corner_ids]
    b = bary[:, :, None]
    q = (b * P).sum(1)
    proj = q[:, None, :] - ((q[:, None, :] - P) * Nc).sum(-1, keepdims=True) * Nc
    pos = (1.0 - alpha) * q + alpha * (b * proj).sum(1)
    return pos, _unit((b * Nc).sum(1))


def _boundary_loops(f):
    """Ordered boundary loops, following the half-edges' direction (a -> b as in the faces)."""
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = int(f.max()) + 1
    fwd = he[:, 0] * n + he[:, 1]
    rev = he[:, 1] * n + he[:, 0]
    border = he[~np.isin(fwd, rev)]
    nxt = dict(zip(border[:, 0].tolist(), border[:, 1].tolist()))
    loops, seen = [], set()
    for start in border[:, 0].tolist():
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen and cur in nxt:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        if len(loop) >= 3:
            loops.append(np.array(loop, np.int64))
    return sorted(loops, key=len, reverse=True)


def _dense_for(data: HeadModelData) -> _Dense:
    key = _model_key(data)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        from ..head.model import HeadModel
        Vc = data.num_vertices
        thr = np.full(Vc, np.inf)
        for name, t in SPLIT_THRESHOLDS.items():
            if name in data.regions:
                thr[data.regions[name]] = np.minimum(thr[data.regions[name]], t)
        thr[~np.isfinite(thr)] = DEFAULT_THRESHOLD
        cf = data.faces.astype(np.int64)
        faces, parent, cb, nv = refine(data.v_template, cf, thr)
        # One (triangle, barycentrics) per dense vertex: any incident corner gives the same point.
        vtri = np.zeros(nv, np.int64)
        vbary = np.zeros((nv, 3))
        flat = faces.reshape(-1)
        vtri[flat] = np.repeat(parent, 3)
        vbary[flat] = cb.reshape(-1, 3)
        corner_ids = cf[vtri]
        region_w, regions = {}, {}
        for name, idx in data.regions.items():
            m = np.zeros(Vc)
            m[idx] = 1.0
            w = (vbary * m[corner_ids]).sum(1)
            region_w[name] = w
            regions[name] = np.flatnonzero(w >= 0.5 - 1e-9).astype(np.int32)
        vt = data.v_template.astype(np.float64)
        rest, _ = _phong(vt, vertex_normals(vt, cf), corner_ids, vbary)
        graph = _graph(rest, faces)
        dist = {}
        sets = {"face": ("face", "eye_region", "nose", "lips", "eyeballs"), "ears": ("ears",),
                "neck": ("neck",), "scalp": ("scalp",)}
        for name, members in sets.items():
            src = np.unique(np.concatenate([regions[m] for m in members if m in regions] or
                                           [np.zeros(0, np.int32)]))
            dist[name] = _geodesic(graph, src, limit=0.08) * 1000.0
        face_scalp = np.concatenate([data.regions.get("scalp", np.zeros(0, int)),
                                     data.regions.get("face", np.zeros(0, int))])
        centre = vt[face_scalp].mean(0) if len(face_scalp) else vt.mean(0)
        lo, hi = vt.min(0), vt.max(0)
        centre = np.array([0.5 * (lo[0] + hi[0]), centre[1], 0.5 * (lo[2] + hi[2])])
        dense = _Dense(
            faces=faces.astype(np.int32), vtri=vtri, vbary=vbary, corner_ids=corner_ids,
            region_w=region_w, regions=regions, rest=rest, graph=graph,
            avg=_laplacian_average(faces, nv), coarse_avg=_laplacian_average(cf, Vc), dist=dist,
            boundary_loops=[], head_centre=centre, model=HeadModel(data))
        # The neck opening: the lowest of the open boundaries (FLAME also has eye/mouth rims).
        loops = _boundary_loops(faces)
        loops.sort(key=lambda lp: float(rest[lp, 1].mean()))
        dense.boundary_loops = loops
        # Where each ear meets the head, and the distance (mm) into the ear from there.
        ears = np.zeros(nv, bool)
        ears[regions.get("ears", np.zeros(0, np.int32))] = True
        e = unique_edges(faces)
        cross = ears[e[:, 0]] != ears[e[:, 1]]
        ring = np.unique(np.where(ears[e[cross, 0]], e[cross, 0], e[cross, 1]))
        dense.ear_rings = [ring[rest[ring, 0] > 0], ring[rest[ring, 0] <= 0]]
        dist["ear_depth"] = np.where(ears, _geodesic(graph, ring, limit=0.03) * 1000.0, 0.0)
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = dense
        return dense


# ------------------------------------------------------------------------------------------------
# Ground truth sampling
# ------------------------------------------------------------------------------------------------
def _sample_coefficients(data: HeadModelData, rng):
    S, E, J = data.num_shape, data.num_expr, len(data.joint_names)
    shape = np.zeros(S, np.float32)
    ns = min(S, 100)
    shape[:ns] = 0.8 * rng.standard_normal(ns)
    expr = np.zeros(E, np.float32)
    keys: dict[str, float] = {}
    names = list(data.expr_names)
    if data.name == "openhead" or (names and not names[0].lower().startswith("exp")):
        choices = [i for i, nm in enumerate(names) if nm != "tongueOut"]
        for i in rng.choice(choices, size=int(rng.integers(2, 6)), replace=False):
            expr[i] = rng.uniform(0.0, 0.6)
            keys[names[i]] = float(expr[i])
    else:
        ne = min(E, 50)
        expr[:ne] = 0.5 * rng.standard_normal(ne)
    pose = np.zeros((J, 3), np.float32)
    if J > 1:
        pose[1] = np.clip(rng.normal(0.0, 0.06, 3), -0.15, 0.15)     # neck
    if J > 2:
        pose[2, 0] = rng.uniform(0.0, 0.12)                          # jaw opening
    return shape, expr, pose, keys


def _posed_coarse(dense: _Dense, shape, expr, pose):
    import torch
    with torch.no_grad():
        out = dense.model(shape=torch.from_numpy(shape)[None], expr=torch.from_numpy(expr)[None],
                          pose=torch.from_numpy(pose)[None])
    return out.vertices[0].double().numpy()


# ------------------------------------------------------------------------------------------------
# Hair and skin detail
# ------------------------------------------------------------------------------------------------
def _fourier(x, rng, n, lam_lo, lam_hi):
    """Sum of n random plane waves over points x (metres), unit RMS; wavelengths in metres."""
    dirs = _unit(rng.standard_normal((n, 3)))
    lam = np.exp(rng.uniform(np.log(lam_lo), np.log(lam_hi), n))
    amp = np.sqrt(lam / lam_hi)
    phase = rng.uniform(0, 2 * np.pi, n)
    k = dirs * (2 * np.pi / lam)[:, None]
    val = np.cos(x @ k.T + phase) @ amp
    return val / np.sqrt(0.5 * (amp ** 2).sum())


def _hair_field(dense: _Dense, style: str, rng, neck_hair: bool = True):
    """Hair thickness in mm per dense vertex (before smoothing); neck_hair=False keeps long
    styles off the neck region."""
    R = dense.rest
    W = dense.region_w
    d = dense.dist
    zero = np.zeros(len(R))
    if style == "none":
        return zero
    u = _unit(R - dense.head_centre)
    scalp = W.get("scalp", zero)
    neck = W.get("neck", zero)
    face = W.get("face", zero)
    ears_fade = _smoothstep(d["ears"] / 8.0)
    cap = scalp * _smoothstep(d["face"] / 10.0) * ears_fade * _smoothstep(d["neck"] / 12.0)
    var = np.clip(_fourier(u * 0.1, rng, 6, 0.06, 0.2), -1.5, 1.5)   # smooth over the head
    if style == "buzz":
        return rng.uniform(1.0, 2.5) * scalp * _smoothstep(d["face"] / 5.0) * \
            _smoothstep(d["ears"] / 5.0) * _smoothstep(d["neck"] / 6.0) * (1 + 0.15 * var)
    t_short = rng.uniform(3.0, 8.0) * (1 + 0.25 * var)
    y, z, x = R[:, 1], R[:, 2], R[:, 0]
    c = dense.head_centre
    if style in ("long", "bob"):
        back = _smoothstep((c[2] - 0.005 - z) / 0.035)
        long_ = style == "long"
        y_nape = c[1] - 0.03
        y_end = c[1] - (rng.uniform(0.085, 0.1) if long_ else rng.uniform(0.06, 0.075))
        t_top = rng.uniform(10.0, 15.0) if long_ else rng.uniform(6.0, 10.0)
        t_bot = rng.uniform(22.0, 30.0) if long_ else rng.uniform(12.0, 18.0)
        # Scalp and neck weights sum to 1 across their border, so the two parts add up.
        cov = scalp * _smoothstep(d["face"] / 10.0) * ears_fade * \
            (back + (1 - back) * _smoothstep(d["neck"] / 12.0)) + \
            neck_hair * neck * back * ears_fade * _smoothstep((y - y_end) / 0.02)
        down = _smoothstep((y_nape - y) / max(y_nape - y_end - 0.02, 1e-3)) * back
        return cov * (t_top * (1 + 0.25 * var) + (t_bot - t_top) * down)
    hair = cap * t_short
    if style in ("bun", "ponytail"):
        if style == "bun":
            dirn = _unit(np.array([0.0, 0.6, -0.8]) + rng.normal(0, 0.1, 3))
            sig, height = rng.uniform(0.018, 0.025), rng.uniform(25.0, 40.0)
        else:
            dirn = _unit(np.array([0.0, 0.1, -1.0]) + rng.normal(0, 0.05, 3))
            sig, height = rng.uniform(0.014, 0.02), rng.uniform(20.0, 30.0)
        apex = R[np.argmax(u @ dirn * scalp)]
        dlt = R - apex
        if style == "ponytail":
            g2 = (dlt[:, 0] ** 2 + dlt[:, 2] ** 2) / sig ** 2 + (dlt[:, 1] / (2 * sig)) ** 2
        else:
            g2 = (dlt ** 2).sum(1) / sig ** 2
        hair = np.maximum(hair, height * np.exp(-g2) * (cap > 0.05))
    elif style == "fringe":
        y_fr = c[1] + rng.uniform(0.035, 0.05)
        t_short = np.maximum(t_short, rng.uniform(4.0, 8.0))
        fr = face * _smoothstep((y - y_fr) / 0.012) * _smoothstep((0.065 - np.abs(x)) / 0.015)
        fr = np.maximum(fr, scalp * _smoothstep(1.0 - d["face"] / 15.0) *
                        _smoothstep((0.065 - np.abs(x)) / 0.015) * (z > c[2]))
        hair = np.maximum(hair, fr * t_short)
    elif style == "beard":
        lips = W.get("lips", zero)
        y_b = c[1] - rng.uniform(0.045, 0.055)
        beard = face * (1 - lips) * _smoothstep((y_b - y) / 0.015)
        beard = np.maximum(beard, neck * _smoothstep((z - (c[2] + 0.01)) / 0.02) *
                           _smoothstep((y - (c[1] - 0.13)) / 0.02))
        hair = np.maximum(hair, beard * rng.uniform(2.0, 6.0))
    return hair


def _strands(dense: _Dense, rng, coverage):
    """Hair strand ridges (~0.2-0.5 mm) radiating from the crown, plus clumps."""
    u = _unit(dense.rest - dense.head_centre)
    a = _unit(np.array([0.0, 0.9, -0.4]) + rng.normal(0, 0.05, 3))
    e1 = _unit(np.cross(a, [1.0, 0.0, 0.0]))
    e2 = np.cross(a, e1)
    theta = np.arccos(np.clip(u @ a, -1, 1))
    phi = np.arctan2(u @ e2, u @ e1)
    nlines = rng.integers(50, 80)
    ridge = np.sin(nlines * phi + 2.0 * np.sin(2 * phi + rng.uniform(0, 6.3)) + 6.0 * theta)
    amp = rng.uniform(0.2, 0.45) * _smoothstep((theta - 0.25) / 0.35)
    on = np.flatnonzero(coverage > 0)
    clumps = np.zeros(len(u))
    clumps[on] = 0.25 * _fourier(dense.rest[on], rng, 12, 0.008, 0.025)
    return (amp * ridge + clumps) * coverage


def _skin_detail(dense: _Dense, rng):
    """Signed offset in mm: face bumps and forehead wrinkles."""
    R = dense.rest
    zero = np.zeros(len(R))
    face = dense.region_w.get("face", zero)
    on = np.flatnonzero(face > 0)
    R, face = R[on], face[on]
    bumps = rng.uniform(0.10, 0.18) * _fourier(R, rng, 32, 0.0025, 0.012)
    c = dense.head_centre
    y, x = R[:, 1], R[:, 0]
    lam = rng.uniform(0.006, 0.010)
    wav = 0.004 * np.sin(2 * np.pi * x / rng.uniform(0.05, 0.08) + rng.uniform(0, 6.3))
    forehead = _smoothstep((y - (c[1] + 0.022)) / 0.01) * _smoothstep((c[1] + 0.07 - y) / 0.012) * \
        _smoothstep((0.055 - np.abs(x)) / 0.015)
    wrinkles = rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * (y + wav) / lam) * forehead
    out = np.zeros(len(dense.rest))
    out[on] = face * (bumps + wrinkles)
    return out


# ------------------------------------------------------------------------------------------------
# Varied looks: hair, facial hair, headwear, ears and age as parameters (make_scan(look=...))
# ------------------------------------------------------------------------------------------------
LOOK_HAIR = ("bald", "buzz", "crop", "medium", "long", "curly", "afro", "bun", "ponytail")
BEARDS = ("none", "stubble", "moustache", "goatee", "short", "full", "long")
HEADWEAR = ("none", "cap", "beanie", "headband", "turban")
PARTS = ("none", "left", "centre", "right")
# Bounds of Look's numbers (name, low, high).
LOOK_RANGES = (("length_mm", 0.0, 100.0), ("curl", 0.0, 1.0), ("recession", 0.0, 1.0),
               ("beard_mm", 0.0, 100.0), ("headwear_mm", 0.0, 250.0), ("age", 15.0, 95.0),
               ("ear_scale", 0.8, 1.25), ("ear_angle_deg", -5.0, 25.0))
# random_look's ranges per kind (mm): hair on top of the head, facial hair, headwear.
HAIR_MM = {"bald": (0.0, 0.0), "buzz": (1.0, 3.0), "crop": (4.0, 12.0), "medium": (12.0, 30.0),
           "long": (12.0, 30.0), "curly": (20.0, 45.0), "afro": (40.0, 80.0), "bun": (6.0, 15.0),
           "ponytail": (6.0, 15.0)}
BEARD_MM = {"none": (0.0, 0.0), "stubble": (0.5, 1.5), "moustache": (4.0, 10.0), "goatee": (8.0, 25.0),
            "short": (3.0, 8.0), "full": (10.0, 30.0), "long": (35.0, 80.0)}
HEADWEAR_MM = {"none": (0.0, 0.0), "cap": (45.0, 70.0), "beanie": (6.0, 10.0), "headband": (3.0, 6.0),
               "turban": (100.0, 200.0)}
HAIR_SLOPE = 2.0     # steepest rise of hair per unit of surface distance
WEAR_SLOPE = 15.0    # the same for headwear (a cap's brim is a steep fin)


@dataclasses.dataclass(frozen=True)
class Look:
    """What a procedural head wears, as parameters (`random_look` samples them from a seed).

    hair: one of LOOK_HAIR; length_mm: how far it stands off the top of the head (long styles
    grow to twice that down the back, buns and ponytails add their own volume); curl: 0 straight
    to 1 tight curls (lumps of ~15 % of the length); fringe: hair over the forehead; part: a
    parting line (left = the subject's left, +X); recession: 0 a full hairline to 1 receded by
    ~55 mm at the temples and ~25 mm in the middle. beard: one of BEARDS, beard_mm its
    thickness (long beards double it at the chin). headwear: one of HEADWEAR; headwear_mm is the
    cap's brim length, the beanie's or headband's thickness, or the turban's height above the
    crown. age: years (wrinkles deepen from 20 on). ear_scale, ear_angle_deg: ear size and how
    far the ears turn out about their front edge.
    """
    hair: str = "medium"
    length_mm: float = 20.0
    curl: float = 0.0
    fringe: bool = False
    part: str = "none"
    recession: float = 0.0
    beard: str = "none"
    beard_mm: float = 0.0
    headwear: str = "none"
    headwear_mm: float = 0.0
    age: float = 30.0
    ear_scale: float = 1.0
    ear_angle_deg: float = 0.0

    def check(self) -> None:
        """Raises ValueError naming the first bad parameter."""
        for name, value, choices in (("hair", self.hair, LOOK_HAIR), ("beard", self.beard, BEARDS),
                                     ("headwear", self.headwear, HEADWEAR), ("part", self.part, PARTS)):
            if value not in choices:
                raise ValueError(f"unknown look {name} {value!r}; choose one of {', '.join(choices)}")
        for name, lo, hi in LOOK_RANGES:
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"look {name} = {value} is outside {lo:g}..{hi:g}")


def random_look(seed: int, **fixed) -> Look:
    """A look drawn from `seed` (the same seed, the same look); `fixed` sets any field, and the
    fields that depend on it follow it: random_look(3, hair="afro") draws an afro's length."""
    names = {f.name for f in dataclasses.fields(Look)}
    if set(fixed) - names:
        raise ValueError(f"unknown look field(s) {', '.join(sorted(set(fixed) - names))}; "
                         f"choose from {', '.join(sorted(names))}")
    order = [f.name for f in dataclasses.fields(Look)]

    def pick(name, draw):       # each field draws from a stream of its own: fixing one leaves the others
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 29, order.index(name)]))
        return fixed[name] if name in fixed else draw(rng)

    hair = pick("hair", lambda r: str(r.choice(LOOK_HAIR, p=[0.07, 0.1, 0.14, 0.15, 0.14, 0.11, 0.09, 0.1, 0.1])))
    styled = hair in ("crop", "medium", "long")
    length = pick("length_mm", lambda r: float(r.uniform(*HAIR_MM[hair])))
    curl = pick("curl", lambda r: float(r.uniform(0.6, 1.0) if hair in ("curly", "afro") else r.uniform(0.0, 0.3)))
    fringe = pick("fringe", lambda r: bool(styled and r.random() < 0.35))
    part = pick("part", lambda r: str(r.choice(PARTS)) if styled and not fringe else "none")
    recession = pick("recession", lambda r: float(r.uniform(0.2, 1.0))
                     if hair in ("buzz", "crop", "medium") and r.random() < 0.3 else 0.0)
    beard = pick("beard", lambda r: str(r.choice(BEARDS[1:])) if r.random() < 0.4 else "none")
    beard_mm = pick("beard_mm", lambda r: float(r.uniform(*BEARD_MM[beard])))
    headwear = pick("headwear", lambda r: str(r.choice(HEADWEAR[1:], p=[0.3, 0.25, 0.25, 0.2]))
                    if r.random() < 0.25 else "none")
    headwear_mm = pick("headwear_mm", lambda r: float(r.uniform(*HEADWEAR_MM[headwear])))
    look = Look(hair=hair, length_mm=length, curl=curl, fringe=fringe, part=part, recession=recession,
                beard=beard, beard_mm=beard_mm, headwear=headwear, headwear_mm=headwear_mm,
                age=pick("age", lambda r: float(r.uniform(18.0, 80.0))),
                ear_scale=pick("ear_scale", lambda r: float(r.uniform(0.9, 1.12))),
                ear_angle_deg=pick("ear_angle_deg", lambda r: float(r.uniform(-3.0, 18.0))))
    look.check()
    return look


def _landmarks(dense: _Dense) -> dict[str, np.ndarray]:
    """Rough facial landmarks of the refined template from its regions (OpenHead and FLAME)."""
    R = dense.rest
    out = {}
    lips = R[dense.regions["lips"]]
    out["mouth"] = lips.mean(0)
    out["mouth_corner"] = np.array([np.abs(lips[:, 0]).max(), out["mouth"][1], lips[:, 2].min()])
    nose = R[dense.regions["nose"]]
    low = nose[nose[:, 1] < np.quantile(nose[:, 1], 0.25)]
    out["nose_wing"] = np.array([np.abs(low[:, 0]).max(), low[:, 1].mean(), low[:, 2].min()])
    eyes = R[dense.regions["eyeballs"]]
    out["eye"] = np.array([np.abs(eyes[:, 0]).mean(), eyes[:, 1].mean(), eyes[:, 2].mean()])
    out["brow_y"] = np.array(out["eye"][1] + 0.021)
    return out


def _ear_offset(dense: _Dense, look: Look) -> np.ndarray:
    """Per-vertex displacement (metres, rest frame) scaling each ear about its base and turning
    it out about the base's front, faded in from the ear's border over 8 mm."""
    out = np.zeros((len(dense.rest), 3))
    if look.ear_scale == 1.0 and look.ear_angle_deg == 0.0:
        return out
    R = dense.rest
    w = _smoothstep(dense.dist["ear_depth"] / 8.0)
    for side in (1.0, -1.0):
        mine = np.flatnonzero((w > 0) & (np.sign(R[:, 0]) == side))
        ring = dense.ear_rings[0 if side > 0 else 1]
        if len(mine) == 0 or len(ring) == 0:
            continue
        centre = R[ring].mean(0)
        pivot = R[ring[np.argmax(R[ring, 2])]]
        p = centre + look.ear_scale * (R[mine] - centre)
        a = -side * np.radians(look.ear_angle_deg)     # the back of the ear moves outwards
        ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        p = pivot + (p - pivot) @ ry.T
        out[mine] = w[mine, None] * (p - R[mine])
    return out


def _look_hair(dense: _Dense, look: Look, rng) -> np.ndarray:
    """Scalp hair thickness in mm for a look (before smoothing, curls and the slope cap)."""
    R, W, d, c = dense.rest, dense.region_w, dense.dist, dense.head_centre
    zero = np.zeros(len(R))
    if look.hair == "bald":
        return zero
    x, y, z = R.T
    u = _unit(R - c)
    scalp, neck = W.get("scalp", zero), W.get("neck", zero)
    # Receding: the hairline moves back from the face border, at the temples first (an M).
    front = _smoothstep((z - c[2]) / 0.04)
    temple = _smoothstep((np.abs(x) - 0.02) / 0.03)
    back_mm = look.recession * front * (25.0 + 30.0 * temple)
    var = np.clip(_fourier(u * 0.1, rng, 6, 0.06, 0.2), -1.5, 1.5)
    t = look.length_mm * (1 + 0.1 * var) * (0.8 + 0.2 * _smoothstep(u[:, 1] / 0.8))
    if look.hair in ("buzz", "crop"):
        ramp = 5.0 if look.hair == "buzz" else 8.0
        cov = scalp * _smoothstep((d["face"] - back_mm) / ramp) * _smoothstep(d["ears"] / ramp) * \
            _smoothstep(d["neck"] / ramp)
        hair = cov * t
    else:
        back = _smoothstep((c[2] - 0.005 - z) / 0.035)
        ears_fade = _smoothstep(d["ears"] / 8.0)
        hairline = _smoothstep((d["face"] - back_mm) / 10.0)
        if look.hair == "long":
            y_end = c[1] - rng.uniform(0.085, 0.1)
            down = _smoothstep((c[1] - 0.03 - y) / max(c[1] - 0.05 - y_end, 1e-3)) * back
            cov = scalp * hairline * ears_fade * (back + (1 - back) * _smoothstep(d["neck"] / 12.0)) + \
                neck * back * ears_fade * _smoothstep((y - y_end) / 0.02)
            hair = cov * t * (1 + down)
        else:       # medium, curly, afro, bun, ponytail: the volume ends at the nape
            cov = scalp * hairline * ears_fade * _smoothstep(d["neck"] / (10.0 + 0.3 * look.length_mm))
            hair = cov * t
    if look.hair in ("bun", "ponytail"):
        dirn = _unit(np.array([0.0, 0.6, -0.8]) if look.hair == "bun" else np.array([0.0, 0.15, -1.0]))
        dirn = _unit(dirn + rng.normal(0, 0.08, 3))
        apex = R[np.argmax(u @ dirn * scalp)]
        dlt = R - apex
        if look.hair == "bun":
            r_b, height = rng.uniform(0.022, 0.032), rng.uniform(40.0, 70.0)
            rho = np.linalg.norm(dlt, axis=1) / r_b
            hair = np.maximum(hair, height * np.sqrt(np.clip(1 - rho ** 2, 0, 1)))
        else:       # the tie, and the tail hanging from it down the back of the head and neck
            width, height = rng.uniform(0.016, 0.022), rng.uniform(25.0, 40.0)
            tail = np.exp(-(dlt[:, 0] / width) ** 2) * _smoothstep((apex[1] + 0.01 - y) / 0.02) * \
                _smoothstep((y - (apex[1] - 0.16)) / 0.03) * back
            tie = np.exp(-(dlt ** 2).sum(1) / (0.6 * width) ** 2)
            hair = np.maximum(hair, height * np.maximum(tail, tie))
    if look.fringe:
        y_fr = c[1] + rng.uniform(0.04, 0.06)
        fr = W.get("face", zero) * _smoothstep((y - y_fr) / 0.008) * _smoothstep((0.06 - np.abs(x)) / 0.015)
        hair = np.maximum(hair, fr * np.minimum(t, 12.0))
    if look.part != "none":
        x_part = {"left": 0.025, "centre": 0.0, "right": -0.025}[look.part]
        on_top = _smoothstep((y - (c[1] + 0.07)) / 0.02) * _smoothstep((z - (c[2] - 0.04)) / 0.03)
        hair = hair * (1 - 0.7 * on_top * np.exp(-((x - x_part) / 0.003) ** 2))
        if x_part:      # combed over: the far side fuller
            hair = hair * (1 + 0.2 * on_top * np.tanh((x - x_part) / 0.02 * -np.sign(x_part)))
    if look.curl > 0:       # lumps of up to ~15 % of the length
        lumps = 0.07 * _fourier(R, rng, 24, 0.012, 0.04) + 0.03 * _fourier(R, rng, 16, 0.004, 0.009)
        hair = hair * (1 + look.curl * np.clip(lumps, -0.15, 0.15))
    return np.maximum(hair, 0.0)


def _beard(dense: _Dense, look: Look, lm: dict[str, np.ndarray]) -> np.ndarray:
    """Facial hair thickness in mm (before smoothing)."""
    R, W, c = dense.rest, dense.region_w, dense.head_centre
    zero = np.zeros(len(R))
    if look.beard == "none":
        return zero
    x, y, z = R.T
    face, neck = W.get("face", zero) * (1 - W.get("lips", zero)), W.get("neck", zero)
    m, corner, wing = lm["mouth"], lm["mouth_corner"], lm["nose_wing"]
    # The mouth stays clear: an ellipse a little larger than the lips.
    ell = np.sqrt((x / (corner[0] + 0.004)) ** 2 + ((y - m[1]) / 0.013) ** 2)
    clear = _smoothstep((ell - 1.0) / 0.25)
    # The moustache hangs over the upper lip's top half, up to the nose.
    upper_lip = W.get("face", zero) * _smoothstep((y - m[1] - 0.003) / 0.004) * \
        _smoothstep((wing[1] + 0.002 - y) / 0.004) * _smoothstep((corner[0] + 0.008 - np.abs(x)) / 0.006)
    chin = face * _smoothstep((m[1] - 0.008 - y) / 0.005) * _smoothstep((corner[0] + 0.002 - np.abs(x)) / 0.008)
    # Full beards: the lower face below a cheek line rising towards the sideburns, and the throat.
    cheek_line = m[1] + 0.015 + 0.9 * np.maximum(np.abs(x) - corner[0], 0.0)
    jaw = face * _smoothstep((np.minimum(cheek_line, wing[1] + 0.03) - y) / 0.008)
    throat = neck * _smoothstep((z - (c[2] + 0.01)) / 0.02) * _smoothstep((y - (c[1] - 0.12)) / 0.02)
    t = look.beard_mm
    if look.beard == "moustache":
        return upper_lip * t
    if look.beard == "goatee":
        return np.maximum(chin * t, upper_lip * 0.5 * t) * clear
    full = np.maximum(jaw, throat) * clear
    if look.beard == "long":      # longest at the chin
        return full * t * (0.4 + 0.6 * _smoothstep((m[1] - y) / 0.05))
    return np.maximum(full, upper_lip * clear) * t


def _headwear(dense: _Dense, look: Look, lm: dict[str, np.ndarray]):
    """(covered weight, thickness in mm, brim weight) of the headwear over the head."""
    R, c = dense.rest, dense.head_centre
    zero = np.zeros(len(R))
    if look.headwear == "none":
        return zero, zero, zero
    x, y, z = R.T
    front_z = R[:, 2].max()
    lift = {"cap": 0.02, "beanie": 0.018, "headband": 0.024, "turban": 0.012}[look.headwear]
    # Signed distance (m) above the rim: a plane 17 deg from level, lowest at the back.
    e = ((y - lm["brow_y"] - lift) - 0.3 * (z - front_z)) / np.sqrt(1.09)
    covered = _smoothstep(e / 0.004)
    h = look.headwear_mm
    brim = zero
    if look.headwear == "beanie":
        thick = h + 3.0 * _smoothstep((0.025 - e) / 0.003)       # the folded cuff
    elif look.headwear == "headband":
        width = 0.035
        covered = covered * _smoothstep((width - e) / 0.003)
        thick = np.full(len(R), h)
    elif look.headwear == "cap":
        thick = np.full(len(R), 3.0)
        # The brim: a fin off the forehead, its lower face over 5 mm and its upper over 10 mm.
        ahead = _smoothstep((z - c[2] - 0.03) / 0.03) * _smoothstep((0.085 - np.abs(x)) / 0.045)
        brim = ahead * np.where(e < 0.002, _smoothstep((e + 0.003) / 0.005), _smoothstep((0.012 - e) / 0.01))
        covered = np.maximum(covered, brim)
        thick = np.maximum(thick, h * brim)
    else:       # turban: 25 mm of cloth at the rim rising to its height over the crown
        a = _unit(R - c)[:, 1]
        thick = 25.0 + (h - 25.0) * _smoothstep((a - 0.2) / 0.8) ** 1.5
        thick = thick * (1 + 0.04 * np.sin(40.0 * (x + 0.5 * y)))    # the wraps
    return covered, thick, brim


def _cap_slope(h, dense: _Dense, direction, nrm, slope: float) -> np.ndarray:
    """Lowers h (mm) until it rises along no edge faster than `slope` mm per mm of surface, nor
    faster than 0.8 / sin(angle between the offset direction and the normal): an offset tilted
    by that angle shears the surface, and a steeper rise would fold it."""
    sin = np.linalg.norm(np.cross(direction, nrm), axis=1)
    sin = np.where((direction * nrm).sum(1) > 0, sin, 1.0)
    limit = np.minimum(slope, 0.8 / np.maximum(sin, 1e-6))
    g = dense.graph.tocsr()         # rows sorted: one reduceat per sweep
    a = np.repeat(np.arange(len(h)), np.diff(g.indptr))
    b = g.indices
    step = g.data * 1000.0 * np.minimum(limit[a], limit[b])
    rows = np.flatnonzero(np.diff(g.indptr) > 0)
    h = h.copy()
    for _ in range(500):
        cand = np.minimum.reduceat(h[b] + step, g.indptr[rows])
        new = h.copy()
        new[rows] = np.minimum(h[rows], cand)
        if np.array_equal(new, h):
            break
        h = new
    return h


def _unfold(dense: _Dense, base, direction, h, start=None, max_iter: int = 80) -> np.ndarray:
    """Thins the offset h (mm) where `start` (default: base) moved by it turns triangles over
    against `base` (where the offset directions converge faster than the surface bends, as
    under the chin, or a wrinkle is sharper than the mesh): smoothly by up to 30 % around every
    such triangle, until none is left."""
    f = dense.faces.astype(np.int64)

    def normals(v):
        return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])

    n0 = normals(base)
    for _ in range(max_iter):
        bad = (normals((base if start is None else start) + direction * (h * 1e-3)[:, None]) * n0).sum(1) <= 0
        if not bad.any():
            break
        w = np.zeros(len(h))
        w[f[bad].ravel()] = 1.0
        for _ in range(3):
            w = np.maximum(w, dense.avg @ w)
        h = h * (1 - 0.3 * w)
    return h


def _look_offsets(dense: _Dense, look: Look, rng, base, hair_dir, nrm):
    """Offset (mm) along a direction field for a look: hair, facial hair and headwear, and the
    regions each covers. Returns (offset_mm, direction, regions)."""
    lm = _landmarks(dense)
    hair = _look_hair(dense, look, rng)
    beard = _beard(dense, look, lm)
    for _ in range(4):
        hair, beard = dense.avg @ hair, dense.avg @ beard
    if not look.fringe:         # smoothing must not leak scalp hair onto the face
        hair = hair * _smoothstep(dense.dist["face"] / 3.0)
    ears = _smoothstep(dense.dist["ears"] / 3.0)        # nor hair onto the ears
    hair, beard = hair * ears, beard * ears
    total = _cap_slope(np.maximum(hair, beard), dense, hair_dir, nrm, HAIR_SLOPE)
    total = np.maximum(total + _strands(dense, rng, _smoothstep(total / 2.0)) * (total > 0.5), 0.0)
    covered, thick, brim = _headwear(dense, look, lm)
    # Under headwear the hair is pressed flat (at most 6 mm of it remains).
    offset = total * (1 - covered) + covered * (np.minimum(total, 20.0) * 0.3 + thick)
    direction = hair_dir
    if look.headwear == "cap":          # the brim leaves along the true normal (no shear)
        wb = _smoothstep(brim / 0.01)
        direction = _unit(hair_dir * (1 - wb)[:, None] + nrm * wb[:, None])
    elif look.headwear == "turban":     # the upper turban rises more steeply than the normals
        a = _unit(dense.rest - dense.head_centre)[:, 1]
        up = _smoothstep((a - 0.3) / 0.6) * covered
        direction = _unit(hair_dir + 1.5 * up[:, None] * np.array([0.0, 1.0, 0.0]))
    if look.headwear != "none":
        offset = _cap_slope(offset * ears, dense, direction, nrm, WEAR_SLOPE)
    offset = _unfold(dense, base, direction, offset)
    regions = {"hair": np.flatnonzero((hair > 0.5) & (covered < 0.5)),
               "facial_hair": np.flatnonzero((beard > 0.3) & (beard >= hair)),
               "headwear": np.flatnonzero(covered >= 0.5)}
    return offset, direction, {k: v.astype(np.int32) for k, v in regions.items()}


def _aged_detail(dense: _Dense, rng, age: float) -> np.ndarray:
    """Signed skin offset in mm on the face for an age: pores (2.5-5 mm wavelengths, which a
    256^2 map still holds), bumps, forehead lines, crow's feet and nasolabial folds, all
    deepening with age."""
    R = dense.rest
    zero = np.zeros(len(R))
    face = dense.region_w.get("face", zero)
    on = np.flatnonzero(face > 0)
    P, fw = R[on], face[on]
    lm = _landmarks(dense)
    k = float(np.clip((age - 20.0) / 50.0, 0.0, 1.3))   # 0 at 20 years, 1 at 70
    x, y, z = P.T
    c = dense.head_centre
    pores = (0.05 + 0.04 * k) * _fourier(P, rng, 48, 0.0025, 0.005)
    bumps = rng.uniform(0.08, 0.14) * _fourier(P, rng, 24, 0.005, 0.012)
    # Forehead lines: narrow grooves, more and deeper with age.
    lam = rng.uniform(0.006, 0.010) * (1.3 - 0.4 * min(k, 1.0))
    wav = 0.004 * np.sin(2 * np.pi * x / rng.uniform(0.05, 0.08) + rng.uniform(0, 6.3))
    forehead = _smoothstep((y - (lm["brow_y"] + 0.005)) / 0.01) * \
        _smoothstep((lm["brow_y"] + 0.05 - y) / 0.012) * _smoothstep((0.055 - np.abs(x)) / 0.015)
    lines = -(0.08 + 0.45 * k) * np.maximum(np.sin(2 * np.pi * (y + wav) / lam), 0) ** 4 * forehead
    # Crow's feet: grooves fanning out from the outer eye corners.
    eye = lm["eye"]
    rel = np.stack([np.abs(x) - (eye[0] + 0.018), y - eye[1]], 1)
    r = np.linalg.norm(rel, axis=1)
    fan = _smoothstep((r - 0.004) / 0.004) * _smoothstep((0.02 - r) / 0.006) * (rel[:, 0] > -0.002)
    crows = -0.35 * k * np.maximum(np.sin(9.0 * np.arctan2(rel[:, 1], rel[:, 0])), 0) ** 6 * fan
    # Nasolabial folds: a groove from the nose wing past the mouth corner.
    a = lm["nose_wing"][:2] + np.array([0.003, 0.0])
    b = lm["mouth_corner"][:2] + np.array([0.008, -0.012])
    q = np.stack([np.abs(x), y], 1)
    s = np.clip(((q - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    dist = np.linalg.norm(q - (a + s[:, None] * (b - a)), axis=1)
    folds = -(0.1 + 0.9 * k) * np.exp(-(dist / 0.0025) ** 2) * (z > c[2] + 0.04)
    out = np.zeros(len(R))
    out[on] = fw * (pores + bumps + lines + crows + folds)
    return out


# ------------------------------------------------------------------------------------------------
# Orthographic z-buffer
# ------------------------------------------------------------------------------------------------
def _view_basis(d):
    d = _unit(np.asarray(d, np.float64))
    up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.95 else np.array([0.0, 0.0, 1.0])
    e1 = _unit(np.cross(up, d))
    e2 = np.cross(d, e1)
    return e1, e2, d


class _ZBuffer:
    """Orthographic depth image looking along -view_dir (the camera sits at +view_dir), on the
    backend's rasteriser: depth `zbuf` and triangle `ids` per pixel (flat; inf / -1 where empty)."""

    def __init__(self, verts, faces, view_dir, pixel, cull_back=False):
        e1, e2, d = _view_basis(view_dir)
        self.basis, self.pixel = (e1, e2, d), pixel
        X, Y = verts @ e1 / pixel, verts @ e2 / pixel
        self.x0, self.y0 = np.floor(X.min()) - 2, np.floor(Y.min()) - 2
        self.W = int(np.ceil(X.max() - self.x0)) + 3
        self.H = int(np.ceil(Y.max() - self.y0)) + 3
        camera = Camera(rotation=np.stack([e1, e2, -d]), position=np.zeros(3), width=self.W, height=self.H,
                        projection="orthographic", scale=1.0 / pixel, cx=-self.x0, cy=-self.y0)
        ids, _, depth = rasterize(camera, verts, faces, cull_back=cull_back)
        self.ids = ids.ravel().astype(np.int64)
        self.zbuf = depth.ravel().astype(np.float64)

    def project(self, p):
        e1, e2, d = self.basis
        return p @ e1 / self.pixel - self.x0, p @ e2 / self.pixel - self.y0, -(p @ d)

    def visible(self, p, tol):
        """Points no deeper than the surface around them (+ tol); max over the 2x2 pixel
        neighbourhood so silhouettes are lenient."""
        X, Y, Z = self.project(p)
        i0 = np.clip(np.floor(X - 0.5).astype(np.int64), 0, self.W - 2)
        j0 = np.clip(np.floor(Y - 0.5).astype(np.int64), 0, self.H - 2)
        zb = self.zbuf
        ref = np.maximum(np.maximum(zb[j0 * self.W + i0], zb[j0 * self.W + i0 + 1]),
                         np.maximum(zb[(j0 + 1) * self.W + i0], zb[(j0 + 1) * self.W + i0 + 1]))
        return Z <= ref + tol


def _scanner_directions(n=32, min_y=-0.35):
    k = np.arange(n) + 0.5
    y = 1 - 2 * k / n
    r = np.sqrt(1 - y * y)
    phi = np.pi * (1 + 5 ** 0.5) * k
    d = np.stack([r * np.cos(phi), y, r * np.sin(phi)], 1)
    return d[d[:, 1] >= min_y]


def _visible_vertices(coarse_v, coarse_f, points, normals):
    vis = np.zeros(len(points), bool)
    for d in _scanner_directions():
        todo = np.flatnonzero(~vis)
        if len(todo) == 0:
            break
        facing = normals[todo] @ d > 0.1
        todo = todo[facing]
        zb = _ZBuffer(coarse_v, coarse_f, d, VIEW_PIXEL)
        vis[todo[zb.visible(points[todo], VIEW_TOLERANCE)]] = True
    return vis


# ------------------------------------------------------------------------------------------------
# Junk
# ------------------------------------------------------------------------------------------------
def _icosphere(level=2):
    t = (1 + 5 ** 0.5) / 2
    v = _unit(np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                        [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
                       np.float64))
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]], np.int64)
    for _ in range(level):
        f2, _, _, n = refine(v, f, np.zeros(len(v)), max_iter=1)
        e = np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1)
        uk = np.unique(e[:, 0] * len(v) + e[:, 1])
        mids = 0.5 * (v[uk // len(v)] + v[uk % len(v)])
        v = _unit(np.concatenate([v, mids]))
        f = f2
    return v, f


def _fragments(rng, centre):
    """2-4 floating blobs or sheets 15-30 cm from the head centre (model frame, metres)."""
    out = []
    for _ in range(int(rng.integers(2, 5))):
        dirn = _unit(rng.normal(size=3) + np.array([0, 0.3, 0]))
        pos = centre + dirn * rng.uniform(0.15, 0.3)
        if rng.random() < 0.6:
            v, f = _icosphere(2)
            v = v * rng.uniform(0.004, 0.02) * rng.uniform(0.6, 1.4, 3)
            v = v + rng.normal(0, 0.0005, v.shape)
        else:       # a bit of background sheet
            n = int(rng.integers(8, 20))
            gx, gy = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
            v = np.stack([gx.ravel(), gy.ravel(), 0.05 * rng.normal(size=n * n)], 1) * \
                rng.uniform(0.01, 0.03)
            q = np.arange(n * n).reshape(n, n)
            a, b, c, d = q[:-1, :-1].ravel(), q[:-1, 1:].ravel(), q[1:, 1:].ravel(), q[1:, :-1].ravel()
            f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
        R = _euler(*rng.uniform(-np.pi, np.pi, 3))
        out.append((v @ R.T + pos, f))
    return out


def _shoulder_stub(rng, ring0):
    """Rings below the neck opening flaring into shoulders; ring 0 is the loop itself."""
    c = ring0.mean(0)
    y_min = ring0[:, 1].min()
    K = 12
    drop = rng.uniform(0.08, 0.11)
    sx, sz = rng.uniform(2.2, 2.8), rng.uniform(1.3, 1.6)
    rings = [ring0]
    for k in range(1, K + 1):
        t = k / K
        s = _smoothstep(t / 0.35)               # levels the slanted neck cut
        flare = _smoothstep((t - 0.3) / 0.7)
        p = ring0.copy()
        p[:, 1] = (1 - s) * ring0[:, 1] + s * (y_min - 0.015) - drop * t
        p[:, 0] = c[0] + (ring0[:, 0] - c[0]) * (1 + (sx - 1) * flare)
        p[:, 2] = c[2] + (ring0[:, 2] - c[2]) * (1 + (sz - 1) * flare)
        p[:, 1] -= 0.02 * flare * (np.abs(ring0[:, 0] - c[0]) / (np.abs(ring0[:, 0] - c[0]).max() + 1e-9))
        rings.append(p)
    n = len(ring0)
    v = np.concatenate(rings[1:])
    return v, K, n


def _stub_faces(loop_ids, first_new, K, n):
    """Quads between consecutive rings; ring 0 uses the head's loop vertex ids."""
    def ring(k):
        return loop_ids if k == 0 else first_new + (k - 1) * n + np.arange(n)
    faces = []
    for k in range(K):
        a, b = ring(k), ring(k + 1)
        a1, b1 = np.roll(a, -1), np.roll(b, -1)
        # The loop runs along the head's half-edges a -> a1; the stub's faces use a1 -> a.
        faces.append(np.stack([a1, a, b], 1))
        faces.append(np.stack([a1, b, b1], 1))
    return np.concatenate(faces)


# ------------------------------------------------------------------------------------------------
# Colour
# ------------------------------------------------------------------------------------------------
def _colours(dense: _Dense, rng, hair_mm, eye_centres, wear=None):
    R = dense.rest
    zero = np.zeros(len(R))
    skin = np.array([rng.uniform(0.55, 0.95), 0, 0])
    skin[1] = skin[0] * rng.uniform(0.68, 0.8)
    skin[2] = skin[1] * rng.uniform(0.72, 0.88)
    col = np.tile(skin, (len(R), 1)) * (1 + 0.04 * _fourier(R, rng, 8, 0.005, 0.03))[:, None]
    lips = dense.region_w.get("lips", zero)[:, None]
    col = col * (1 - 0.6 * lips) + lips * 0.6 * np.array([0.75, 0.35, 0.35])
    hair_col = rng.choice(np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.55, 0.4, 0.2],
                                    [0.45, 0.2, 0.1], [0.6, 0.6, 0.6]]))
    hc = _smoothstep(hair_mm / 1.5)[:, None]
    col = col * (1 - hc) + hc * hair_col
    eyes = dense.region_w.get("eyeballs", zero) > 0.5
    for ec in eye_centres:      # brows above each eye, white eyeballs with iris and pupil
        rel = R - ec
        brow = ((rel[:, 0] / 0.024) ** 2 + ((rel[:, 1] - 0.021) / 0.0055) ** 2 < 1) & ~eyes
        col[brow] = col[brow] * 0.3 + 0.7 * hair_col
        mine = eyes & (np.linalg.norm(rel, axis=1) < 0.03)
        cosang = _unit(rel[mine]) @ np.array([0, 0, 1.0])
        ecol = np.tile([0.92, 0.92, 0.9], (mine.sum(), 1))
        ecol[cosang > np.cos(np.radians(28))] = rng.choice(np.array([[0.3, 0.2, 0.1], [0.2, 0.35, 0.5],
                                                                      [0.25, 0.4, 0.25]]))
        ecol[cosang > np.cos(np.radians(12))] = 0.03
        col[mine] = ecol
    if wear is not None:        # headwear in a colour of its own
        w = wear[:, None]
        col = col * (1 - w) + w * rng.uniform(0.1, 0.85, 3)
    return np.clip(col * 255, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------
def make_scan(data: HeadModelData, seed: int, *, hair: str = "short", noise_mm: float = 0.2,
              holes: int = 3, similarity: bool = True, scale: float | None = None,
              junk: bool = True, n_points: int | None = None, color: bool = True,
              shoulders: bool | None = None, detail: bool = True, neck_hair: bool = True,
              max_rotation_deg: float = 25.0, look: Look | None = None, scanner: bool = True) -> SyntheticScan:
    """A procedural scan of a random head of `data` with its ground truth (see module doc).

    hair: one of HAIRSTYLES. noise_mm: std of the Gaussian noise along normals. holes: number
    of geodesic patches removed. similarity: random rotation + translation + unit scale (False:
    identity, unless `scale` is given). scale: fixes the scale (metres -> scan units). junk:
    floating fragments (and, unless shoulders=False, a shoulder stub). n_points: also sample a
    point cloud of that many points on the scan. color: procedural vertex colours (skin, hair,
    lips, brows, irises) so landmark detection on renders has something to see. detail: skin
    detail on the face. neck_hair: long and bob styles hang over the neck (False: the volume
    stays on the scalp). max_rotation_deg: bound of the random rotation about each axis (0: the
    scan stays upright, face +Z). scanner: False skips the scanner's visibility test, so every
    truth vertex counts as seen (for uses that need only the truth; the truth is the same, and
    the scan ~2x faster). ~1 s per scan after a one-off ~2-3 s per model (refinement and
    geodesic fields, cached in memory).

    look: a Look (see `random_look`) instead of `hair`: hair of any volume, facial hair,
    headwear, ear shape and age-dependent skin detail (the identity, expression, holes, noise
    and similarity are those of the same seed without it). Everything a look adds is an offset
    of the same dense surface, so the truth keeps its topology: truth_base_vertices includes
    the ears' shape, truth_hair_mm is the whole offset along the hair directions (hair, beard,
    and headwear with the hair pressed under it), truth_detail_mm the skin detail, and
    truth_regions gains "hair", "facial_hair" and "headwear" (the truth vertices each covers).
    """
    if look is not None:
        if hair != "short":
            raise ValueError("give make_scan either hair (a HAIRSTYLES name) or look, not both")
        look.check()
    if hair not in HAIRSTYLES:
        raise ValueError(f"unknown hair style {hair!r}; choose one of {', '.join(HAIRSTYLES)}")
    if not (noise_mm >= 0 and holes >= 0 and (scale is None or scale > 0) and 0 <= max_rotation_deg <= 180):
        raise ValueError("noise_mm and holes must be >= 0, scale > 0 and max_rotation_deg in 0..180")
    if shoulders is None:
        shoulders = junk
    dense = _dense_for(data)
    ss = np.random.SeedSequence(int(seed))
    r_coef, r_hair, r_det, r_vis, r_noise, r_junk, r_sim, r_col, r_pts = \
        (np.random.default_rng(s) for s in ss.spawn(9))

    shape, expr, pose, keys = _sample_coefficients(data, r_coef)
    X = _posed_coarse(dense, shape, expr, pose)
    cf = data.faces.astype(np.int64)
    Nc = vertex_normals(X, cf)
    base, nrm = _phong(X, Nc, dense.corner_ids, dense.vbary)

    # Hair along heavily smoothed normals; the field itself is smoothed to avoid folds.
    Ns = Nc
    for _ in range(20):
        Ns = _unit(dense.coarse_avg @ Ns)
    hair_dir = _unit((dense.vbary[:, :, None] * Ns[dense.corner_ids]).sum(1))
    skin = base             # the scanner's visibility test looks at the skin before any look
    look_regions: dict[str, np.ndarray] = {}
    wear = None
    if look is None:
        hair_mm = _hair_field(dense, hair, r_hair, neck_hair)
        if hair != "none":
            for _ in range(6):
                hair_mm = dense.avg @ hair_mm
            hair_mm = hair_mm + _strands(dense, r_hair, _smoothstep(hair_mm / 2.0)) * (hair_mm > 0.5)
            hair_mm = np.maximum(hair_mm, 0.0)
            if hair in BARE_FACE_STYLES:     # smoothing must not leak hair onto the face
                hair_mm = hair_mm * _smoothstep(dense.dist["face"] / 3.0)
        det_mm = _skin_detail(dense, r_det) if detail else np.zeros(len(base))
    else:
        hair = look.hair
        base = base + _ear_offset(dense, look)
        hair_mm, hair_dir, look_regions = _look_offsets(dense, look, r_hair, base, hair_dir, nrm)
        det_mm = _aged_detail(dense, r_det, look.age) if detail else np.zeros(len(base))
        if look.headwear != "none":
            wear = np.zeros(len(base))
            wear[look_regions["headwear"]] = 1.0
    det_mm = det_mm * (1 - _smoothstep(hair_mm / 1.0))
    outer = base + hair_dir * (hair_mm * 1e-3)[:, None]
    if look is not None:
        det_mm = _unfold(dense, base, nrm, det_mm, start=outer)
    truth = outer + nrm * (det_mm * 1e-3)[:, None]

    # What the scanner sees.
    vis = _visible_vertices(X, cf, skin, nrm) if scanner else np.ones(len(skin), bool)
    observed = vis.copy()
    F = dense.faces.astype(np.int64)
    face_w = dense.region_w.get("face", np.zeros(len(base)))
    face_core = face_w > 0.5
    face_holes = 0
    for _ in range(int(holes)):
        on_face = face_holes == 0 and r_vis.random() < 0.3
        pool = np.flatnonzero(vis & (face_core if on_face else ~face_core))
        if len(pool) == 0:
            continue
        seed_v = pool[r_vis.integers(len(pool))]
        radius = r_vis.uniform(0.003, 0.006) if on_face else r_vis.uniform(0.005, 0.015)
        dd = dijkstra(dense.graph, directed=False, indices=[seed_v], limit=radius)[0]
        observed &= ~np.isfinite(dd)
        face_holes += int(on_face)
    keep_f = observed[F].all(1)
    observed = np.zeros(len(base), bool)
    observed[F[keep_f].ravel()] = True

    noisy = truth + nrm * (r_noise.normal(0.0, noise_mm * 1e-3, len(truth)))[:, None]
    scan_v = [noisy]
    scan_f = [F[keep_f]]
    src = [np.arange(len(truth))]
    n_total = len(truth)
    if shoulders and dense.boundary_loops:
        loop = dense.boundary_loops[0]
        sv, K, n = _shoulder_stub(r_junk, noisy[loop])
        sv = sv + r_noise.normal(0.0, noise_mm * 1e-3, sv.shape)
        sf = _stub_faces(loop, n_total, K, n)
        scan_v.append(sv)
        scan_f.append(sf)
        src.append(np.full(len(sv), -1))
        n_total += len(sv)
    if junk:
        for fv, ff in _fragments(r_junk, dense.head_centre):
            scan_v.append(fv)
            scan_f.append(ff + n_total)
            src.append(np.full(len(fv), -2))
            n_total += len(fv)
    V_all = np.concatenate(scan_v)
    F_all = np.concatenate(scan_f)
    src_all = np.concatenate(src)
    used = np.zeros(len(V_all), bool)
    used[F_all.ravel()] = True
    remap = np.cumsum(used) - 1
    V_s, F_s, src_s = V_all[used], remap[F_all].astype(np.int32), src_all[used]
    truth_observed = np.zeros(len(truth), bool)
    truth_observed[src_s[src_s >= 0]] = True

    colors = None
    if color:
        eb = data.regions.get("eyeballs", np.zeros(0, int))
        vt = data.v_template
        centres = [vt[eb[vt[eb, 0] > 0]].mean(0), vt[eb[vt[eb, 0] <= 0]].mean(0)] if len(eb) else []
        tcol = _colours(dense, r_col, hair_mm, centres, wear)
        colors = np.empty((len(V_s), 3), np.uint8)
        colors[src_s >= 0] = tcol[src_s[src_s >= 0]]
        stub = np.flatnonzero(src_s == -1)
        if len(stub):       # neck skin fading into a plain garment
            loop = dense.boundary_loops[0]
            bare = loop[hair_mm[loop] < 0.5]
            neck_col = tcol[bare if len(bare) else loop].mean(0)
            cloth = r_col.uniform(20, 200, 3)
            tfade = _smoothstep((V_s[loop, 1].min() - V_s[stub, 1]) / 0.03)[:, None]
            colors[stub] = np.clip(neck_col * (1 - tfade) + cloth * tfade, 0, 255).astype(np.uint8)
        frag = np.flatnonzero(src_s == -2)
        colors[frag] = np.clip(r_col.normal(140, 30, (len(frag), 1)) + r_col.normal(0, 8, (len(frag), 3)),
                               0, 255).astype(np.uint8)

    if similarity:
        s, R, t = _sample_similarity(r_sim, scale, max_rotation_deg)
    else:
        R, s, t = np.eye(3), float(scale) if scale is not None else 1.0, np.zeros(3)
    V_scan = s * V_s @ R.T + t

    points = point_normals = None
    if n_points:
        points, point_normals = _sample_surface(V_scan, F_s, int(n_points), r_pts)

    return SyntheticScan(
        vertices=V_scan, faces=F_s, colors=colors, points=points, point_normals=point_normals,
        scale=s, rotation=R, translation=t, shape=shape, expr=expr, pose=pose,
        truth_vertices=truth, truth_faces=dense.faces.copy(),
        truth_regions={**{k: v.copy() for k, v in dense.regions.items()}, **look_regions},
        truth_hair_mm=hair_mm.astype(np.float32), truth_detail_mm=det_mm.astype(np.float32),
        truth_observed=truth_observed, truth_base_vertices=base, model_vertices=X,
        model_faces=data.faces.astype(np.int32).copy(),
        scan_truth_index=np.maximum(src_s, -1).astype(np.int64),
        seed=int(seed), hair=hair, noise_mm=float(noise_mm), expression_keys=keys,
        model_name=data.name, look=dataclasses.asdict(look) if look is not None else {})


def _triangle_frames(v, f):
    """(F, 3, 3) orthonormal frames, columns (first edge, in-plane normal to it, face normal)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e1 = _unit(b - a)
    n = _unit(np.cross(b - a, c - a))
    return np.stack([e1, np.cross(n, e1), n], -1)


def truth_on_template(data: HeadModelData, scan: SyntheticScan) -> np.ndarray:
    """(Vt, 3) the scan's hair, headwear and skin detail on the model's neutral template: the
    same refined surface of the template (identity 0, no expression, no pose; faces
    scan.truth_faces) plus each truth vertex's offset from the scan's bare surface
    (truth_vertices - truth_base_vertices), turned from the frame of its coarse triangle on the
    posed head into the frame of that triangle on the template. Identity, expression and pose
    drop out; what is left is the displacement part that a UV map carries (ear shape, which
    a look puts into the bare surface, stays out)."""
    if scan.model_name != data.name:
        raise ValueError(f"the scan was made from {scan.model_name!r}, not {data.name!r}")
    dense = _dense_for(data)
    if len(dense.rest) != len(scan.truth_vertices):
        raise ValueError("the scan's truth does not have this model's refined topology")
    cf = data.faces.astype(np.int64)
    posed = _triangle_frames(np.asarray(scan.model_vertices, np.float64), cf)[dense.vtri]
    rest = _triangle_frames(data.v_template.astype(np.float64), cf)[dense.vtri]
    local = np.einsum("vji,vj->vi", posed, scan.truth_vertices - scan.truth_base_vertices)
    return dense.rest + np.einsum("vij,vj->vi", rest, local)


def _sample_similarity(rng, scale=None, max_rotation_deg=25.0):
    """Rotation up to max_rotation_deg about each axis (R = Rz Ry Rx), scale = a random unit
    (m, cm, mm) x U(0.9, 1.1) unless given, translation up to 0.5 m per axis (in scan units)."""
    R = _euler(*np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)))
    s = float(scale) if scale is not None else float(UNITS[rng.integers(3)] * rng.uniform(0.9, 1.1))
    t = s * rng.uniform(-0.5, 0.5, 3)
    return s, R, t


def _sample_surface(v, f, n, rng):
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cr = np.cross(b - a, c - a)
    area = np.linalg.norm(cr, axis=1)
    cum = np.cumsum(area)
    tri = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1]), len(f) - 1)
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    p = a[tri] + (b[tri] - a[tri]) * r1[:, None] + (c[tri] - a[tri]) * r2[:, None]
    return p, _unit(cr[tri])


# ------------------------------------------------------------------------------------------------
# Partial observations
# ------------------------------------------------------------------------------------------------
def partial_view(scan: SyntheticScan, seed: int, view_dir=None, *, pixel_mm: float = 1.0) -> PartialView:
    """What a depth camera looking at the scan from one direction sees: one point per covered
    pixel (orthographic z-buffer of the scan mesh, back faces dropped, so holes stay holes).

    view_dir: from the head towards the camera, in the MODEL frame (default: random, yaw within
    +-70 deg of the face, pitch -15..35 deg). pixel_mm: pixel size in millimetres.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    if view_dir is None:
        yaw = np.radians(rng.uniform(-70, 70))
        pitch = np.radians(rng.uniform(-15, 35))
        view_dir = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    dm = _unit(np.asarray(view_dir, np.float64))
    ds = scan.rotation @ dm
    pixel = pixel_mm / scan.mm_per_scan_unit
    v = scan.vertices
    f = scan.faces.astype(np.int64)
    zb = _ZBuffer(v, f, ds, pixel, cull_back=True)
    pix = np.flatnonzero(zb.ids >= 0)
    tri = zb.ids[pix]
    py, px = pix // zb.W, pix % zb.W
    e1, e2, d = zb.basis
    X = (px + 0.5 + zb.x0) * pixel
    Y = (py + 0.5 + zb.y0) * pixel
    pts = X[:, None] * e1 + Y[:, None] * e2 - zb.zbuf[pix][:, None] * d
    a, b, c = v[f[tri, 0]], v[f[tri, 1]], v[f[tri, 2]]
    nrm = _unit(np.cross(b - a, c - a))
    corners = np.stack([a, b, c], 1)
    nearest = np.argmin(((corners - pts[:, None]) ** 2).sum(-1), 1)
    truth_index = scan.scan_truth_index[f[tri, nearest]]
    return PartialView(points=pts, normals=nrm, truth_index=truth_index, view_dir=ds,
                       view_dir_model=dm, pixel_index=pix, image_shape=(zb.H, zb.W),
                       pixel_size=pixel)


def depth_view(scan: SyntheticScan, view_dir=(0.0, 0.0, 1.0), *, distance_m: float = 0.6, focal_px: float = 600.0,
               size: tuple[int, int] = (400, 320), tolerance_mm: float = 1.5) -> DepthView:
    """What a depth camera `distance_m` from the head centre along `view_dir` (MODEL frame, from the
    head towards the camera; default: in front of the face) sees of the scan: a perspective z-buffer
    of the scan mesh (back faces dropped, so holes stay holes), `size` (H, W) pixels, focal length
    `focal_px`, the principal point at the image centre. `truth_seen` marks the truth vertices in
    the scan that are no deeper than the depth there (+ tolerance_mm)."""
    d = scan.rotation @ _unit(np.asarray(view_dir, np.float64))
    up = scan.rotation @ np.array([0.0, 1.0, 0.0])
    forward = -d
    right = _unit(np.cross(forward, up))
    R = np.stack([right, np.cross(forward, right), forward])
    centre = scan.to_scan(scan.truth_base_vertices.mean(0))
    position = centre + d * distance_m * scan.scale
    h, w = size
    camera = Camera(rotation=R, position=position, width=w, height=h, focal=focal_px)
    ids, _, depth = rasterize(camera, scan.vertices, scan.faces)
    depth = np.where(ids >= 0, depth, 0.0).astype(np.float64)
    xy, z = camera.project(scan.to_scan(scan.truth_vertices))
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    seen = np.zeros(len(z), bool)
    ref = depth[row[inside], col[inside]]
    seen[inside] = (ref > 0) & (z[inside] <= ref + tolerance_mm * 1e-3 * scan.scale)
    seen &= scan.truth_observed
    # the rasteriser's principal point is in continuous coordinates (pixel centres at +0.5)
    return DepthView(depth=depth, intrinsics=(focal_px, focal_px, w / 2.0 - 0.5, h / 2.0 - 0.5),
                     rotation=R, position=position, truth_seen=seen)


def sparse_subset(points, n: int, seed: int = 0, return_index: bool = False):
    """n points drawn without replacement (all of them when n >= len(points))."""
    pts = np.asarray(points)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    idx = np.arange(len(pts)) if n >= len(pts) else np.sort(rng.choice(len(pts), int(n), replace=False))
    return (pts[idx], idx) if return_index else pts[idx]
