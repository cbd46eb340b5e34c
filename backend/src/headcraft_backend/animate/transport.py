"""Displacements carried by the surface (paper sec. 4.3, supp. B.1; REFERENCE 6).

Each vertex has an orthonormal frame (t, b, n): n the area-weighted vertex normal, t the
direction to one fixed neighbour projected onto the tangent plane, b = n x t. A displacement
is stored as its coordinates in the frame of the head it was made on and rebuilt with the frame
of any other pose or expression of the same mesh. Frames depend only on the local surface, so a
rigid motion of the head (or of the jaw region) moves the displacements rigidly with it.
"""
from __future__ import annotations

import numpy as np
import torch


class VertexFrames(torch.nn.Module):
    """(B, V, 3) vertices -> (B, V, 3, 3) frames, rows (t, b, n). Batched, CPU or CUDA."""

    faces: torch.Tensor       # buffers
    neighbour: torch.Tensor

    def __init__(self, faces: np.ndarray, num_vertices: int):
        super().__init__()
        faces = np.asarray(faces, np.int64)
        # the reference neighbour of each vertex: the next corner of its first incident face
        used, first = np.unique(faces.ravel(), return_index=True)
        if len(used) != num_vertices or used[-1] != num_vertices - 1:
            raise ValueError(f"{num_vertices - len(used)} vertices belong to no face")
        f, c = np.divmod(first, 3)
        self.register_buffer("faces", torch.from_numpy(faces), persistent=False)
        self.register_buffer("neighbour", torch.from_numpy(faces[f, (c + 1) % 3]), persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        f = self.faces
        p0, p1, p2 = v[:, f[:, 0]], v[:, f[:, 1]], v[:, f[:, 2]]
        fn = torch.cross(p1 - p0, p2 - p0, dim=-1)
        n = torch.zeros_like(v)
        for k in range(3):
            n.index_add_(1, f[:, k], fn)
        n = torch.nn.functional.normalize(n, dim=-1, eps=1e-20)
        e = v[:, self.neighbour] - v
        t = e - n * (e * n).sum(-1, keepdim=True)
        t = torch.nn.functional.normalize(t, dim=-1, eps=1e-20)
        b = torch.cross(n, t, dim=-1)
        return torch.stack([t, b, n], -2)


def to_local(frames: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Object-space vectors (B, V, 3) -> frame coordinates (B, V, 3)."""
    return torch.einsum("bvij,bvj->bvi", frames, d)


def to_object(frames: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Frame coordinates (B, V, 3) -> object-space vectors (B, V, 3)."""
    return torch.einsum("bvij,bvi->bvj", frames, coords)
