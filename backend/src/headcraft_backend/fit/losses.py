"""Registration losses: pruned two-sided Chamfer, edge length, uniform Laplacian (REFERENCE 2.5).

Nearest neighbours are found without gradients (a KD-tree on the CPU, chunked brute force on a
GPU) and the distances are recomputed in torch from the chosen pairs, so gradients flow exactly
as through a full distance matrix. On the CPU the pairs are refreshed every `refresh` steps
(the scan never moves; the template moves by a fraction of a millimetre per step).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from ..head.topology import adjacency, unique_edges

# Conventions. "reference" (the published code, with which the weights were tuned): mean of
# squared distances, pairs kept when d^2 < threshold (3.0 in stage 1, 1.0 in stage 2), the
# template->scan side over the moving vertices, regularisers on the displacement (see
# MeshRegulariser). "paper" (the equations as printed): mean of distances, pairs kept when
# d < threshold (1.0), regularisers on the vertices.
CONVENTIONS = ("reference", "paper")


def _csr(m: sp.csr_matrix, device) -> torch.Tensor:
    with warnings.catch_warnings():  # torch labels sparse CSR "beta"; the products used are stable
        warnings.simplefilter("ignore", UserWarning)
        return _make_csr(m, device)


def _make_csr(m: sp.csr_matrix, device) -> torch.Tensor:
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)), size=m.shape,
                                   device=device)


class MeshRegulariser:
    """Edge and uniform-Laplacian terms of a fixed-topology mesh, with analytic gradients.

    Two conventions (REFERENCE 2.5; the weights were tuned with the reference code's):
    "reference": both act on the displacement x = v - rest from the stage's starting mesh;
      edge = sum over each face's three corner pairs of the mean over faces of |x_a - x_b|^2,
      laplacian = sqrt(sum_v |L x_v|^2) / V.
    "paper": both act on the vertices themselves (x = v); edge = mean over unique edges of the
      squared edge length, laplacian = sqrt(sum_v |L v|^2) (the paper's equations as written).
    L = I - D^-1 A (x minus the mean of its neighbours). The edge term is x^T K x / n with K a
    (face-count weighted) graph Laplacian D - A, so each term is one sparse product forward
    and one more backward.
    """

    def __init__(self, faces: np.ndarray, num_vertices: int, device=None, convention: str = "reference"):
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown regulariser convention {convention!r}; use one of {CONVENTIONS}")
        faces = np.asarray(faces)
        n = num_vertices
        edges, counts = unique_edges(faces, return_counts=True)
        A = adjacency(edges, n, dtype=np.float32)
        deg = np.asarray(A.sum(1)).ravel().astype(np.float32)
        L = (sp.identity(n, np.float32, format="csr") - sp.diags(1.0 / np.maximum(deg, 1)) @ A).tocsr()
        reference = convention == "reference"
        Aw = adjacency(edges, n, counts if reference else None, np.float32)
        K = (sp.diags(np.asarray(Aw.sum(1)).ravel()) - Aw).tocsr()     # symmetric
        self.L, self.LT, self.K = _csr(L, device), _csr(L.T.tocsr(), device), _csr(K, device)
        self.edge_norm = float(len(faces) if reference else len(edges))
        self.lap_norm = float(n if reference else 1)
        self.uses_rest = reference
        self.rest: torch.Tensor | None = None

    def set_rest(self, rest: torch.Tensor | None) -> None:
        """The stage's starting mesh (the reference convention regularises v - rest)."""
        self.rest = None if rest is None or not self.uses_rest else rest.detach()

    def __call__(self, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _Regularise.apply(verts, self)


class _Regularise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, reg):
        x = verts if reg.rest is None else verts - reg.rest
        kx = reg.K @ x
        edge = (x * kx).sum() / reg.edge_norm
        lx = reg.L @ x
        lap_norm = torch.sqrt((lx * lx).sum() + 1e-12)
        ctx.save_for_backward(kx, lx, lap_norm)
        ctx.reg = reg
        return edge, lap_norm / reg.lap_norm

    @staticmethod
    def backward(ctx, g_edge, g_lap):
        kx, lx, lap_norm = ctx.saved_tensors
        reg = ctx.reg
        grad = (2.0 * g_edge / reg.edge_norm) * kx + (g_lap / (reg.lap_norm * lap_norm)) * (reg.LT @ lx)
        return grad, None


def exact_search(scan: torch.Tensor, bruteforce: bool = False) -> bool:
    """Whether pairs come from an exact chunked torch.cdist search (on a GPU, or `bruteforce`)
    rather than from KD-trees and walks over the mesh."""
    return scan.is_cuda or bruteforce


class NearestNeighbours:
    """Nearest scan point for each template vertex and nearest template vertex for each scan
    point: KD-trees on the CPU, an exact chunked search on a GPU or when `bruteforce`."""

    def __init__(self, scan: torch.Tensor, chunk: int = 8192, bruteforce: bool = False):
        self.scan = scan
        self.chunk = chunk
        self.exact = exact_search(scan, bruteforce)
        self.scan_tree = None if self.exact else cKDTree(scan.detach().cpu().numpy())

    def nearest_scan(self, verts: torch.Tensor, within: float | None = None) -> torch.Tensor:
        """Index of the nearest scan point for each of `verts` (no refresh logic); with `within`,
        -1 where none lies that close (the KD-tree search then stops early: 4-8x faster)."""
        with torch.no_grad():
            if self.exact:
                return _chunked_argmin(verts, self.scan, self.chunk, within)
            return _bounded(self.scan_tree, verts.detach().cpu().numpy(), within).to(verts.device)

    def nearest_template(self, verts: torch.Tensor, within: float | None = None,
                         far: tuple[torch.Tensor, float] | None = None,
                         candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Index into `verts` of the nearest template vertex for each scan point (-1 as above).
        far = (mask, radius): scan points with none `within` (and, given `candidates` (N,) bool,
        among those) look again up to `radius` and keep what they find if it is a `mask` vertex
        (one KD-tree for both searches)."""
        with torch.no_grad():
            if self.exact:
                near = _chunked_argmin(self.scan, verts, self.chunk, within)
            else:
                assert self.scan_tree is not None   # built whenever the search is not exact
                tree = cKDTree(verts.detach().cpu().numpy())
                near = _bounded(tree, self.scan_tree.data, within).to(verts.device)
            if far is None:
                return near
            mask, radius = far
            miss = torch.nonzero((near < 0) if candidates is None else (near < 0) & candidates).squeeze(1)
            if not len(miss):
                return near
            if self.exact:
                again = _chunked_argmin(self.scan[miss], verts, self.chunk, radius)
            else:
                assert self.scan_tree is not None
                again = _bounded(tree, self.scan_tree.data[miss.cpu().numpy()], radius).to(verts.device)
            near[miss] = torch.where((again >= 0) & mask[again.clamp_min(0)], again, -1)
            return near


def descend(points: torch.Tensor, verts: torch.Tensor, start: torch.Tensor, table: torch.Tensor,
            rounds: int = 8) -> torch.Tensor:
    """For each of `points`, walk over the mesh from its `start` vertex to whichever of the
    current vertex and its neighbours (`table`, topology.neighbour_table) is nearest, until no
    step helps: the nearest vertex again after the mesh moved a little, at the cost of a few
    gathers instead of a KD-tree over the whole template."""
    cur = start.clone()
    live = torch.arange(len(cur), device=cur.device)
    for _ in range(rounds):
        cand = table[cur[live]]                                       # (P, 1 + degree)
        d = ((verts[cand] - points[live, None]) ** 2).sum(-1)
        best = cand.gather(1, d.argmin(1, keepdim=True)).squeeze(1)
        moved = best != cur[live]
        cur[live] = best
        live = live[moved]
        if not len(live):
            break
    return cur


def _bounded(tree: cKDTree, queries: np.ndarray, within: float | None) -> torch.Tensor:
    d, i = tree.query(queries, workers=-1, distance_upper_bound=np.inf if within is None else within)
    i[~np.isfinite(d)] = -1
    return torch.from_numpy(i.astype(np.int64))


class PairedChamfer:
    """`pruned_chamfer` of a moving template against a fixed scan, made cheap per step.

    Pairs come from NearestNeighbours every `refresh` calls (every call with an exact search;
    with the KD-trees, not while no vertex moved STILL since the last refresh), looked for only
    within REACH times the pruning radius: a farther pair is dropped now and cannot come within
    the radius before the next refresh. Between refreshes the template->scan targets are fixed
    points, and in the reference convention the scan->template side, with the kept pairs chosen
    at the refresh, is summed per vertex as count, sum and squared sum of its scan points'
    offsets, so a step costs O(V) instead of gathering every scan point. `moving` (V,) bool
    restricts the template->scan side to those vertices (the reference convention's mask).

    far = (mask, radius), reference convention only: a scan point beyond the pruning radius
    whose nearest template vertex, within `radius`, is a `mask` vertex keeps its pair. Pruning
    alone ignores what lies farther than ~14 mm from the start (a turban, a bun, big curls), so
    the loss is flat and the scalp never grows out to it; with the pair the squared distance
    pulls hardest on what is farthest until the surface has reached it.

    neighbours (topology.neighbour_table of the template), KD-tree search only: between full
    searches (every FULL-th refresh) each paired scan point finds its template vertex again by
    `descend` from the last one, 3x cheaper than a tree over the moved template; points
    without a pair wait for the next full search."""

    REACH = 1.5
    STILL = 0.02   # units (0.17 mm): a fifth of the spacing of 200K points on a head
    FULL = 5

    def __init__(self, scan: torch.Tensor, threshold: float, convention: str = "reference",
                 moving: torch.Tensor | None = None, refresh: int = 10, bruteforce: bool = False,
                 far: tuple[torch.Tensor, float] | None = None, neighbours: torch.Tensor | None = None):
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown Chamfer convention {convention!r}; use one of {CONVENTIONS}")
        self.scan, self.threshold, self.convention = scan, float(threshold), convention
        self.nn = NearestNeighbours(scan, bruteforce=bruteforce)
        self.refresh = 1 if self.nn.exact else max(1, int(refresh))
        self.rows = None if moving is None else torch.nonzero(moving).squeeze(1)
        self.reach = self.REACH * (np.sqrt(self.threshold) if convention == "reference" else self.threshold)
        if far is not None and convention != "reference":
            raise ValueError("far pairs need the reference convention's squared Chamfer")
        self.far = far
        self.far_pairs = 0      # pairs kept beyond the pruning radius at the last refresh
        # Scan points that found a far vertex at the first refresh: only they search again
        # (a bust's chest, nearest the frozen neck, would cost a wide search every refresh).
        self.far_candidates: torch.Tensor | None = None
        self.calls = 0
        self.table = None if self.nn.exact else neighbours
        self.searches = 0
        self.s2t_all = torch.empty(0, dtype=torch.long)

    def _moved(self, verts: torch.Tensor) -> bool:
        """Whether any vertex moved STILL or more since the last refresh: if none did, its pairs
        stand (late in a stage most refreshes are skipped)."""
        with torch.no_grad():
            return bool(((verts - self.anchor) ** 2).sum(-1).max() >= self.STILL ** 2)

    def _refresh(self, verts: torch.Tensor) -> None:
        with torch.no_grad():
            self.anchor = verts.detach().clone()     # the vertices the pairs were found at
            mv = verts if self.rows is None else verts[self.rows]
            t2s = self.nn.nearest_scan(mv, self.reach)
            self.found = t2s >= 0
            self.target = self.scan[t2s.clamp_min(0)]
            s2t = self._scan_to_template(verts)
            if self.far is not None and self.far_candidates is None:
                self.far_candidates = (s2t >= 0) & self.far[0][s2t.clamp_min(0)]
            near = s2t >= 0
            self.s2t, self.near_scan = s2t[near], self.scan[near]
            if self.convention == "reference":
                q = self.near_scan - verts[self.s2t]            # offsets from the refresh's vertices
                keep = (q * q).sum(-1) < self.threshold
                if self.far is not None:
                    far = self.far[0][self.s2t]             # pairs of a far vertex: kept at any distance
                    self.far_pairs = int((~keep & far).sum())
                    keep |= far
                idx = self.s2t[keep]
                V = len(verts)
                qk = q[keep]                # |q - u|^2 = q.q - 2 q.u + u.u, summed per vertex
                self.count = torch.zeros(V, device=verts.device).index_add_(0, idx, torch.ones_like(qk[:, 0]))
                self.S = torch.zeros_like(verts).index_add_(0, idx, qk)
                self.Q = (qk * qk).sum()
                self.kept = int(keep.sum())

    def _scan_to_template(self, verts: torch.Tensor) -> torch.Tensor:
        """Each scan point's nearest template vertex, -1 where none is within reach (or, for
        far pairs, where the nearest is not a far vertex within its radius)."""
        if self.table is None or self.searches % self.FULL == 0:
            s2t = self.nn.nearest_template(verts, self.reach, self.far, self.far_candidates)
        else:
            s2t = self.s2t_all.clone()
            ok = torch.nonzero(s2t >= 0).squeeze(1)
            points = self.scan[ok]
            nearest = descend(points, verts, s2t[ok], self.table)
            d2 = ((points - verts[nearest]) ** 2).sum(-1)
            limit = torch.full_like(d2, self.reach ** 2)
            if self.far is not None:
                mask, radius = self.far
                limit[mask[nearest]] = max(radius, self.reach) ** 2
            s2t[ok] = torch.where(d2 < limit, nearest, -1)
        self.searches += 1
        self.s2t_all = s2t
        return s2t

    def __call__(self, verts: torch.Tensor) -> torch.Tensor:
        if self.calls % self.refresh == 0 and (self.calls == 0 or self.nn.exact or self._moved(verts)):
            self._refresh(verts)
        self.calls += 1
        mv = verts if self.rows is None else verts[self.rows]
        d_ts = ((mv - self.target) ** 2).sum(-1)
        if self.convention == "reference":
            keep = self.found & (d_ts < self.threshold)
            t2s = torch.where(keep, d_ts, 0.0).sum() / keep.sum().clamp_min(1)
            if not self.kept:
                return t2s
            u = verts - self.anchor       # sum over kept pairs of |q - u|^2, per vertex
            s2t = (self.count * (u * u).sum(-1)).sum() - 2.0 * (u * self.S).sum() + self.Q
            return t2s + s2t / self.kept
        d_st = ((self.near_scan - verts[self.s2t]) ** 2).sum(-1)
        r2 = self.threshold ** 2
        terms = [torch.sqrt(d_ts[self.found & (d_ts < r2)] + 1e-12), torch.sqrt(d_st[d_st < r2] + 1e-12)]
        total = sum(t.mean() if t.numel() else t.sum() for t in terms)
        assert isinstance(total, torch.Tensor)   # two terms: never sum()'s start value 0
        return total


def _chunked_argmin(a: torch.Tensor, b: torch.Tensor, chunk: int, within: float | None = None) -> torch.Tensor:
    out = torch.empty(a.shape[0], dtype=torch.long, device=a.device)
    for s in range(0, a.shape[0], chunk):
        d, i = torch.cdist(a[s:s + chunk], b).min(1)
        out[s:s + chunk] = i if within is None else torch.where(d <= within, i, -1)
    return out


def pruned_chamfer(verts: torch.Tensor, scan: torch.Tensor, t2s: torch.Tensor, s2t: torch.Tensor,
                   threshold: float, convention: str = "reference",
                   vert_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Two-sided Chamfer over the given nearest-neighbour pairs, dropping far pairs.

    vert_mask (V,) bool limits the template->scan side to some vertices (e.g. a partial scan's
    visible region); the scan->template side always uses every scan point."""
    d_ts = ((verts - scan[t2s]) ** 2).sum(-1)
    d_st = ((scan - verts[s2t]) ** 2).sum(-1)
    if vert_mask is not None:
        d_ts = d_ts[vert_mask]
    if convention == "reference":
        terms = [d[d < threshold] for d in (d_ts, d_st)]
    elif convention == "paper":
        terms = [torch.sqrt(d[d < threshold ** 2] + 1e-12) for d in (d_ts, d_st)]
    else:
        raise ValueError(f"unknown Chamfer convention {convention!r}; use one of {CONVENTIONS}")
    total = sum(t.mean() if t.numel() else t.sum() for t in terms)
    assert isinstance(total, torch.Tensor)   # two terms: never sum()'s start value 0
    return total


def bruteforce_chamfer(verts: torch.Tensor, scan: torch.Tensor, threshold: float,
                       convention: str = "reference", chunk: int = 2048) -> torch.Tensor:
    """The straightforward baseline: full torch.cdist every step (benchmarks and tests)."""
    t2s = torch.cat([torch.cdist(verts[s:s + chunk].detach(), scan).argmin(1)
                     for s in range(0, len(verts), chunk)])
    s2t = torch.cat([torch.cdist(scan[s:s + chunk], verts.detach()).argmin(1)
                     for s in range(0, len(scan), chunk)])
    return pruned_chamfer(verts, scan, t2s, s2t, threshold, convention)
