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
triangle it was cut from (face quality); its three corners all use that one coarse triangle, so
per-corner UVs interpolate inside one chart.

mapping="subdivision" (default): every Butterfly vertex is the split point of an edge, i.e. it
has an exact position in the subdivision domain (dyadic barycentrics, k/8 after 3 iterations).
MeshLab averages vertex colours at every split, so indicator colours per coarse vertex (classes
that differ around every triangle, 4 per run, 2 runs for OpenHead) read these positions back
exactly. The interpolated mesh is a uniform refinement of the flat coarse triangles: no
degenerate triangles, and a dense vertex shared by several coarse triangles is the same point in
each of them (seam corners: one position, one UV per chart).

mapping="closest" (the brief's first idea, and the fallback if colours ever stop coming back):
project each Butterfly vertex onto the coarse surface (closest point inside its coarse triangle,
on the shared edge for vertices between two, exact for original vertices). It sits closer to
Butterfly's vertices (median 0.18 vs 0.34 mm before smoothing on OpenHead), but Butterfly bulges
beyond thin coarse triangles and the clamped projection then puts all three corners of ~0.2 % of
the triangles on one coarse edge: zero-area triangles (NaN normals) in the untouched inner mouth
and eyeballs, which smoothing never repairs. Without face quality, each dense triangle would take
the coarse triangle nearest its centroid (agrees with the face quality for ~93 % of triangles).

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
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..cache import default_cache_dir, hash_arrays, write_atomic
from .data import HeadModelData
from ..units import HC_UNITS_PER_METRE

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

    interpolate() and smooth() run the two steps as written (sparse CSR products on a
    (vertices, 3B) layout; smoothing iteration k recomputes only the rows of vertices with more
    than k iterations). Both are linear, so forward() applies their product, composed once here
    in float64 (~9 weights per dense vertex): one sparse product, the same result.
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
        # forward: the whole pipeline as one (Vd, V) matrix
        M = W
        for k in range(int(iters.max()) if iters.size else 0):
            moving = (iters > k).astype(np.float64)
            M = ((sp.diags(moving) @ A + sp.diags(1.0 - moving)) @ M).tocsr()
        M.eliminate_zeros()
        self._add_csr("full", M)

    def _add_csr(self, name, M):
        """Buffers for M and its transpose (the backward pass), values in float64."""
        for suffix, m in (("", M.tocsr()), ("T", M.T.tocsr())):
            m.sort_indices()
            for part, arr in (("crow", m.indptr.astype(np.int64)), ("col", m.indices.astype(np.int64)),
                              ("val", m.data.astype(np.float64))):
                self.register_buffer(f"{name}{suffix}_{part}", torch.from_numpy(arr), persistent=False)
            setattr(self, f"{name}{suffix}_shape", m.shape)

    def _csr(self, name, dtype) -> torch.Tensor:
        with warnings.catch_warnings():   # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(
                getattr(self, f"{name}_crow"), getattr(self, f"{name}_col"),
                getattr(self, f"{name}_val").to(dtype), getattr(self, f"{name}_shape"),
                check_invariants=False)

    def _mm(self, name, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return _SparseMM.apply(x, self, name)
        return self._csr(name, x.dtype) @ x

    @staticmethod
    def _flat(v):   # (B, N, 3) -> (N, 3B)
        return v.permute(1, 0, 2).reshape(v.shape[1], -1)

    @staticmethod
    def _unflat(x, B):  # (N, 3B) -> (B, N, 3)
        return x.reshape(x.shape[0], B, 3).permute(1, 0, 2).contiguous()

    def _check(self, v: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) with V >= the highest vertex index the coarse faces use, + 1."""
        if v.ndim != 3 or v.shape[2] != 3 or v.shape[1] < self.num_coarse:
            raise ValueError(f"expected (B, {self.num_coarse}, 3) coarse vertices, got {tuple(v.shape)}")
        return v[:, :self.num_coarse]

    def interpolate(self, coarse_vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) -> (B, Vd, 3) barycentric interpolation only (no smoothing)."""
        v = self._check(coarse_vertices)
        return self._unflat(self._mm("interp", self._flat(v)), v.shape[0])

    def smooth(self, dense_vertices: torch.Tensor) -> torch.Tensor:
        """(B, Vd, 3) -> (B, Vd, 3) region-wise uniform Laplacian smoothing."""
        x = self._flat(dense_vertices)
        for i, repeats in self.stages:
            rows = getattr(self, f"s{i}_rows")
            for _ in range(repeats):
                x = x.index_copy(0, rows, self._mm(f"s{i}", x))
        return self._unflat(x, dense_vertices.shape[0])

    def forward(self, coarse_vertices: torch.Tensor) -> torch.Tensor:
        v = self._check(coarse_vertices)
        return self._unflat(self._mm("full", self._flat(v)), v.shape[0])


class _SparseMM(torch.autograd.Function):
    """module's constant sparse matrix `name` @ x; the backward uses the stored transpose
    (torch would transpose the CSR matrix on every backward call, ~100x slower)."""

    @staticmethod
    def forward(ctx, x, module, name):
        ctx.module, ctx.name = module, name
        return module._csr(name, x.dtype) @ x

    @staticmethod
    def backward(ctx, grad):
        back = ctx.name[:-1] if ctx.name.endswith("T") else ctx.name + "T"
        return _SparseMM.apply(grad.contiguous(), ctx.module, back), None, None


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
              threshold_units: float = BUTTERFLY_THRESHOLD_UNITS, colors: np.ndarray | None = None):
    """MeshLab Butterfly subdivision (pymeshlab `meshing_surface_subdivision_butterfly`) of a mesh
    in metres, edge threshold in HeadCraft units (the filter runs on the mesh scaled to them).

    colors: optional (V, 4) values in [0, 1]; MeshLab keeps them as 8-bit and gives every new
    vertex the mean of its split edge's end points. Returns (vertices (N, 3) float64 metres,
    faces (M, 3) int64, coarse triangle per dense triangle (M,) int64 or None where pymeshlab did
    not carry the face quality through, colours (N, 4) float64 in 0..255 or None). Exact
    duplicate vertices are merged and unreferenced ones dropped."""
    import pymeshlab
    absolute = getattr(pymeshlab, "PureValue", None) or getattr(pymeshlab, "AbsoluteValue")
    faces = np.asarray(faces, np.int32)
    extra = {} if colors is None else {"v_color_matrix": np.asarray(colors, np.float64)}
    mesh = pymeshlab.Mesh(vertex_matrix=np.asarray(vertices, np.float64) * HC_UNITS_PER_METRE,
                          face_matrix=faces, f_scalar_array=np.arange(len(faces), dtype=np.float64),
                          **extra)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(mesh)
    ms.meshing_surface_subdivision_butterfly(iterations=int(iterations),
                                             threshold=absolute(float(threshold_units)))
    out = ms.current_mesh()
    v = out.vertex_matrix() / HC_UNITS_PER_METRE
    f = out.face_matrix().astype(np.int64)
    col = np.rint(out.vertex_color_matrix() * 255) if colors is not None else None
    prov = None
    if out.has_face_scalar():
        q = out.face_scalar_array()
        qi = np.rint(q).astype(np.int64)
        if len(q) == len(f) and np.allclose(q, qi) and qi.min() >= 0 and qi.max() < len(faces):
            prov = qi
    # merge exact duplicates (keeping MeshLab's order), drop collapsed faces and unused vertices
    _, first, inv = np.unique(v, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    f = rank[inv.ravel()][f]
    v, col = v[first[order]], (col[first[order]] if col is not None else None)
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    f, prov = f[ok], (prov[ok] if prov is not None else None)
    used = np.zeros(len(v), bool)
    used[f.ravel()] = True
    newid = np.cumsum(used) - 1
    return v[used], newid[f], prov, (col[used] if col is not None else None)


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
    out = np.stack([1 - v_in - w_in, v_in, w_in], 1)
    for mask, bary in reversed(cases):   # earlier tests win
        val = np.stack(np.broadcast_arrays(*map(np.asarray, bary)), -1)
        out[mask] = val[mask] if val.ndim == 2 else val
    out = np.clip(out, 0.0, 1.0)
    return out / out.sum(1, keepdims=True)


def nearest_triangles(points, vertices, faces, k: int = 16, chunk: int = 20000):
    """Index of the triangle nearest each point: exact closest point among the k triangles with
    the nearest centroids and the triangles around the nearest vertex."""
    from scipy.spatial import cKDTree
    faces = np.asarray(faces, np.int64)
    tri = vertices[faces]
    k = min(k, len(faces))
    _, cand = cKDTree(tri.mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    ring_f = np.argsort(faces.ravel(), kind="stable") // 3     # triangles grouped by vertex
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


def _vertex_classes(faces, n):
    """Greedy colouring: the three vertices of every triangle get different classes."""
    import scipy.sparse as sp
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    A = (A + A.T).tocsr()
    cls = np.full(n, -1, np.int64)
    for v in range(n):
        taken = set(cls[A.indices[A.indptr[v]:A.indptr[v + 1]]].tolist())
        cls[v] = next(c for c in range(n + 1) if c not in taken)
    return cls


def _subdivision_mapping(V, F, iterations, threshold_units):
    """Each dense vertex's position in the subdivision domain, read back exactly from colours.

    Coarse vertices are split into classes that differ around every triangle; per class an
    indicator colour (0 or `scale`) rides through the filter, which averages it at every edge
    split, so a dense vertex's colour in the class of coarse vertex j is `scale` times j's
    barycentric weight (dyadic, exact in 8 bits while scale is a multiple of 2**iterations).
    Returns (Vd, Fd, ftri, vtri, vbary, cbary) or None where MeshLab did not cooperate."""
    scale = (255 >> int(iterations)) << int(iterations)
    cls = _vertex_classes(F, len(V))
    n_cls = int(cls.max()) + 1
    if scale == 0:
        return None
    runs = [butterfly(V, F, iterations, threshold_units,
                      colors=np.stack([(cls == c0 + ch) * (scale / 255) for ch in range(4)], 1))
            for c0 in range(0, n_cls, 4)]
    Vd, Fd, ftri, _ = runs[0]
    if ftri is None or any(r[3] is None or not np.array_equal(r[1], Fd)
                           or not np.array_equal(r[0], Vd) for r in runs):
        return None
    weight = np.concatenate([r[3] for r in runs], 1)[:, :n_cls] / scale      # (Vd, classes)
    cbary = weight[Fd[:, :, None], cls[F[ftri]][:, None, :]]                 # (Fd, 3, 3)
    if np.abs(cbary.sum(2) - 1).max() > 1e-9:   # some corner not inside its coarse triangle
        return None
    vtri = np.empty(len(Vd), np.int64)
    vbary = np.empty((len(Vd), 3))
    vtri[Fd.ravel()] = np.repeat(ftri, 3)
    vbary[Fd.ravel()] = cbary.reshape(-1, 3)
    return Vd, Fd, ftri, vtri, vbary, cbary


def _closest_mapping(V, F, Vd, Fd, ftri):
    """Dense vertices onto the coarse surface by closest point, topology-aware: inside one coarse
    triangle -> closest point in it; on the edge two coarse triangles share -> closest point on
    that edge; at an original vertex -> that vertex. Each corner writes its vertex's surface
    point in its own dense triangle's coarse triangle. Returns (vtri, vbary, cbary)."""
    from scipy.spatial import cKDTree
    nV = len(Vd)
    pairs = np.unique(np.stack([Fd.ravel(), np.repeat(ftri, 3)], 1), axis=0)
    start = np.searchsorted(pairs[:, 0], np.arange(nV + 1))
    n_cand = np.diff(start)
    first = pairs[start[:-1], 1]
    vtri, vbary = first.copy(), np.zeros((nV, 3))

    one = np.flatnonzero(n_cand == 1)
    t = V[F[first[one]]]
    vbary[one] = closest_point_barycentric(Vd[one], t[:, 0], t[:, 1], t[:, 2])

    two = np.flatnonzero(n_cand == 2)
    shared = (F[first[two]][:, :, None] == F[pairs[start[two] + 1, 1]][:, None, :]).any(2)
    two, shared = two[shared.sum(1) == 2], shared[shared.sum(1) == 2]
    i0, i1 = np.argmax(shared, 1), 2 - np.argmax(shared[:, ::-1], 1)
    a, b = V[F[first[two], i0]], V[F[first[two], i1]]
    ab = b - a
    s = np.clip(np.einsum("ij,ij->i", Vd[two] - a, ab)
                / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-30), 0.0, 1.0)
    vbary[two, i0], vbary[two, i1] = 1.0 - s, s

    rest = np.setdiff1d(np.arange(nV), np.concatenate([one, two]))
    if rest.size:                          # original vertices (and odd cases): best candidate
        dist, nearest_v = cKDTree(V).query(Vd[rest])
        best_d = np.full(rest.size, np.inf)
        for j in range(int(n_cand[rest].max())):
            has = np.flatnonzero(n_cand[rest] > j)
            r, tr = rest[has], pairs[start[rest[has]] + j, 1]
            t = V[F[tr]]
            bc = closest_point_barycentric(Vd[r], t[:, 0], t[:, 1], t[:, 2])
            d = np.linalg.norm(np.einsum("ni,nij->nj", bc, t) - Vd[r], axis=1)
            at_v = (dist[has] < 1e-9)[:, None] & (F[tr] == nearest_v[has][:, None])
            d = np.where(at_v.any(1), -1.0, d)
            bc = np.where(at_v.any(1)[:, None], at_v.astype(float), bc)
            better = d < best_d[has]
            best_d[has[better]] = d[better]
            vtri[r[better]], vbary[r[better]] = tr[better], bc[better]

    corner_v, corner_t = Fd.ravel(), np.repeat(ftri, 3)
    src, dst = F[vtri[corner_v]], F[corner_t]
    cbary = np.einsum("cds,cs->cd", (dst[:, :, None] == src[:, None, :]).astype(float),
                      vbary[corner_v])
    off = np.abs(cbary.sum(1) - 1) > 1e-6     # point not on this triangle: project onto it
    if off.any():
        pts = np.einsum("ci,cij->cj", vbary[corner_v[off]], V[src[off]])
        t = V[dst[off]]
        cbary[off] = closest_point_barycentric(pts, t[:, 0], t[:, 1], t[:, 2])
    return vtri, vbary, cbary.reshape(-1, 3, 3)


MAPPINGS = ("subdivision", "closest")


def build_dense_template(data: HeadModelData, iterations: int = BUTTERFLY_ITERATIONS,
                         threshold_units: float = BUTTERFLY_THRESHOLD_UNITS,
                         mapping: str = "subdivision") -> DenseTemplate:
    """Run Butterfly on the neutral template and tie every dense vertex and corner to the coarse
    surface. mapping: "subdivision" (default; exact position in the subdivision domain) or
    "closest" (closest point; see the module docstring for why it is not the default)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    V = np.asarray(data.v_template, np.float64)
    F = np.asarray(data.faces, np.int64)
    got = _subdivision_mapping(V, F, iterations, threshold_units) if mapping == "subdivision" else None
    if got is not None:
        Vd, Fd, ftri, vtri, vbary, cbary = got
    else:
        if mapping == "subdivision":
            log.warning("pymeshlab did not carry colours through Butterfly; mapping the dense "
                        "template onto the coarse one by closest point instead")
        Vd, Fd, ftri, _ = butterfly(V, F, iterations, threshold_units)
        if ftri is None:
            log.warning("pymeshlab did not carry face quality through Butterfly; using the "
                        "coarse triangle nearest each dense triangle's centroid")
            ftri = nearest_triangles(Vd[Fd].mean(1), V, F)
        vtri, vbary, cbary = _closest_mapping(V, F, Vd, Fd, ftri)
    norm = lambda b: np.clip(b, 0, 1) / np.clip(b, 0, 1).sum(-1, keepdims=True)  # noqa: E731
    vbary, cbary = norm(vbary), norm(cbary)
    uv = np.einsum("fcj,fjk->fck", cbary, np.asarray(data.uv, np.float64)[ftri])

    # regions: barycentric mass of the coarse triangle's vertices in the region >= 1/2
    regions, member = {}, {}
    for name, idx in data.regions.items():
        inside = np.zeros(len(V), bool)
        inside[np.asarray(idx, np.int64)] = True
        member[name] = (vbary * inside[F[vtri]]).sum(1) >= REGION_WEIGHT - 1e-6
        regions[name] = np.flatnonzero(member[name]).astype(np.int32)
    smooth = np.zeros(len(Vd), np.int8)
    assigned = np.zeros(len(Vd), bool)
    for name, n in SMOOTHING_RULES:
        if name in member:
            smooth[member[name] & ~assigned] = n
            assigned |= member[name]

    return DenseTemplate(
        faces=Fd.astype(np.int32), vertex_tri=vtri.astype(np.int32),
        vertex_bary=vbary.astype(np.float32), corner_tri=ftri.astype(np.int32),
        corner_bary=cbary.astype(np.float32), uv=uv.astype(np.float32), regions=regions,
        smooth_iters=smooth).validate("built dense template")


# ------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------
def cache_key(data: HeadModelData, mapping: str = "subdivision") -> str:
    """sha256 over the template, faces, UVs, regions and every setting that shapes the result."""
    h = hashlib.sha256()
    settings = {"format": FORMAT_VERSION, "iterations": BUTTERFLY_ITERATIONS,
                "threshold_units": BUTTERFLY_THRESHOLD_UNITS, "rules": SMOOTHING_RULES,
                "region_weight": REGION_WEIGHT, "mapping": mapping}
    h.update(json.dumps(settings, sort_keys=True).encode())
    hash_arrays(h, (data.v_template, np.float32), (data.faces, np.int32), (data.uv, np.float32))
    for name in sorted(data.regions):
        h.update(name.encode())
        h.update(np.ascontiguousarray(data.regions[name], np.int32).tobytes())
    return h.hexdigest()


def dense_template(data: HeadModelData, cache_dir: str | Path | None = None,
                   mapping: str = "subdivision") -> DenseTemplate:
    """The model's dense template, from `cache_dir` (default: default_cache_dir()) when a valid
    file for this exact model and these settings is there; otherwise built (a few seconds) and
    written atomically. An unreadable cache file is rebuilt; an unwritable folder only logs."""
    key = cache_key(data, mapping)
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
    dense = build_dense_template(data, mapping=mapping)
    dense.key = key
    log.info("dense template for %s: %d vertices, %d triangles in %.1f s", data.name,
             dense.num_vertices, len(dense.faces), time.perf_counter() - t0)
    write_atomic(path, dense.save)
    return dense
