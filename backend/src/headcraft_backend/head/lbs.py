"""Linear blend skinning with pose correctives: batched, differentiable, device-agnostic."""
from __future__ import annotations

import torch


def axis_angle_to_matrix(rvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices (Rodrigues).

    Written as I + a K + b K^2 with K the skew matrix of rvec itself, a = sin t / t and
    b = (1 - cos t) / t^2 (Taylor series near t = 0), so gradients at zero rotation are exact.
    """
    t2 = (rvec * rvec).sum(-1, keepdim=True)[..., None]
    small = t2 < 1e-6
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / (t * t))
    x, y, z = rvec.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def rigid_chain(rot: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose local joint rotations along the kinematic tree.

    rot (B, J, 3, 3), joints (B, J, 3) rest positions. Returns posed joints (B, J, 3) and the
    per-joint transforms (B, J, 4, 4) that map rest-pose points to posed points.
    """
    rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], 1)
    bottom = torch.zeros_like(rel[..., None, :1]).expand(*rel.shape[:2], 1, 4).clone()
    bottom[..., 3] = 1
    local = torch.cat([torch.cat([rot, rel[..., None]], -1), bottom], -2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, 1)
    posed_joints = world[..., :3, 3]
    # Remove the rest-pose joint offset so the transform applies to rest-pose vertices.
    R = world[..., :3, :3]
    t = posed_joints - (R @ joints[..., None])[..., 0]
    world = torch.cat([torch.cat([R, t[..., None]], -1), bottom], -2)
    return posed_joints, world


def lbs(v_shaped: torch.Tensor, pose: torch.Tensor, J_regressor: torch.Tensor, parents: list[int],
        weights: torch.Tensor, posedirs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose shaped vertices.

    v_shaped (B, V, 3); pose (B, J, 3) axis-angle per joint (joint 0 = global rotation);
    J_regressor (J, V); weights (V, J); posedirs (9 * (J - 1), V * 3) or None.
    Returns posed vertices (B, V, 3) and posed joints (B, J, 3).
    """
    B, V = v_shaped.shape[:2]
    joints = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)
    rot = axis_angle_to_matrix(pose)
    v_posed = v_shaped
    if posedirs is not None:
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feature = (rot[:, 1:] - eye).reshape(B, -1)
        v_posed = v_shaped + (feature @ posedirs).reshape(B, V, 3)
    posed_joints, T = rigid_chain(rot, joints, parents)
    T_v = torch.einsum("vj,bjrc->bvrc", weights, T)
    verts = (T_v[..., :3, :3] @ v_posed[..., None])[..., 0] + T_v[..., :3, 3]
    return verts, posed_joints
