"""Blender objects for a parametric head: mesh, UVs, regions, shape keys, armature."""
from __future__ import annotations

from typing import cast

import numpy as np

import bpy

from ..meshdata import add_shape_keys, key_values, mesh_of, model_to_blender, new_mesh, set_key_values
from ..roles import Role, role_of, set_role

IDENTITY_RANGE = 5.0
# Every bone points up (Blender +Z) with its local axes equal to the model frame's
# (X = subject's left, Y = up, Z = forward), so a model-frame axis-angle is the bone's rotation.
BONE_LENGTH = {"global": 0.06, "neck": 0.12, "jaw": 0.03, "eye.L": 0.02, "eye.R": 0.02}


def bone_name(joint: str) -> str:
    """Blender's mirror convention: eye_L -> eye.L."""
    return joint[:-2] + "." + joint[-1] if joint.endswith(("_L", "_R")) else joint


def shape_key_names(n: int) -> list[str]:
    return [f"Shape{i:03d}" for i in range(n)]


def ensure_collection(scene: bpy.types.Scene, name: str) -> bpy.types.Collection:
    """A collection of HeadCraft's own (the render rig's), made and linked to the scene once."""
    col = bpy.data.collections.get(name)
    if col is None:
        col = bpy.data.collections.new(name)
    if col.name not in scene.collection.children:
        scene.collection.children.link(col)
    return col


def active_collection_name(context) -> str:
    """The collection new objects go into (the active one), by name; "" for the scene's own.
    Jobs apply their results later, so operators capture this when they run."""
    col = getattr(context, "collection", None) or context.view_layer.active_layer_collection.collection
    return "" if col == context.scene.collection else col.name


def collection_named(context, name: str) -> bpy.types.Collection:
    """The scene's collection of that name, or the scene's own when it is gone, linked from a
    library (not editable) or not in the view layer (excluded: its objects cannot be selected)."""
    col = bpy.data.collections.get(name) if name else None
    if col is None or col.library is not None:
        return context.scene.collection
    layers = [context.view_layer.layer_collection]
    while layers:
        lc = layers.pop()
        if lc.exclude:
            continue
        if lc.collection == col:
            return col
        layers.extend(lc.children)
    return context.scene.collection


def collection_of(context, obj: bpy.types.Object | None) -> bpy.types.Collection:
    """Where an object made from `obj` goes: beside it (as Duplicate does), else into the
    active collection."""
    for col in obj.users_collection if obj is not None else ():
        if col == context.scene.collection or collection_named(context, col.name) == col:
            return col
    return collection_named(context, active_collection_name(context))


def assign_weights(obj: bpy.types.Object, name: str, weights: np.ndarray) -> None:
    vg = obj.vertex_groups.new(name=name)
    nz = np.flatnonzero(weights > 1e-6)
    values = np.round(weights[nz], 5)
    order = np.argsort(values, kind="stable")
    uniq, starts = np.unique(values[order], return_index=True)
    for w, idx in zip(uniq, np.split(nz[order], starts[1:])):
        vg.add(idx.tolist(), float(w), "REPLACE")


def create_head(context, result: dict, arrays: dict, name: str = "Head",
                collection: bpy.types.Collection | None = None, location=(0.0, 0.0, 0.0)) -> bpy.types.Object:
    """Build the head from a head.build result into `collection` (default: the active one), its
    rig at `location`; returns the mesh object (parented to its rig)."""
    col = collection or collection_named(context, active_collection_name(context))
    ns, ne = int(result["num_shape"]), int(result["num_expr"])
    joint_names = [bone_name(j) for j in result["joint_names"]]
    me = new_mesh(name, model_to_blender(arrays["vertices"]), arrays["faces"], arrays["uv"])
    obj = bpy.data.objects.new(name, me)
    try:
        for key, idx in arrays.items():
            if key.startswith("region__"):
                vg = obj.vertex_groups.new(name="region_" + key[len("region__"):])
                vg.add(idx.astype(int).tolist(), 1.0, "REPLACE")
        for j, jn in enumerate(joint_names):
            assign_weights(obj, jn, arrays["lbs_weights"][:, j])
        add_shape_keys(obj, shape_key_names(ns), model_to_blender(arrays["shape_deltas"]),
                       -IDENTITY_RANGE, IDENTITY_RANGE)
        blend = result.get("expr_kind") == "blendshape"
        add_shape_keys(obj, list(result["expr_names"]), model_to_blender(arrays["expr_deltas"]),
                       -1.0 if blend else -IDENTITY_RANGE, 1.0 if blend else IDENTITY_RANGE)
        assert me.shape_keys is not None    # made by add_shape_keys
        me.shape_keys.name = f"{name} Keys"
        joints = model_to_blender(arrays["joints"])
        jdeltas = model_to_blender(arrays["joint_shape_deltas"])  # (S, J, 3)
        me["headcraft_joints"] = joints.ravel().tolist()
        me["headcraft_joint_shape_deltas"] = jdeltas.ravel().tolist()
        set_role(obj, Role.HEAD)
        obj["headcraft_model"] = result["model"]
        obj["headcraft_version"] = result["version"]
        obj["headcraft_num_shape"] = ns
        obj["headcraft_num_expr"] = ne
        obj["headcraft_expr_kind"] = result.get("expr_kind", "pca")
        obj["headcraft_expr_names"] = list(result["expr_names"])
        obj["headcraft_num_vertices"] = len(me.vertices)
        col.objects.link(obj)
        rig = _create_rig(context, col, f"{name} Rig", joints, joint_names, list(result["parents"]))
        rig.location = location
        obj.parent = rig
        mod = cast(bpy.types.ArmatureModifier, obj.modifiers.new("HeadCraft Rig", "ARMATURE"))
        mod.object = rig
    except Exception:
        # Never leave a half-built head behind.
        made_rig = obj.parent
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(me)
        if made_rig is not None:
            arm = cast(bpy.types.Armature, made_rig.data)
            bpy.data.objects.remove(made_rig)
            bpy.data.armatures.remove(arm)
        raise
    select_only(context, obj)
    return obj


