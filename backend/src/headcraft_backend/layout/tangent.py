"""Tangent frames per triangle corner, for tangent-space displacement maps.

Blender's Vector Displacement node reads a tangent-space vector as (tangent, normal, bitangent):
R along the tangent (direction of increasing u), G along the normal, B along the bitangent
(normal x tangent). Maps in tangent space use that order, in HeadCraft units like object-space
maps. Normals are area-weighted per vertex; tangents are accumulated per UV vertex (a vertex on
a seam has one tangent per chart) and made orthogonal to the normal.
"""
from __future__ import annotations

import numpy as np

SPACES = ("object", "tangent")    # the spaces a displacement map can be in


def corner_frames(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(F, 3, 3, 3): for each corner the rows (tangent, normal, bitangent), unit length."""
    v = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    uv = np.asarray(uv, np.float64)
    p = v[faces]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    fn = np.cross(e1, e2)
    normal = np.zeros_like(v)
    np.add.at(normal, faces.ravel(), np.repeat(fn, 3, 0))
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-20)
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    dpdu = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / np.where(np.abs(det) < 1e-20, 1.0, det)[:, None]
    dpdu[np.abs(det) < 1e-20] = 0.0
    # one tangent per UV vertex: corners of a vertex with the same UV share it
    key = np.concatenate([faces.reshape(-1, 1), np.round(uv.reshape(-1, 2) * 2**22)], 1)
    _, uvvert = np.unique(key, axis=0, return_inverse=True)
    uvvert = uvvert.ravel()
    tan = np.zeros((uvvert.max() + 1, 3))
    np.add.at(tan, uvvert, np.repeat(dpdu, 3, 0))
    n = normal[faces.ravel()]
    t = tan[uvvert]
    t -= n * (t * n).sum(1, keepdims=True)
    bad = np.linalg.norm(t, axis=1) < 1e-12
    if bad.any():   # no UV gradient (degenerate UVs): any direction orthogonal to the normal
        helper = np.where(np.abs(n[bad, 0:1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        t[bad] = np.cross(n[bad], helper)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    b = np.cross(n, t)
    return np.stack([t, n, b], 1).reshape(len(faces), 3, 3, 3)


def to_tangent(frames: np.ndarray, faces: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per-vertex object-space vectors (V, 3) -> per-corner tangent-space (F, 3, 3)."""
    return np.einsum("fcij,fcj->fci", frames, np.asarray(d, np.float64)[faces])


def from_tangent(frames: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-corner tangent-space vectors (F, 3, 3) -> per-corner object space (F, 3, 3)."""
    return np.einsum("fcij,fci->fcj", frames, np.asarray(t, np.float64))
