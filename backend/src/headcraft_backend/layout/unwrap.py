"""The HeadCraft UV layout of a head model (paper sec. 3.1; REFERENCE section 3).

Charts come from the model's regions: the face (left half of the unit square), everything else
on the head (scalp, back, ears, neck: right half), and small charts for the eyeballs, the eye
sockets behind the lids and the inner mouth (a strip under the face). A chart that is not a disc
is cut: a scalp chart with both a face border and a neck opening is cut from the front of the
neck up to the chin (hidden under the jaw); a closed piece (an eyeball) is split in two halves
across its longest axis, recursively, until every piece is a disc (holes allowed).

Each piece is flattened with libigl: a harmonic map onto a circle for a single boundary loop,
a least-squares conformal map when it has holes (eyes and mouth in the face), then As-Rigid-As-
Possible iterations that even out area distortion. Charts are turned so the model's up axis
points to +v, never mirrored, and scaled uniformly into their boxes.

All arrays are per triangle corner of the model's coarse mesh: (F, 3, 2) UVs. The dense template
gets its UVs by barycentric interpolation inside each coarse triangle (DenseTemplate.corner_*).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import igl
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from ..head.data import HeadModelData
from .texels import rasterize

# (chart, box (u0, v0, u1, v1)) in the unit square; small charts share the strip under the face
FACE_BOX = (0.0, 0.22, 0.5, 1.0)
REST_BOX = (0.5, 0.0, 1.0, 1.0)
SMALL_BOX = (0.0, 0.0, 0.5, 0.22)
MIN_PIECE_FACES = 20          # smaller pieces of a region join their neighbours' chart
MARGIN = 0.006              # gap kept around every chart (6 texels at 1024^2)
SLIM_ITERATIONS = 30
UNWRAP_VERSION = 2          # bump when the unwrapped layout changes (cached files are remade)
UP = np.array([0.0, 1.0, 0.0])          # head models: Y up, face towards +Z
FORWARD = np.array([0.0, 0.0, 1.0])


@dataclasses.dataclass
class Layout:
    """Per-corner UVs of a head model's coarse mesh, with the chart of every triangle."""
    name: str
    uv: np.ndarray              # (F, 3, 2) float32
    chart: np.ndarray           # (F,) int16 chart index
    chart_names: list[str]
    report: dict = dataclasses.field(default_factory=dict)


def unwrap_layout(data: HeadModelData) -> Layout:
    V = data.v_template.astype(np.float64)
    F = data.faces.astype(np.int64)
    groups = triangle_groups(data, F)
    uv = np.zeros((len(F), 3, 2))
    chart = np.zeros(len(F), np.int16)
    names: list[str] = []
    placed: dict[str, list] = {"face": [], "rest": [], "small": []}
    for group in ("face", "rest", "eyeballs", "eye_sockets", "inner_mouth"):
        for piece in _disc_pieces(V, F, np.flatnonzero(groups == group)):
            piece_uv = _flatten(V, F[piece], cut_front=group == "rest")
            names.append(f"{group}.{len([n for n in names if n.startswith(group + '.')])}")
            chart[piece] = len(names) - 1
            uv[piece] = piece_uv
            placed[group if group in ("face", "rest") else "small"].append(piece)
    for key, box in (("face", FACE_BOX), ("rest", REST_BOX), ("small", SMALL_BOX)):
        _pack(uv, placed[key], box)
    layout = Layout("headcraft", uv.astype(np.float32), chart, names)
    layout.report = layout_report(V, F, layout.uv, chart, names)
    return layout


# ------------------------------------------------------------------------------------------------
# Charts
# ------------------------------------------------------------------------------------------------
def triangle_groups(data: HeadModelData, F: np.ndarray) -> np.ndarray:
    """Group of every triangle from its vertices' regions (first matching rule wins)."""
    n = data.num_vertices

    def count(*names, minus=()):
        m = np.zeros(n, bool)
        for k in names:
            m[data.regions.get(k, [])] = True
        for k in minus:
            m[data.regions.get(k, [])] = False
        return m[F].sum(1)

    groups = np.full(len(F), "rest", dtype=object)
    groups[count("face") >= 2] = "face"
    groups[count("eye_region", minus=("face",)) >= 2] = "eye_sockets"
    groups[count("inner_mouth") >= 2] = "inner_mouth"
    groups[count("eyeballs") >= 1] = "eyeballs"
    return _absorb_crumbs(F, groups)