def _create_rig(context, col, name, joints, joint_names, parents) -> bpy.types.Object:
    arm = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, arm)
    set_role(rig, Role.RIG)
    rig.show_in_front = True
    arm["headcraft_bones"] = list(joint_names)
    col.objects.link(rig)
    with _edit_mode(context, rig):
        bones: list[bpy.types.EditBone] = []
        for j, jn in enumerate(joint_names):
            b = arm.edit_bones.new(jn)
            b.head = joints[j]
            b.tail = joints[j] + np.array([0, 0, BONE_LENGTH.get(jn, 0.03)], np.float32)
            b.align_roll((0.0, -1.0, 0.0))   # local Z = model forward (Blender -Y)
            if parents[j] >= 0:
                b.parent = bones[parents[j]]
            bones.append(b)
    assert rig.pose is not None     # an armature object's
    for pb in rig.pose.bones:
        pb.rotation_mode = "XYZ"
    return rig


class _edit_mode:
    """Edit an armature's bones, restoring the previous active object afterwards."""

    def __init__(self, context, rig):
        self.context, self.rig = context, rig

    def __enter__(self):
        vl = self.context.view_layer
        self.prev = vl.objects.active
        vl.objects.active = self.rig
        with self.context.temp_override(active_object=self.rig, object=self.rig):
            bpy.ops.object.mode_set(mode="EDIT")
        return self

    def __exit__(self, *exc):
        with self.context.temp_override(active_object=self.rig, object=self.rig):
            bpy.ops.object.mode_set(mode="OBJECT")
        self.context.view_layer.objects.active = self.prev
        return False


def select_only(context, obj) -> None:
    for o in context.view_layer.objects:
        if o.select_get():
            o.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj


# -- the active head ---------------------------------------------------------------------------
def find_head(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The HeadCraft head mesh for the active object (the mesh itself or its rig)."""
    if obj is None:
        return None
    if role_of(obj) is Role.HEAD and obj.type == "MESH":
        return obj
    if role_of(obj) is Role.RIG:
        for child in obj.children:
            if role_of(child) is Role.HEAD:
                return child
    return None


def sync_rig(context, head: bpy.types.Object) -> None:
    """Move the rig's joints to the head's current identity (joints are linear in identity)."""
    rig = head.parent
    if rig is None or rig.type != "ARMATURE":
        return
    ns = int(head["headcraft_num_shape"])
    joints = np.array(mesh_of(head)["headcraft_joints"], np.float32).reshape(-1, 3)
    deltas = np.array(mesh_of(head)["headcraft_joint_shape_deltas"], np.float32).reshape(ns, -1, 3)
    identity = key_values(head, shape_key_names(ns))
    current = joints + np.einsum("k,kjc->jc", identity, deltas)
    head["headcraft_rig_identity"] = identity.tolist()
    arm = cast(bpy.types.Armature, rig.data)
    with _edit_mode(context, rig):
        for j, name in enumerate(arm["headcraft_bones"]):
            eb = arm.edit_bones[name]
            length = eb.length
            eb.head = current[j]
            eb.tail = current[j] + np.array([0, 0, length], np.float32)
            eb.align_roll((0.0, -1.0, 0.0))


def rig_out_of_date(head: bpy.types.Object) -> bool:
    """True when identity keys were edited since the rig's joints were last placed."""
    # (the stubs type bpy_struct.get as returning None)
    ns = int(head.get("headcraft_num_shape", 0))  # type: ignore[func-returns-value, call-overload]
    synced = np.array(head.get("headcraft_rig_identity", [0.0] * ns), np.float32)  # type: ignore[func-returns-value]
    return synced.shape != (ns,) or not np.allclose(key_values(head, shape_key_names(ns)), synced, atol=1e-4)


def randomize(head: bpy.types.Object, identity: bool, expression: bool, seed: int | None) -> None:
    rng = np.random.default_rng(seed)
    if identity:
        ns = int(head["headcraft_num_shape"])
        set_key_values(head, shape_key_names(ns), rng.standard_normal(ns))
    if expression:
        names = list(head["headcraft_expr_names"])
        # (the stubs type bpy_struct.get as returning None)
        if head.get("headcraft_expr_kind") == "blendshape":  # type: ignore[func-returns-value]
            values = np.zeros(len(names))
            pick = rng.choice(len(names), size=min(6, len(names)), replace=False)
            values[pick] = rng.uniform(0.2, 0.8, size=len(pick))
        else:
            values = rng.standard_normal(len(names)) * 0.7
        set_key_values(head, names, values)


def reset(head: bpy.types.Object) -> None:
    ns = int(head["headcraft_num_shape"])
    names = shape_key_names(ns) + list(head["headcraft_expr_names"])
    set_key_values(head, names, np.zeros(len(names)))
    rig = head.parent
    if rig is not None and rig.type == "ARMATURE" and rig.pose is not None:
        for pb in rig.pose.bones:
            pb.rotation_euler = (0.0, 0.0, 0.0)
            pb.location = (0.0, 0.0, 0.0)
