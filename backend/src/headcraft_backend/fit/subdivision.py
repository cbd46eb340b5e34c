"""Consistent subdivision of a head model's template (paper supp. A.1 / B.1; REFERENCE 2.2).

MeshLab's Butterfly subdivision (3 iterations, edges longer than 0.2 HeadCraft units split)
turns the coarse template into a ~100K-vertex mesh, but its output depends on the input shape,
so it is run ONCE, on the neutral template. For every dense vertex we keep the coarse triangle it
lies in and its barycentric coordinates there (and, per dense triangle corner, the same in the
dense triangle's own coarse triangle, for UVs across seams). Any identity / expression / pose of
the coarse model is then rebuilt densely by barycentric interpolation followed by region-wise
uniform Laplacian smoothing (lips 3 iterations, face skin 5, scalp + neck 10; eyeballs, ears,
inner mouth and eye surroundings untouched), which restores the smoothness Butterfly gave the
neutral template without its shape dependence.

Mapping dense vertices onto the coarse surface
----------------------------------------------
MeshLab copies a split face's attributes to its children, so each dense triangle knows the coarse
triangle it was cut from (its face quality). A dense vertex used by dense triangles of one coarse
triangle is projected onto that triangle (closest point); one used by two coarse triangles lies
topologically on their shared edge and is projected onto that edge; one at an original coarse
vertex gets that vertex exactly. So a dense vertex's surface point is representable in every
coarse triangle around it, and each dense corner expresses the SAME point in its own triangle's
chart: seam vertices get one position and one UV per chart. If a pymeshlab build ever stops
carrying face quality through the filter, each dense triangle falls back to the coarse triangle
nearest its centroid (closest point), which agrees for ~all triangles on the shipped models.

Regions and smoothing
---------------------
A dense vertex belongs to a coarse region when the barycentric weights of its coarse triangle's
vertices in that region add up to at least 1/2 (so every coarse vertex's dense copy inherits
exactly its regions). Its smoothing count is the first rule in SMOOTHING_RULES whose region it is
in (0 if none). The paper's "face skin" is the face except mouth, eyeballs and eye surroundings;
eye surroundings are in neither of its smoothed lists, so `eye_region` is left untouched here.
Smoothing moves a vertex to the mean of its mesh neighbours (open-boundary vertices: of their
boundary neighbours, so the neck opening does not shrink inwards); vertices with k iterations move
in the first k iterations only; untouched vertices stay put but are still neighbours.

Units: head models are in metres; only the Butterfly threshold is in HeadCraft units (x120), so
the filter runs on the template scaled to those units.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..head.data import HeadModelData
from .units import HC_UNITS_PER_METRE

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BUTTERFLY_ITERATIONS = 3
BUTTERFLY_THRESHOLD_UNITS = 0.2          # HeadCraft units (= 1.67 mm)
# (region, Laplacian iterations): the first rule a dense vertex's regions match wins.
SMOOTHING_RULES: tuple[tuple[str, int], ...] = (
    ("eyeballs", 0), ("inner_mouth", 0), ("ears", 0), ("eye_region", 0),
    ("lips", 3), ("face", 5), ("nose", 5), ("scalp", 10), ("neck", 10))
REGION_WEIGHT = 0.5                      # barycentric mass needed to belong to a region


# ------------------------------------------------------------------------------------------------
# The dense template
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DenseTemplate:
    """Consistent subdivision of one head model's template (indices into its coarse arrays)."""
    faces: np.ndarray           # (Fd, 3) int32 dense triangles
    vertex_tri: np.ndarray      # (Vd,) int32 coarse triangle per dense vertex
    vertex_bary: np.ndarray     # (Vd, 3) float32 barycentrics of each dense vertex in vertex_tri
    corner_tri: np.ndarray      # (Fd,) int32 coarse triangle of each dense triangle (all 3 corners)
    corner_bary: np.ndarray     # (Fd, 3, 3) float32 barycentrics of each corner in corner_tri
    uv: np.ndarray              # (Fd, 3, 2) float32 per-corner UVs (from the coarse per-corner UVs)
    regions: dict[str, np.ndarray]  # region name -> int32 dense vertex indices
    smooth_iters: np.ndarray    # (Vd,) int8 Laplacian iterations per dense vertex
    key: str = ""               # cache key of the model + settings it was built from

    @property
    def num_vertices(self) -> int:
        return int(self.vertex_tri.shape[0])

    def save(self, path: str | Path) -> None:
        meta = {"format_version": FORMAT_VERSION, "key": self.key}
        arrays = {"meta_json": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                  "faces": self.faces, "vertex_tri": self.vertex_tri,
                  "vertex_bary": self.vertex_bary, "corner_tri": self.corner_tri,
                  "corner_bary": self.corner_bary, "uv": self.uv, "smooth_iters": self.smooth_iters}
        arrays.update({f"region__{k}": v for k, v in self.regions.items()})
        with open(path, "wb") as fh:        # a file handle: np.savez would append ".npz"
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "DenseTemplate":
        """Read a file written by save(); ValueError if it is unreadable or inconsistent."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta_json"]).decode())
                get = lambda k: np.array(z[k])  # noqa: E731
                dense = cls(faces=get("faces"), vertex_tri=get("vertex_tri"),
                            vertex_bary=get("vertex_bary"), corner_tri=get("corner_tri"),
                            corner_bary=get("corner_bary"), uv=get("uv"),
                            smooth_iters=get("smooth_iters"), key=str(meta.get("key", "")),
                            regions={k[8:]: get(k) for k in z.files if k.startswith("region__")})
        except Exception as exc:  # zip/npy errors, missing keys, bad JSON
            raise ValueError(f"{path}: not a readable dense template ({exc})") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: dense template format {meta.get('format_version')}, "
                             f"expected {FORMAT_VERSION}")
        return dense.validate(str(path))

    def validate(self, source: str = "dense template") -> "DenseTemplate":
        Vd, Fd = self.vertex_tri.shape[0], self.faces.shape[0]
        shapes = {"faces": (Fd, 3), "vertex_tri": (Vd,), "vertex_bary": (Vd, 3),
                  "corner_tri": (Fd,), "corner_bary": (Fd, 3, 3), "uv": (Fd, 3, 2),
                  "smooth_iters": (Vd,)}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"{source}: {name} has shape {arr.shape}, expected {shape}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"{source}: {name} is not finite")
        if Fd == 0 or self.faces.min() < 0 or self.faces.max() >= Vd:
            raise ValueError(f"{source}: faces index vertices that do not exist")
        if any(r.size and (r.min() < 0 or r.max() >= Vd) for r in self.regions.values()):
            raise ValueError(f"{source}: a region indexes vertices that do not exist")
        return self


# ------------------------------------------------------------------------------------------------
# Dense rebuild (torch)
# ------------------------------------------------------------------------------------------------
class DenseRebuild(torch.nn.Module):
    """Coarse vertices (B, V, 3) -> dense vertices (B, Vd, 3): barycentric interpolation, then
    region-wise uniform Laplacian smoothing. Linear, differentiable, batched, CPU or CUDA.

    Both steps are sparse CSR products on a (vertices, 3B) layout; smoothing iteration k only
    recomputes the rows of vertices with more than k iterations.
    """

    def __init__(self, dense: DenseTemplate, coarse_faces: np.ndarray):
        super().__init__()
        import scipy.sparse as sp
        coarse_faces = np.asarray(coarse_faces, np.int64)
        Vd = dense.num_vertices
        self.num_vertices = Vd
        self.num_coarse = int(coarse_faces.max()) + 1
        self.register_buffer("faces", torch.from_numpy(dense.faces.astype(np.int64)), persistent=False)
        # interpolation: a (Vd, V) matrix with three weights per row
        cols = coarse_faces[dense.vertex_tri]
        W = sp.csr_matrix((dense.vertex_bary.astype(np.float64).ravel(),
                           (np.repeat(np.arange(Vd), 3), cols.ravel())), shape=(Vd, self.num_coarse))
        self._add_csr("interp", W)
        # smoothing: row-normalised adjacency restricted to the rows still moving
        A = uniform_laplacian_operator(dense.faces, Vd)
        iters = dense.smooth_iters.astype(np.int64)
        self.stages: list[tuple[int, int]] = []     # (stage index, repeats)
        k, n_stage = 0, 0
        while k < (iters.max() if iters.size else 0):
            rows = np.flatnonzero(iters > k)
            stop = int(iters[rows].min())          # same row set until the smallest count runs out
            self._add_csr(f"s{n_stage}", A[rows])
            self.register_buffer(f"s{n_stage}_rows", torch.from_numpy(rows), persistent=False)
            self.stages.append((n_stage, stop - k))
            n_stage, k = n_stage + 1, stop

    def _add_csr(self, name, M):
        M = M.tocsr()
        M.sort_indices()
        self.register_buffer(f"{name}_crow", torch.from_numpy(M.indptr.astype(np.int64)), persistent=False)
        self.register_buffer(f"{name}_col", torch.from_numpy(M.indices.astype(np.int64)), persistent=False)
        self.register_buffer(f"{name}_val", torch.from_numpy(M.data.astype(np.float32)), persistent=False)
        setattr(self, f"{name}_shape", M.shape)

    def _csr(self, name, like: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():   # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(
                getattr(self, f"{name}_crow"), getattr(self, f"{name}_col"),
                getattr(self, f"{name}_val").to(like.dtype), getattr(self, f"{name}_shape"),
                check_invariants=False)

    @staticmethod
    def _flat(v):   # (B, N, 3) -> (N, 3B)
        return v.permute(1, 0, 2).reshape(v.shape[1], -1)

    @staticmethod
    def _unflat(x, B):  # (N, 3B) -> (B, N, 3)
        return x.reshape(x.shape[0], B, 3).permute(1, 0, 2).contiguous()

    def interpolate(self, coarse_vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) -> (B, Vd, 3) barycentric interpolation only (no smoothing)."""
        B = coarse_vertices.shape[0]
        x = self._csr("interp", coarse_vertices) @ self._flat(coarse_vertices)
        return self._unflat(x, B)

    def smooth(self, dense_vertices: torch.Tensor) -> torch.Tensor:
        """(B, Vd, 3) -> (B, Vd, 3) region-wise uniform Laplacian smoothing."""
        B = dense_vertices.shape[0]
        x = self._flat(dense_vertices)
        for i, repeats in self.stages:
            A, rows = self._csr(f"s{i}", x), getattr(self, f"s{i}_rows")
            for _ in range(repeats):
                x = x.index_copy(0, rows, A @ x)
        return self._unflat(x, B)

    def forward(self, coarse_vertices: torch.Tensor) -> torch.Tensor:
        if coarse_vertices.ndim != 3 or coarse_vertices.shape[1:] != (self.num_coarse, 3):
            raise ValueError(f"expected (B, {self.num_coarse}, 3) coarse vertices, "
                             f"got {tuple(coarse_vertices.shape)}")
        return self.smooth(self.interpolate(coarse_vertices))


