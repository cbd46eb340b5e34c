"""One torch interface over every parametric head model (OpenHead, FLAME)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data import HeadModelData
from .lbs import lbs


@dataclasses.dataclass
class HeadOutput:
    vertices: torch.Tensor            # (B, V, 3)
    joints: torch.Tensor              # (B, J, 3) posed joints
    landmarks: torch.Tensor | None    # (B, L, 3)


class HeadModel(torch.nn.Module):
    """Identity + expression blendshapes, then LBS over five joints (global, neck, jaw, eyes).

    Coefficient vectors may be shorter than the model's basis: missing ones are zero.
    """

    v_template: torch.Tensor          # buffers
    shapedirs: torch.Tensor
    exprdirs: torch.Tensor
    J_regressor: torch.Tensor
    lbs_weights: torch.Tensor
    faces: torch.Tensor
    posedirs: torch.Tensor | None
    lmk_faces: torch.Tensor | None    # None (plain attributes) for a model without landmarks
    lmk_bary: torch.Tensor | None

    def __init__(self, data: HeadModelData):
        super().__init__()
        self.data = data
        self.parents = list(data.parents)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
        self.register_buffer("v_template", f32(data.v_template))
        self.register_buffer("shapedirs", f32(data.shapedirs))
        self.register_buffer("exprdirs", f32(data.exprdirs))
        self.register_buffer("J_regressor", f32(data.J_regressor))
        self.register_buffer("lbs_weights", f32(data.lbs_weights))
        self.register_buffer("faces", torch.from_numpy(data.faces.astype(np.int64)))
        self.register_buffer("posedirs", f32(data.posedirs) if data.posedirs is not None else None)
        if data.landmark_faces is not None:
            self.register_buffer("lmk_faces", torch.from_numpy(data.landmark_faces.astype(np.int64)))
            self.register_buffer("lmk_bary", f32(data.landmark_bary))
        else:
            self.lmk_faces = self.lmk_bary = None

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    def blend(self, coeffs: torch.Tensor | None, basis: torch.Tensor, batch: int) -> torch.Tensor:
        if coeffs is None or coeffs.shape[-1] == 0:
            return torch.zeros(batch, *basis.shape[:2], dtype=basis.dtype, device=basis.device)
        n = min(coeffs.shape[-1], basis.shape[-1])
        return torch.einsum("bk,vck->bvc", coeffs[:, :n].to(basis), basis[..., :n])

    def shaped(self, shape=None, expr=None, batch: int = 1) -> torch.Tensor:
        """Unposed vertices (B, V, 3) for identity and expression coefficients."""
        return (self.v_template[None] + self.blend(shape, self.shapedirs, batch)
                + self.blend(expr, self.exprdirs, batch))

    def rest_joints(self, shape=None, expr=None) -> torch.Tensor:
        """Joint positions of the unposed head (B, J, 3): they follow identity."""
        B = _batch(shape, expr)
        return torch.einsum("jv,bvc->bjc", self.J_regressor, self.shaped(shape, expr, B))

    def forward(self, shape=None, expr=None, pose=None, transl=None) -> HeadOutput:
        B = _batch(shape, expr, pose, transl)
        v = self.shaped(shape, expr, B)
        if pose is None:
            pose = torch.zeros(B, self.num_joints, 3, dtype=v.dtype, device=v.device)
        verts, joints = lbs(v, pose.to(v), self.J_regressor, self.parents, self.lbs_weights,
                            self.posedirs)
        if transl is not None:
            verts = verts + transl[:, None].to(v)
            joints = joints + transl[:, None].to(v)
        lmk = None
        if self.lmk_faces is not None:
            assert self.lmk_bary is not None     # set with lmk_faces
            tri = verts[:, self.faces[self.lmk_faces]]  # (B, L, 3, 3)
            lmk = (tri * self.lmk_bary[None, :, :, None]).sum(2)
        return HeadOutput(verts, joints, lmk)


def _batch(*tensors) -> int:
    for t in tensors:
        if t is not None:
            return int(t.shape[0])
    return 1
