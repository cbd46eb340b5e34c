"""Head jobs: build a head's arrays for Blender, evaluate the model for given parameters."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..handlers import MODEL, Param, job
from .registry import get_model


def _coeffs(params: dict, key: str, limit: int, device) -> torch.Tensor | None:
    values = params.get(key)
    if values is None:
        return None
    try:
        arr = np.asarray(values, np.float32).reshape(1, -1)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a list of numbers") from None
    if not np.isfinite(arr).all():
        raise UserError(f"{key} coefficients contain NaN or infinite values")
    return torch.from_numpy(arr[:, :limit]).to(device)


def _count(params: dict, key: str, available: int) -> int:
    n = params.get(key)
    return available if n is None else min(n, available)


def head_payload(model, num_shape: int, num_expr: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Everything Blender needs to make a rigged head with identity and expression shape keys:
    neutral vertices, faces, per-corner UVs, per-key vertex offsets, rest joints and their
    offsets per identity coefficient, skinning weights and region masks."""
    data = model.data
    with torch.no_grad():
        joints = model.rest_joints()[0]
        # Joints are linear in identity: their offset per unit of each coefficient.
        jdirs = torch.einsum("jv,vck->kjc", model.J_regressor, model.shapedirs[..., :num_shape])
    out = {
        "vertices": data.v_template.astype(np.float32),
        "faces": data.faces.astype(np.int32),
        "uv": data.uv.astype(np.float32),
        "shape_deltas": np.ascontiguousarray(data.shapedirs[..., :num_shape].transpose(2, 0, 1), np.float32),
        "expr_deltas": np.ascontiguousarray(data.exprdirs[..., :num_expr].transpose(2, 0, 1), np.float32),
        "joints": joints.cpu().numpy(),
        "joint_shape_deltas": jdirs.cpu().numpy(),
        "lbs_weights": data.lbs_weights.astype(np.float32),
        **{f"region__{k}": v.astype(np.int32) for k, v in data.regions.items()},
    }
    fields = {"model": data.name, "version": data.version, "licence": data.licence,
              "num_shape": num_shape, "num_expr": num_expr, "expr_names": data.expr_names[:num_expr],
              "expr_kind": "blendshape" if data.name == "openhead" else "pca",
              "joint_names": list(data.joint_names), "parents": list(data.parents),
              "has_pose_correctives": data.posedirs is not None}
    return fields, out


@job("head.build", {**MODEL, "num_shape": Param("int", None, "identity keys (default: all the model has; more "
                                                                   "is capped)", lo=0),
                     "num_expr": Param("int", None, "expression keys (as `num_shape`)", lo=0)},
     result="fields `model version licence num_shape num_expr expr_names expr_kind` (`blendshape` for "
            "OpenHead, `pca` for FLAME) `joint_names parents has_pose_correctives`; arrays `vertices (V,3) "
            "faces (F,3) uv (F,3,2) shape_deltas (S,V,3) expr_deltas (E,V,3) joints (J,3) "
            "joint_shape_deltas (S,J,3) lbs_weights (V,J) region__<name>`",
     notes="Everything Blender needs to make a rigged head with identity and expression shape keys.")
def build_head(ctx, params, arrays):
    """A head model's arrays for Blender (head_payload), `num_shape`/`num_expr` keys at most."""
    model = get_model(ctx, params)
    data = model.data
    ns = _count(params, "num_shape", data.num_shape)
    ne = _count(params, "num_expr", data.num_expr)
    ctx.progress(0.3, "model", f"{data.name} {data.version}: {data.num_vertices} vertices")
    fields, out = head_payload(model, ns, ne)
    ctx.progress(1.0, "done")
    return fields, out


@job("head.vertices", {**MODEL, "shape": Param("any", None, "identity coefficients (a list; values past the "
                                                              "model's count are dropped)"),
                        "expr": Param("any", None, "expression coefficients (as `shape`)")},
     arrays="optional `pose (J,3)` axis-angle, joints in `joint_names` order",
     result="field `model`; arrays `vertices (V,3) joints (J,3)`, `landmarks (L,3)` when the model has them",
     notes="Refused: NaN/infinite coefficients, a `pose` that is not a finite (J,3) array. The extension does "
           "not send it (tests do).")
def head_vertices_job(ctx, params, arrays):
    """Posed vertices, joints and landmarks for identity/expression coefficients and joint
    rotations (`pose`: (J, 3) axis-angle array, joint order as the model's joint_names)."""
    model = get_model(ctx, params)
    shape = _coeffs(params, "shape", model.data.num_shape, ctx.device)
    expr = _coeffs(params, "expr", model.data.num_expr, ctx.device)
    pose = arrays.get("pose")
    if pose is not None:
        if pose.shape != (model.num_joints, 3) or not np.isfinite(pose).all():
            raise UserError(f"pose must be a finite ({model.num_joints}, 3) array, got {pose.shape}")
        pose = torch.from_numpy(np.array(pose, np.float32))[None].to(ctx.device)
    with torch.no_grad():
        res = model(shape=shape, expr=expr, pose=pose)
    out = {"vertices": res.vertices[0].cpu().numpy(), "joints": res.joints[0].cpu().numpy()}
    if res.landmarks is not None:
        out["landmarks"] = res.landmarks[0].cpu().numpy()
    return {"model": model.data.name}, out