def uniform_laplacian_operator(faces: np.ndarray, num_vertices: int):
    """scipy CSR (V, V): row v averages v's neighbours; open-boundary vertices average only
    their neighbours along the boundary. Isolated vertices map to themselves."""
    import scipy.sparse as sp
    f = np.asarray(faces, np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    edges, count = np.unique(e, axis=0, return_counts=True)
    border = edges[count == 1]
    on_border = np.zeros(num_vertices, bool)
    on_border[border.ravel()] = True
    # interior vertices: all edges; boundary vertices: boundary edges only
    keep_all = ~on_border
    both = np.concatenate([edges, edges[:, ::-1]])
    use = keep_all[both[:, 0]]
    rows = np.concatenate([both[use, 0], border[:, 0], border[:, 1]])
    cols = np.concatenate([both[use, 1], border[:, 1], border[:, 0]])
    A = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(num_vertices, num_vertices))
    deg = np.asarray(A.sum(1)).ravel()
    lonely = np.flatnonzero(deg == 0)
    A = A + sp.csr_matrix((np.ones(lonely.size), (lonely, lonely)), shape=A.shape)
    deg[lonely] = 1
    return (sp.diags(1.0 / deg) @ A).tocsr()


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------
def butterfly(vertices: np.ndarray, faces: np.ndarray, iterations: int = BUTTERFLY_ITERATIONS,
              threshold_units: float = BUTTERFLY_THRESHOLD_UNITS):
    """MeshLab Butterfly subdivision (pymeshlab `meshing_surface_subdivision_butterfly`) of a
    mesh in metres, edge threshold in HeadCraft units. Returns (vertices (N, 3) float64 metres,
    faces (M, 3) int64, coarse triangle per dense triangle (M,) int64 or None if pymeshlab did
    not carry the face quality through). Duplicate and unreferenced vertices are removed."""
    import pymeshlab
    absolute = getattr(pymeshlab, "PureValue", None) or getattr(pymeshlab, "AbsoluteValue")
    faces = np.asarray(faces, np.int32)
    mesh = pymeshlab.Mesh(vertex_matrix=np.asarray(vertices, np.float64) * HC_UNITS_PER_METRE,
                          face_matrix=faces, f_scalar_array=np.arange(len(faces), dtype=np.float64))
    ms = pymeshlab.MeshSet()
    ms.add_mesh(mesh)
    ms.meshing_surface_subdivision_butterfly(iterations=int(iterations),
                                             threshold=absolute(float(threshold_units)))
    out = ms.current_mesh()
    v = out.vertex_matrix() / HC_UNITS_PER_METRE
    f = out.face_matrix().astype(np.int64)
    prov = None
    if out.has_face_scalar():
        q = out.face_scalar_array()
        qi = np.rint(q).astype(np.int64)
        if len(q) == len(f) and np.allclose(q, qi) and qi.min() >= 0 and qi.max() < len(faces):
            prov = qi
    # merge exact duplicates (MeshLab may split vertices), drop unused ones and collapsed faces
    _, first, inv = np.unique(v, axis=0, return_index=True, return_inverse=True)
    inv = inv.ravel()
    keep_order = np.argsort(first)               # keep MeshLab's vertex order
    remap = np.empty_like(keep_order)
    remap[keep_order] = np.arange(len(keep_order))
    v, f = v[first[keep_order]], remap[inv][f]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    f = f[ok]
    prov = prov[ok] if prov is not None else None
    used = np.zeros(len(v), bool)
    used[f.ravel()] = True
    newid = np.cumsum(used) - 1
    return v[used], newid[f], prov


