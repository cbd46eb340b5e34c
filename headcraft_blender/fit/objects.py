"""Blender objects from a fit: the fitted rigged head, the detailed head, editable landmarks."""
from __future__ import annotations

import json
from typing import cast

import numpy as np

import bpy
from mathutils import Matrix

from ..head import objects as head_objects
from ..meshdata import (attribute_colours, blender_to_model, mesh_of, model_to_blender, new_mesh, read_faces,
                        read_vertices, set_key_values, texture_vertex_colours)
from ..roles import Role, role_of, set_role

LANDMARK_ATTRIBUTE = "mediapipe_id"
ERROR_RANGE_MM = 2.0   # the error colours saturate here


def scan_arrays(obj: bpy.types.Object) -> dict:
    """The scan as the backend wants it: evaluated (modifiers applied), world space, model frame,
    triangulated, with vertex colours (from its colour attribute or image texture) for the
    landmark renders."""
    deps = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(deps)
    me = ev.to_mesh()
    try:
        verts = read_vertices(me)
        mw = np.array(obj.matrix_world, np.float32)
        verts = verts @ mw[:3, :3].T + mw[:3, 3]
        out = {"vertices": blender_to_model(verts)}
        faces = read_faces(me)
        if len(faces):
            out["faces"] = faces
        colours = attribute_colours(me)
        if colours is None:
            colours = texture_vertex_colours(obj, me)
        if colours is not None:
            out["colors"] = colours
    finally:
        ev.to_mesh_clear()
    return out


def similarity_matrix(sim: dict) -> Matrix:
    """The fit's model-frame similarity as a Blender world matrix for model-frame mesh data
    stored in Blender's axes: P (s R) P^T with translation P t, P the Y-up -> Z-up rotation."""
    P = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)
    R = np.array(sim["rotation"], np.float64).reshape(3, 3)
    M = np.eye(4)
    M[:3, :3] = sim["scale"] * P @ R @ P.T
    M[:3, 3] = P @ np.array(sim["translation"], np.float64)
    return Matrix(M.tolist())


def create_fitted(context, result: dict, arrays: dict, scan: bpy.types.Object) -> tuple:
    """The fitted low-res head (keys set to the fitted identity/expression, jaw/neck posed) and
    the detailed head with its displacement and error attributes, both overlaid on the scan."""
    head_arrays = {k[len("head__"):]: v for k, v in arrays.items() if k.startswith("head__")}
    world = similarity_matrix(result["similarity"])
    col = head_objects.collection_of(context, scan)
    created = []
    try:
        head = head_objects.create_head(context, result["head"], head_arrays, name=f"{scan.name} Fit", collection=col)
        rig = head.parent
        assert rig is not None and rig.pose is not None     # create_head's armature
        created += [head, rig]
        set_key_values(head, head_objects.shape_key_names(len(result["shape"])), result["shape"])
        set_key_values(head, list(result["expr_names"]), result["expr"])
        head_objects.sync_rig(context, head)
        rig.matrix_world = world
        pose = np.array(result["pose"], np.float32)
        for joint, rot in zip(result["joint_names"], pose):
            pb = rig.pose.bones[head_objects.bone_name(joint)]
            angle = float(np.linalg.norm(rot))
            if angle > 1e-8:
                pb.rotation_euler = Matrix.Rotation(angle, 3, tuple(rot / angle)).to_euler("XYZ")
        detailed = create_detailed(context, result, arrays, f"{scan.name} Detailed", world, col)
        created.append(detailed)
    except Exception:
        for obj in created:
            data = obj.data
            bpy.data.objects.remove(obj)
            if isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
            elif isinstance(data, bpy.types.Armature):
                bpy.data.armatures.remove(data)
        raise
    detailed["headcraft_fit_report"] = json.dumps(result["report"])
    for obj in (head, detailed):
        obj["headcraft_scan"] = scan.name
    detailed["headcraft_head"] = head.name
    head_objects.select_only(context, detailed)
    return head, detailed