def _absorb_crumbs(F: np.ndarray, groups: np.ndarray, min_faces: int = MIN_PIECE_FACES) -> np.ndarray:
    """Pieces of a group smaller than `min_faces` join the group most of their neighbours have
    (region masks with stray vertices would otherwise make hundreds of crumb charts)."""
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), 1)
    owner = np.tile(np.arange(len(F)), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    same = (e[order][1:] == e[order][:-1]).all(1)
    a, b = owner[order][:-1][same], owner[order][1:][same]          # edge-adjacent triangles
    for _ in range(10):
        changed = False
        for g in np.unique(groups):
            for piece in _components(F, np.flatnonzero(groups == g)):
                if len(piece) >= min_faces:
                    continue
                inside = np.zeros(len(F), bool)
                inside[piece] = True
                nb = np.concatenate([b[inside[a] & ~inside[b]], a[inside[b] & ~inside[a]]])
                if len(nb):
                    names, counts = np.unique(groups[nb], return_counts=True)
                    groups[piece] = names[counts.argmax()]
                    changed = True
        if not changed:
            break
    return groups


def _components(F: np.ndarray, faces: np.ndarray) -> list[np.ndarray]:
    """Manifold-connected components of a set of triangles (indices into F): triangles meet
    across edges with exactly two of them (see _local)."""
    if len(faces) == 0:
        return []
    _, f = _local(F[faces])
    n = len(faces)
    A = sp.coo_matrix((np.ones(f.size), (np.repeat(np.arange(n), 3), n + f.ravel())),
                      shape=(n + f.max() + 1,) * 2)
    lab = sp.csgraph.connected_components(A, directed=False)[1][:n]
    return [faces[lab == c] for c in np.unique(lab)]


def _local(F_piece: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(original vertex of each local vertex, local faces). Corners are joined only across edges
    shared by exactly two triangles, so vertices where fans touch (bowties) and edges with three
    or more triangles come apart: the local mesh is always a manifold."""
    n = len(F_piece)
    corner = np.arange(3 * n).reshape(n, 3)
    heads = np.concatenate([F_piece[:, [0, 1]], F_piece[:, [1, 2]], F_piece[:, [2, 0]]])
    hc = np.concatenate([corner[:, [0, 1]], corner[:, [1, 2]], corner[:, [2, 0]]])
    key = np.sort(heads, 1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, heads, hc = key[order], heads[order], hc[order]
    _, start, count = np.unique(key, axis=0, return_index=True, return_counts=True)
    i = start[count == 2]
    # the twin runs the other way (consistent orientation): u->v meets v->u
    twin_ok = heads[i, 0] == heads[i + 1, 1]
    i = i[twin_ok]
    a = np.concatenate([hc[i, 0], hc[i, 1]])
    b = np.concatenate([hc[i + 1, 1], hc[i + 1, 0]])
    A = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(3 * n, 3 * n))
    _, cls = sp.csgraph.connected_components(A, directed=False)
    f = cls.reshape(n, 3)
    used = np.zeros(cls.max() + 1, np.int64)
    used[cls] = F_piece.ravel()
    return used, f


def _topology(f: np.ndarray) -> tuple[int, int]:
    """(Euler characteristic, number of boundary loops) of a manifold local mesh."""
    edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1), axis=0)
    chi = f.max() + 1 - len(edges) + len(f)
    return int(chi), len(igl.boundary_loop_all(f))


def _disc_pieces(V, F, faces, depth: int = 0) -> list[np.ndarray]:
    """Connected components of a group; closed ones (eyeballs) halved across their longest axis
    until they have a boundary (higher genus is cut later, in _flatten)."""
    out = []
    for comp in _components(F, faces):
        if len(comp) < 2 or depth > 8 or _topology(_local(F[comp])[1])[1] > 0:
            out.append(comp)
            continue
        centre = V[F[comp]].mean(1)
        c0 = centre - centre.mean(0)
        axis = np.linalg.svd(c0, full_matrices=False)[2][0]
        side = c0 @ axis >= np.median(c0 @ axis)
        out += _disc_pieces(V, F, comp[side], depth + 1) + _disc_pieces(V, F, comp[~side], depth + 1)
    return out


# ------------------------------------------------------------------------------------------------
# Flattening
# ------------------------------------------------------------------------------------------------
def _flatten(V: np.ndarray, F_piece: np.ndarray, cut_front: bool) -> np.ndarray:
    """(n, 3, 2) per-corner UVs of one disc piece, unit-free (scaled later)."""
    used, f = _local(F_piece)
    v = V[used]
    chi, n_loops = _topology(f)
    if n_loops == 0:
        raise ValueError(f"a closed piece of {len(f)} triangles could not be split into discs")
    if cut_front and n_loops == 2 and chi == 0:
        v, f = _cut_to_single_loop(v, f, igl.boundary_loop_all(f))
    elif chi != 2 - n_loops:            # handles: cut to a disc (libigl picks the cuts)
        cuts = {tuple(sorted(e)) for path in igl.cut_to_disk(f) for e in zip(path[:-1], path[1:])}
        flags = np.array([[tuple(sorted((t[k], t[(k + 1) % 3]))) in cuts for k in range(3)] for t in f], np.int64)
        v, f = igl.cut_mesh(v, f, flags)[:2]
    # holes are closed by a fan to a virtual vertex at their centre while flattening, so their
    # borders cannot cross (a closed mouth's lips would otherwise overlap in UV space)
    vf, ff = _close_holes(v, f)
    uv = _slim(vf, ff, _tutte(vf, ff))[:len(v)]
    if len(ff) > len(f):
        # the fans squeeze the holes' rims (lips rolling into the mouth); relax without them and
        # keep that unless the rims now cross
        free = _slim(v, f, uv)
        if free is not uv and not _rims_cross(free, f):
            uv = free
    return _orient(v, f, uv)[f]


def _slim(v, f, uv):
    """SLIM iterations (symmetric Dirichlet, free boundary) from a flip-free start; the start
    itself when they fail or flip a triangle."""
    if len(f) < 4:
        return uv
    data = igl.slim_precompute(np.asfortranarray(v), np.asfortranarray(f, np.int32), np.asfortranarray(uv),
                               igl.MappingEnergyType.SYMMETRIC_DIRICHLET, np.zeros(0, np.int32),
                               np.zeros((0, 2), order="F"), 0.0)
    refined = np.asarray(igl.slim_solve(data, SLIM_ITERATIONS))
    ok = np.isfinite(refined).all() and (_signed_areas(refined, f) > 0).all()
    return refined if ok else uv


def _rims_cross(uv, f) -> bool:
    """True when two triangles of the chart overlap (a texel inside both at 1024 per unit)."""
    from .texels import rasterize
    p = uv[f]
    lo, hi = p.reshape(-1, 2).min(0), p.reshape(-1, 2).max(0)
    q = (p - lo) / max(hi - lo) * 0.999
    return rasterize(q, 1024, gutter=0).overlaps > 0


def _close_holes(v, f):
    """Every boundary loop but the longest gets a fan to a new vertex at its centroid."""
    loops = sorted(igl.boundary_loop_all(f), key=lambda l: -np.linalg.norm(v[l] - v[np.roll(l, 1)], axis=1).sum())
    fans, centres = [f], []
    for k, loop in enumerate(loops[1:]):
        loop = np.asarray(loop)
        fans.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), len(v) + k)], 1))
        centres.append(v[loop].mean(0))
    return np.concatenate([v, *[c[None] for c in centres]]), np.concatenate(fans)


def _tutte(v, f):
    """Tutte embedding (uniform weights, the boundary on a circle by arc length): never flips a
    triangle, even where the 3D surface folds. `f` must be a disc (one boundary loop)."""
    outer = np.asarray(igl.boundary_loop(f))
    N = len(v)
    A = sp.coo_matrix((np.ones(f.size), (f.ravel(), np.roll(f, 1, 1).ravel())), shape=(N, N)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    L = (sp.diags(np.asarray(A.sum(1)).ravel()) - A).tocsr()
    seg = np.linalg.norm(v[outer] - v[np.roll(outer, 1)], axis=1)
    t = 2 * np.pi * np.cumsum(seg) / seg.sum()
    uv = np.zeros((N, 2))
    uv[outer] = np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.setdiff1d(np.arange(N), outer)
    uv[inner] = np.stack([spsolve(L[inner][:, inner].tocsc(), -(L[inner][:, outer] @ uv[outer, c]))
                          for c in range(2)], 1)
    if _signed_areas(uv, f).sum() < 0:
        uv[:, 0] *= -1
    return uv


def _cut_to_single_loop(v, f, loops):
    """Cut an annulus (face border + neck opening) from the front of the neck opening to the
    nearest point of the other loop, along the shortest edge path."""
    lower = min(range(2), key=lambda k: (v[loops[k]] @ UP).mean())
    neck, other = loops[lower], loops[1 - lower]
    a = int(neck[np.argmax(v[neck] @ FORWARD)])
    b = int(other[np.argmin(np.linalg.norm(v[other] - v[a], axis=1))])
    _, prev = igl.dijkstra(v, igl.adjacency_list(f), a, {b})
    path = [b]
    while path[-1] != a:
        path.append(int(prev[path[-1]]))
    cut_edges = {tuple(sorted(e)) for e in zip(path[:-1], path[1:])}
    cuts = np.array([[tuple(sorted((t[k], t[(k + 1) % 3]))) in cut_edges for k in range(3)] for t in f], np.int64)
    vc, fc = igl.cut_mesh(v, f, cuts)[:2]
    return vc, fc


def _signed_areas(uv, f):
    e1, e2 = uv[f[:, 1]] - uv[f[:, 0]], uv[f[:, 2]] - uv[f[:, 0]]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _orient(v, f, uv):
    """Counter-clockwise triangles (not mirrored), the model's up direction along +v."""
    if _signed_areas(uv, f).sum() < 0:
        uv = uv * np.array([-1.0, 1.0])
    # gradient of the height over each triangle, in UV space, area-weighted
    e1, e2 = uv[f[:, 1]] - uv[f[:, 0]], uv[f[:, 2]] - uv[f[:, 0]]
    h = v @ UP
    dh = np.stack([h[f[:, 1]] - h[f[:, 0]], h[f[:, 2]] - h[f[:, 0]]], 1)
    M = np.stack([e1, e2], 1)                          # rows: edge vectors
    det = np.linalg.det(M)
    ok = np.abs(det) > 1e-15
    grad = np.zeros((len(f), 2))
    grad[ok] = np.linalg.solve(M[ok], dh[ok][..., None])[..., 0]
    g = (grad * np.abs(det)[:, None]).sum(0)
    angle = np.arctan2(g[0], g[1])                     # rotate g onto +v
    c, s = np.cos(angle), np.sin(angle)
    return uv @ np.array([[c, -s], [s, c]]).T


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------
def _pack(uv, pieces, box) -> None:
    """Shelf-pack charts at one common scale, the largest that fits the box, centred in it."""
    if not pieces:
        return
    extents = []
    for p in pieces:
        pts = uv[p].reshape(-1, 2)
        uv[p] -= pts.min(0)
        extents.append(pts.max(0) - pts.min(0))
    sizes = np.array(extents)
    u0, v0, u1, v1 = box
    W, H = u1 - u0, v1 - v0
    order = np.argsort(-sizes[:, 1])

    def place(scale):
        x = y = shelf = 0.0
        spots = {}
        for i in order:
            w, h = sizes[i] * scale + 2 * MARGIN
            if x + w > W:
                x, y, shelf = 0.0, y + shelf, 0.0
            if y + h > H or w > W:
                return None
            spots[i] = (x + MARGIN, y + MARGIN)
            x, shelf = x + w, max(shelf, h)
        return spots

    lo, hi = 0.0, min(W, H) / max(sizes.max(), 1e-12)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if place(mid) is not None else (lo, mid)
    spots = place(lo)
    for i, p in enumerate(pieces):
        uv[p] = uv[p] * lo + np.array([u0, v0]) + np.array(spots[i])
    idx = np.concatenate(pieces)
    pts = uv[idx].reshape(-1, 2)
    uv[idx] += (np.array([u0 + u1, v0 + v1]) - pts.min(0) - pts.max(0)) / 2


# ------------------------------------------------------------------------------------------------
# Quality figures
# ------------------------------------------------------------------------------------------------
def layout_report(V, F, uv, chart, names) -> dict:
    """Flipped triangles, overlaps, triangles outside the unit square, area and angle distortion
    per chart group, coverage of the square."""
    p = V[F]
    a3 = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    a2 = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    sig = _singular_values(p, uv)
    report: dict[str, Any] = {
        "flipped": int((a2 <= 0).sum()), "coverage": float(np.abs(a2).sum()),
        "outside_unit_square": int(((uv < 0) | (uv > 1)).any(-1).any(-1).sum()),
        "overlap_texels_512": int(rasterize(uv, 512, gutter=0.0).overlaps), "charts": {}}
    groups = sorted({n.split(".")[0] for n in names})
    for g in groups:
        sel = np.isin(chart, [i for i, n in enumerate(names) if n.split(".")[0] == g])
        w = a3[sel] / a3[sel].sum()
        ratio = (np.abs(a2[sel]) / np.abs(a2[sel]).sum()) / w
        report["charts"][g] = {
            "pieces": sum(n.split(".")[0] == g for n in names),
            "uv_area": float(np.abs(a2[sel]).sum()),
            "area_distortion": float((w * np.abs(np.log(np.maximum(ratio, 1e-12)))).sum()),
            "angle_distortion": float((w * sig[sel, 0] / np.maximum(sig[sel, 1], 1e-12)).sum()),
            "mm_per_texel_1024": float(np.sqrt(a3[sel].sum() / np.abs(a2[sel]).sum()) * 1000 / 1024),
        }
    return report


def _singular_values(p, uv):
    """Singular values of each triangle's 3D -> 2D Jacobian (descending)."""
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    x = e1 / np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-15)
    n = np.cross(e1, e2)
    y = np.cross(n, x)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-15)
    P = np.stack([np.stack([(e1 * x).sum(1), (e1 * y).sum(1)], 1),
                  np.stack([(e2 * x).sum(1), (e2 * y).sum(1)], 1)], 1)     # rows: local 2D edges
    U = np.stack([uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]], 1)
    J = np.linalg.solve(np.where(np.abs(np.linalg.det(P))[:, None, None] > 1e-20, P, np.eye(2)), U)
    return np.linalg.svd(J, compute_uv=False)