def closest_point_barycentric(p, a, b, c):
    """Barycentrics (N, 3) of the closest point to p on triangles (a, b, c), all (N, 3);
    exact region classification (vertex, edge, interior), so weights are in [0, 1]."""
    ab, ac, ap = b - a, c - a, p - a
    dot = lambda x, y: np.einsum("ij,ij->i", x, y)  # noqa: E731
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp, cp = p - b, p - c
    d3, d4, d5, d6 = dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = np.nan_to_num(d1 / (d1 - d3))
        t_ac = np.nan_to_num(d2 / (d2 - d6))
        t_bc = np.nan_to_num((d4 - d3) / ((d4 - d3) + (d5 - d6)))
        den = va + vb + vc
        v_in = np.nan_to_num(vb / den, nan=1 / 3)
        w_in = np.nan_to_num(vc / den, nan=1 / 3)
    cases = [  # (mask, bary) in the order of the region tests
        ((d1 <= 0) & (d2 <= 0), (1, 0, 0)),
        ((d3 >= 0) & (d4 <= d3), (0, 1, 0)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, 0)),
        ((d6 >= 0) & (d5 <= d6), (0, 0, 1)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, 0, t_ac)),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (0, 1 - t_bc, t_bc)),
    ]
    out = np.stack(np.broadcast_arrays(1 - v_in - w_in, v_in, w_in), 1)
    for mask, bary in reversed(cases):   # earlier tests win
        val = np.stack(np.broadcast_arrays(*map(np.asarray, bary)), -1)
        out[mask] = val[mask] if val.ndim == 2 else val
    out = np.clip(out, 0.0, 1.0)
    return out / out.sum(1, keepdims=True)