def create_detailed(context, result: dict, arrays: dict, name: str, world: Matrix,
                    collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """The dense head displaced by a fit or a map: displacement attribute, error colours when
    the arrays carry errors, the layout's UVs (result["layout"]) when given; in `collection`
    (default: the active one)."""
    me = new_mesh(name, model_to_blender(arrays["final"]), arrays["dense_faces"], arrays["dense_uv"])
    # (attributes.new returns the Attribute subtype of the data type asked for; the stubs: Attribute)
    disp = cast(bpy.types.FloatVectorAttribute,
                me.attributes.new("headcraft_displacement", "FLOAT_VECTOR", "POINT"))
    disp.data.foreach_set("vector", model_to_blender(arrays["displacement"]).ravel())
    if "vertex_error_mm" in arrays:
        err = arrays["vertex_error_mm"].astype(np.float32)
        error = cast(bpy.types.FloatAttribute, me.attributes.new("headcraft_error_mm", "FLOAT", "POINT"))
        error.data.foreach_set("value", err)
        t = np.clip(err / ERROR_RANGE_MM, 0, 1)[:, None]
        rgba = np.concatenate([t, 1 - t, np.zeros_like(t) + 0.15, np.ones_like(t)], 1).astype(np.float32)
        col = cast(bpy.types.FloatColorAttribute,
                   me.color_attributes.new("HeadCraft Error", "FLOAT_COLOR", "POINT"))
        col.data.foreach_set("color", rgba.ravel())
    if "visibility" in arrays:
        vis = cast(bpy.types.BoolAttribute, me.attributes.new("headcraft_visibility", "BOOLEAN", "POINT"))
        vis.data.foreach_set("value", arrays["visibility"].astype(bool))
    me.shade_smooth()
    obj = bpy.data.objects.new(name, me)
    set_role(obj, Role.DETAILED)
    obj["headcraft_model"] = result["model"]
    obj["headcraft_version"] = result["version"]
    obj.matrix_world = world
    (collection or head_objects.collection_of(context, None)).objects.link(obj)
    return obj


def create_landmarks(context, scan: bpy.types.Object, ids: np.ndarray, points_model: np.ndarray) -> bpy.types.Object:
    """An editable point object (one vertex per landmark, attribute mediapipe_id) snapped to
    the scan; replaces an earlier one of the same scan."""
    name = f"{scan.name} Landmarks"
    old = bpy.data.objects.get(name)
    if role_of(old) is Role.LANDMARKS:
        data = mesh_of(old)
        bpy.data.objects.remove(old)
        bpy.data.meshes.remove(data)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(ids))
    me.vertices.foreach_set("co", model_to_blender(points_model).ravel())
    ids_attribute = cast(bpy.types.IntAttribute, me.attributes.new(LANDMARK_ATTRIBUTE, "INT", "POINT"))
    ids_attribute.data.foreach_set("value", ids.astype(np.int32))
    obj = bpy.data.objects.new(name, me)
    set_role(obj, Role.LANDMARKS)
    obj["headcraft_scan"] = scan.name
    head_objects.collection_of(context, scan).objects.link(obj)
    return obj


def landmark_arrays(obj: bpy.types.Object) -> dict:
    """Hand-placed landmarks (world space, model frame) of a landmarks object."""
    me = mesh_of(obj)
    if LANDMARK_ATTRIBUTE not in me.attributes or len(me.vertices) == 0:
        raise ValueError(f"{obj.name} has no landmark points (attribute {LANDMARK_ATTRIBUTE!r})")
    ids = np.empty(len(me.vertices), np.int32)
    cast(bpy.types.IntAttribute, me.attributes[LANDMARK_ATTRIBUTE]).data.foreach_get("value", ids)
    mw = np.array(obj.matrix_world, np.float32)
    pts = read_vertices(me) @ mw[:3, :3].T + mw[:3, 3]
    return {"landmark_ids": ids, "landmark_points": blender_to_model(pts)}
