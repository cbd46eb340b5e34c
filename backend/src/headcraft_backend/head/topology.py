"""Edges and vertex adjacency of a triangle mesh (numpy + scipy)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def unique_edges(faces: np.ndarray, return_counts: bool = False):
    """Unique (sorted) vertex pairs of a triangle mesh; with return_counts also how many faces
    share each one."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e.sort(axis=1)
    return np.unique(e, axis=0, return_counts=return_counts)  # type: ignore[call-overload]  # numpy 1.26: Literal flags only


def adjacency(edges: np.ndarray, n: int, weights: np.ndarray | None = None, dtype=np.float64) -> sp.csr_matrix:
    """Symmetric (n, n) matrix with `weights` (default 1) at both (a, b) and (b, a) of each edge."""
    w = np.ones(len(edges), dtype) if weights is None else np.asarray(weights, dtype)
    return sp.csr_matrix((np.r_[w, w], (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                         shape=(n, n))


def averaging(edges: np.ndarray, n: int, self_weight: float = 0.0) -> sp.csr_matrix:
    """Row-normalised adjacency (the mean over each vertex's neighbours, and itself with
    self_weight 1); a vertex with no neighbours averages to 0."""
    a = adjacency(edges, n)
    if self_weight:
        a = a + self_weight * sp.identity(n, format="csr")
    return (sp.diags(1.0 / np.maximum(np.asarray(a.sum(1)).ravel(), 1e-12)) @ a).tocsr()


def neighbour_table(faces: np.ndarray, n: int) -> np.ndarray:
    """(n, 1 + max degree) int64: each vertex, then its neighbours, padded with itself."""
    a = adjacency(unique_edges(faces), n)
    deg = np.diff(a.indptr)
    table = np.repeat(np.arange(n, dtype=np.int64)[:, None], 1 + int(deg.max(initial=0)), 1)
    rows = np.repeat(np.arange(n), deg)
    table[rows, 1 + np.arange(len(a.indices)) - a.indptr[rows]] = a.indices
    return table