def nearest_triangles(points, vertices, faces, k: int = 16, chunk: int = 20000):
    """Index of the triangle nearest each point (exact closest point among the k triangles with
    the nearest centroids, plus those around the nearest vertex)."""
    from scipy.spatial import cKDTree
    faces = np.asarray(faces, np.int64)
    tri = vertices[faces]
    k = min(k, len(faces))
    _, cand = cKDTree(tri.mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    # triangles around the nearest vertex, padded by repeating the first one
    ring_f = np.argsort(faces.ravel(), kind="stable") // 3
    ring_start = np.searchsorted(np.sort(faces.ravel()), np.arange(len(vertices) + 1))
    width = int(np.diff(ring_start).max())
    _, nv = cKDTree(vertices).query(points)
    offs = ring_start[nv][:, None] + np.arange(width)
    ring = np.where(offs < ring_start[nv + 1][:, None], ring_f[np.minimum(offs, len(ring_f) - 1)],
                    cand[:, :1])
    cand = np.concatenate([cand, ring], 1)
    best = np.empty(len(points), np.int64)
    for s in range(0, len(points), chunk):
        c = cand[s:s + chunk]
        p = np.repeat(points[s:s + chunk], c.shape[1], 0)
        t = tri[c.ravel()]
        bary = closest_point_barycentric(p, t[:, 0], t[:, 1], t[:, 2])
        d = np.linalg.norm(np.einsum("ni,nij->nj", bary, t) - p, axis=1).reshape(c.shape)
        best[s:s + chunk] = c[np.arange(len(c)), d.argmin(1)]
    return best


def build_dense_template(data: HeadModelData, iterations: int = BUTTERFLY_ITERATIONS,
                         threshold_units: float = BUTTERFLY_THRESHOLD_UNITS) -> DenseTemplate:
    """Run Butterfly on the neutral template and map its result onto the coarse surface."""
    V = np.asarray(data.v_template, np.float64)
    F = np.asarray(data.faces, np.int64)
    Vd, Fd, ftri = butterfly(V, F, iterations, threshold_units)
    if ftri is None:
        log.warning("pymeshlab did not carry face quality through Butterfly; using the coarse "
                    "triangle nearest each dense triangle's centroid")
        ftri = nearest_triangles(Vd[Fd].mean(1), V, F)
    nV = len(Vd)

    # coarse triangles touching each dense vertex (through the dense triangles around it)
    pairs = np.unique(np.stack([Fd.ravel(), np.repeat(ftri, 3)], 1), axis=0)
    start = np.searchsorted(pairs[:, 0], np.arange(nV + 1))
    n_cand = np.diff(start)
    first = pairs[start[:-1], 1]
    vtri = first.copy()
    vbary = np.zeros((nV, 3))

    one = n_cand == 1                      # inside one coarse triangle
    t = V[F[first[one]]]
    vbary[one] = closest_point_barycentric(Vd[one], t[:, 0], t[:, 1], t[:, 2])

    two = np.flatnonzero(n_cand == 2)      # on the edge two coarse triangles share
    ta, tb = F[first[two]], F[pairs[start[two] + 1, 1]]
    shared = (ta[:, :, None] == tb[:, None, :]).any(2)            # (n, 3) in ta's corners
    edge_ok = shared.sum(1) == 2
    two_e, shared = two[edge_ok], shared[edge_ok]
    i0 = np.argmax(shared, 1)
    i1 = 2 - np.argmax(shared[:, ::-1], 1)
    a, b = V[F[first[two_e], i0]], V[F[first[two_e], i1]]
    ab = b - a
    s = np.clip(np.einsum("ij,ij->i", Vd[two_e] - a, ab) / np.maximum(
        np.einsum("ij,ij->i", ab, ab), 1e-30), 0.0, 1.0)
    vbary[two_e, i0] = 1.0 - s
    vbary[two_e, i1] = s

    rest = np.setdiff1d(np.arange(nV), np.concatenate([np.flatnonzero(one), two_e]))
    if rest.size:                          # coarse vertices (and odd cases): nearest candidate
        from scipy.spatial import cKDTree
        dist, nearest_v = cKDTree(V).query(Vd[rest])
        best_d = np.full(rest.size, np.inf)
        for j in range(int(n_cand[rest].max())):
            has = n_cand[rest] > j
            r = rest[has]
            tr = pairs[start[r] + j, 1]
            t = V[F[tr]]
            bc = closest_point_barycentric(Vd[r], t[:, 0], t[:, 1], t[:, 2])
            d = np.linalg.norm(np.einsum("ni,nij->nj", bc, t) - Vd[r], axis=1)
            # an original coarse vertex: exactly that vertex, in any triangle around it
            at_v = (dist[has] < 1e-9)[:, None] & (F[tr] == nearest_v[has][:, None])
            d = np.where(at_v.any(1), -1.0, d)
            bc = np.where(at_v.any(1)[:, None], at_v.astype(float), bc)
            better = d < best_d[has]
            best_d[np.flatnonzero(has)[better]] = d[better]
            vtri[r[better]], vbary[r[better]] = tr[better], bc[better]

    # each corner: its vertex's surface point, written in the dense triangle's coarse triangle
    corner_v = Fd.ravel()
    corner_t = np.repeat(ftri, 3)
    src_ids, dst_ids = F[vtri[corner_v]], F[corner_t]
    match = dst_ids[:, :, None] == src_ids[:, None, :]            # (C, 3 dst, 3 src)
    cbary = np.einsum("cds,cs->cd", match.astype(float), vbary[corner_v])
    off = np.abs(cbary.sum(1) - 1) > 1e-6    # point not on this triangle's boundary: project
    if off.any():
        pts = np.einsum("ci,cij->cj", vbary[corner_v[off]], V[src_ids[off]])
        t = V[dst_ids[off]]
        cbary[off] = closest_point_barycentric(pts, t[:, 0], t[:, 1], t[:, 2])
    cbary = np.clip(cbary, 0, 1)
    cbary /= cbary.sum(1, keepdims=True)
    cbary = cbary.reshape(-1, 3, 3)
    vbary = np.clip(vbary, 0, 1)
    vbary /= vbary.sum(1, keepdims=True)

    uv = np.einsum("fcj,fjk->fck", cbary, np.asarray(data.uv, np.float64)[ftri])

    # regions: barycentric mass of the coarse triangle's vertices in the region >= 1/2
    regions, member = {}, {}
    for name, idx in data.regions.items():
        inside = np.zeros(len(V), bool)
        inside[np.asarray(idx, np.int64)] = True
        member[name] = (vbary * inside[F[vtri]]).sum(1) >= REGION_WEIGHT - 1e-6
        regions[name] = np.flatnonzero(member[name]).astype(np.int32)
    smooth = np.zeros(nV, np.int8)
    assigned = np.zeros(nV, bool)
    for name, n in SMOOTHING_RULES:
        if name in member:
            new = member[name] & ~assigned
            smooth[new] = n
            assigned |= new

    return DenseTemplate(
        faces=Fd.astype(np.int32), vertex_tri=vtri.astype(np.int32),
        vertex_bary=vbary.astype(np.float32), corner_tri=ftri.astype(np.int32),
        corner_bary=cbary.astype(np.float32), uv=uv.astype(np.float32), regions=regions,
        smooth_iters=smooth).validate("built dense template")


# ------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------
def cache_key(data: HeadModelData, iterations: int = BUTTERFLY_ITERATIONS,
              threshold_units: float = BUTTERFLY_THRESHOLD_UNITS) -> str:
    """sha256 over the template, faces, UVs, regions and every setting that shapes the result."""
    h = hashlib.sha256()
    settings = {"format": FORMAT_VERSION, "iterations": int(iterations),
                "threshold_units": float(threshold_units), "rules": SMOOTHING_RULES,
                "region_weight": REGION_WEIGHT}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for arr, dt in ((data.v_template, np.float32), (data.faces, np.int32), (data.uv, np.float32)):
        a = np.ascontiguousarray(arr, dt)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    for name in sorted(data.regions):
        h.update(name.encode())
        h.update(np.ascontiguousarray(data.regions[name], np.int32).tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """$HEADCRAFT_CACHE, else $XDG_CACHE_HOME/headcraft, else ~/.cache/headcraft."""
    if os.environ.get("HEADCRAFT_CACHE"):
        return Path(os.environ["HEADCRAFT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "headcraft"


def dense_template(data: HeadModelData, cache_dir: str | Path | None = None) -> DenseTemplate:
    """The model's dense template, from `cache_dir` (default: default_cache_dir()) when a valid
    file for this exact model and these settings is there; otherwise built (a few seconds) and
    written atomically. An unreadable cache file is rebuilt; an unwritable folder only logs."""
    key = cache_key(data)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"dense-{data.name}-{key[:20]}.npz"
    if path.is_file():
        try:
            dense = DenseTemplate.load(path)
            if dense.key == key and int(dense.corner_tri.max()) < len(data.faces):
                return dense
            log.warning("%s belongs to another model or settings; rebuilding", path)
        except ValueError as exc:
            log.warning("rebuilding the dense template: %s", exc)
    t0 = time.perf_counter()
    dense = build_dense_template(data)
    dense.key = key
    log.info("dense template for %s: %d vertices, %d triangles in %.1f s", data.name,
             dense.num_vertices, len(dense.faces), time.perf_counter() - t0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        try:
            dense.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as exc:
        log.warning("could not cache the dense template in %s: %s", folder, exc)
    return dense
