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

# Pruning conventions. "reference": mean of squared distances, pairs kept when d^2 < threshold
# (3.0 in stage 1, 1.0 in stage 2). "paper": mean of distances, pairs kept when d < threshold (1.0).
CONVENTIONS = ("reference", "paper")


def unique_edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e.sort(axis=1)
    return np.unique(e, axis=0)


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

    edge: mean squared edge length over unique edges = v^T (D - A) v / E.
    laplacian: sqrt(sum_v ||L x||^2) with L = I - D^-1 A (x minus the mean of its neighbours);
    an outer L2 norm. x is the vertices themselves, or their displacement from `rest` when one
    is given (then a smooth displacement costs nothing and the template's own curvature does
    not pull the fit flat).
    Both come from one sparse product L v (D - A = D L), the gradient from one more (L^T).
    """

    def __init__(self, faces: np.ndarray, num_vertices: int, device=None):
        edges = unique_edges(np.asarray(faces))
        n = num_vertices
        rows = np.concatenate([edges[:, 0], edges[:, 1]])
        cols = np.concatenate([edges[:, 1], edges[:, 0]])
        A = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
        deg = np.asarray(A.sum(1)).ravel().astype(np.float32)
        L = (sp.identity(n, np.float32, format="csr") - sp.diags(1.0 / np.maximum(deg, 1)) @ A).tocsr()
        self.L, self.LT = _csr(L, device), _csr(L.T.tocsr(), device)
        self.deg = torch.from_numpy(deg)[:, None].to(device)
        self.num_edges = len(edges)
        self.L_rest = None

    def set_rest(self, rest: torch.Tensor | None) -> None:
        self.L_rest = None if rest is None else (self.L @ rest).detach()

    def __call__(self, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _Regularise.apply(verts, self)


class _Regularise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, reg):
        lv = reg.L @ verts
        edge = (verts * (reg.deg * lv)).sum() / reg.num_edges
        lx = lv if reg.L_rest is None else lv - reg.L_rest
        lap = torch.sqrt((lx * lx).sum() + 1e-12)
        ctx.save_for_backward(lv, lx, lap)
        ctx.reg = reg
        return edge, lap

    @staticmethod
    def backward(ctx, g_edge, g_lap):
        lv, lx, lap = ctx.saved_tensors
        reg = ctx.reg
        grad = (2.0 * g_edge / reg.num_edges) * (reg.deg * lv) + (g_lap / lap) * (reg.LT @ lx)
        return grad, None


class NearestNeighbours:
    """Nearest scan point for each template vertex and nearest template vertex for each scan
    point. CPU: KD-trees, pairs refreshed every `refresh` calls. CUDA: exact chunked search."""

    def __init__(self, scan: torch.Tensor, refresh: int = 5, chunk: int = 8192, bruteforce: bool = False):
        self.scan = scan
        self.refresh = max(1, int(refresh))
        self.chunk = chunk
        self.calls = 0
        self.exact = scan.is_cuda or bruteforce   # exact chunked torch.cdist search every step
        self.scan_tree = None if self.exact else cKDTree(scan.detach().cpu().numpy())
        self.t2s = self.s2t = None

    def pairs(self, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index into scan per vertex, index into verts per scan point)."""
        if self.t2s is None or self.exact or self.calls % self.refresh == 0:
            with torch.no_grad():
                if self.exact:
                    self.t2s = _chunked_argmin(verts, self.scan, self.chunk)
                    self.s2t = _chunked_argmin(self.scan, verts, self.chunk)
                else:
                    v = verts.detach().cpu().numpy()
                    self.t2s = torch.from_numpy(self.scan_tree.query(v, workers=-1)[1]).to(verts.device)
                    self.s2t = torch.from_numpy(cKDTree(v).query(self.scan_tree.data, workers=-1)[1]).to(verts.device)
        self.calls += 1
        return self.t2s, self.s2t


def _chunked_argmin(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    out = torch.empty(a.shape[0], dtype=torch.long, device=a.device)
    for s in range(0, a.shape[0], chunk):
        out[s:s + chunk] = torch.cdist(a[s:s + chunk], b).argmin(1)
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
    return sum(t.mean() if t.numel() else t.sum() for t in terms)


def bruteforce_chamfer(verts: torch.Tensor, scan: torch.Tensor, threshold: float,
                       convention: str = "reference", chunk: int = 2048) -> torch.Tensor:
    """The straightforward baseline: full torch.cdist every step (benchmarks and tests)."""
    t2s = torch.cat([torch.cdist(verts[s:s + chunk].detach(), scan).argmin(1)
                     for s in range(0, len(verts), chunk)])
    s2t = torch.cat([torch.cdist(scan[s:s + chunk], verts.detach()).argmin(1)
                     for s in range(0, len(scan), chunk)])
    return pruned_chamfer(verts, scan, t2s, s2t, threshold, convention)
