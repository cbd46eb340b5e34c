"""Blender objects for animation: the shape-key rig of a detailed head, the PC2 bake and its
Mesh Cache object, and performances written as keyframes on the low-res head."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import cast

import numpy as np

import bpy
from mathutils import Matrix

from ..head import objects as head_objects
from ..layout import objects as layout_objects
from ..meshdata import blender_to_model, mesh_of, model_to_blender, new_shape_key, read_vertices
from ..roles import Role, role_of, set_role
from .performance import Performance, resample


def coarse_head(detailed: bpy.types.Object) -> bpy.types.Object | None:
    """The low-res head a detailed head was made on (its rig drives the animation)."""
    # (the stubs type bpy_struct.get as returning None)
    head = bpy.data.objects.get(str(detailed.get("headcraft_head", "")))  # type: ignore[func-returns-value]
    return head if head is not None and layout_objects.head_of(head) is head else None


def rig_request(detailed: bpy.types.Object, head: bpy.types.Object) -> dict:
    """Arrays for animate.rig / animate.bake: the neutral identity and the detail."""
    return {"coarse_neutral": layout_objects.shaped_vertices(head, identity_only=True),
            **{k: v for k, v in layout_objects.detailed_arrays(detailed).items() if k in ("base", "displacement")}}


def _place_like(obj: bpy.types.Object, head: bpy.types.Object) -> None:
    obj.parent = head.parent
    obj.matrix_parent_inverse = head.matrix_parent_inverse.copy()
    obj.matrix_basis = head.matrix_basis.copy()


def _new_object_from(context, detailed, name: str, verts: np.ndarray, role: Role) -> bpy.types.Object:
    """A copy of the detailed head's mesh (UVs, materials, attributes; no shape keys) with new
    vertices."""
    me = detailed.data.copy()
    me.name = name
    obj = bpy.data.objects.new(name, me)
    if me.shape_keys is not None:
        obj.shape_key_clear()
    me.vertices.foreach_set("co", np.ascontiguousarray(verts, np.float32).ravel())
    me.update()
    set_role(obj, role)
    obj["headcraft_detailed"] = detailed.name
    obj["headcraft_model"] = detailed.get("headcraft_model", "openhead")
    head_objects.collection_of(context, detailed).objects.link(obj)
    return obj


def remove_object(obj: bpy.types.Object) -> None:
    me = cast("bpy.types.Mesh | None", obj.data)    # a copy of a detailed head's
    bpy.data.objects.remove(obj)
    if me is not None and me.users == 0:
        bpy.data.meshes.remove(me)


def create_rig_object(context, detailed, head, result: dict, arrays: dict) -> bpy.types.Object:
    """`<detailed> Animated`: the rig's basis, one key per expression driven by the low-res
    head's key of the same name, and the head's armature with the carried weights."""
    obj = _new_object_from(context, detailed, f"{detailed.name} Animated", model_to_blender(arrays["basis"]),
                           Role.ANIMATED)
    try:
        obj["headcraft_head"] = head.name
        new_shape_key(obj, "Basis")
        basis = model_to_blender(arrays["basis"])
        head_keys = head.data.shape_keys
        for name, delta in zip(result["expr_names"], arrays["expr_deltas"]):
            kb = new_shape_key(obj, name)
            kb.points.foreach_set("co", (basis + model_to_blender(delta)).ravel())
            src = head_keys.key_blocks.get(name) if head_keys else None
            if src is None:
                continue
            kb.slider_min, kb.slider_max = src.slider_min, src.slider_max
            drv = kb.driver_add("value").driver
            assert drv is not None      # a driver's F-curve
            drv.type = "AVERAGE"
            var = drv.variables.new()
            var.name, var.type = "v", "SINGLE_PROP"
            var.targets[0].id_type = "KEY"
            var.targets[0].id = head_keys
            var.targets[0].data_path = f'key_blocks["{name}"].value'
        keys = mesh_of(obj).shape_keys
        assert keys is not None     # made by new_shape_key
        keys.name = f"{obj.name} Keys"
        rig = head.parent
        if rig is not None and rig.type == "ARMATURE":
            for j, joint in enumerate(result["joint_names"]):
                head_objects.assign_weights(obj, head_objects.bone_name(joint), arrays["lbs_weights"][:, j])
            mod = cast(bpy.types.ArmatureModifier, obj.modifiers.new("HeadCraft Rig", "ARMATURE"))
            mod.object = rig
        _place_like(obj, head)
    except Exception:
        remove_object(obj)
        raise
    return obj


def rig_of(detailed: bpy.types.Object) -> bpy.types.Object | None:
    for obj in bpy.data.objects:
        # (the stubs type bpy_struct.get as returning None)
        if role_of(obj) is Role.ANIMATED \
                and obj.get("headcraft_detailed") == detailed.name:  # type: ignore[func-returns-value]
            return obj
    return None


def evaluated_vertices(context, obj: bpy.types.Object) -> np.ndarray:
    """Vertices after shape keys, drivers and modifiers, in the object's own space."""
    ev = obj.evaluated_get(context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    try:
        return read_vertices(me)
    finally:
        ev.to_mesh_clear()


def coarse_frames(context, head: bpy.types.Object, frames: range) -> np.ndarray:
    """The low-res head at each frame (keys, drivers, pose), model frame: (F, V, 3)."""
    scene = context.scene
    current = scene.frame_current
    out = []
    try:
        for f in frames:
            scene.frame_set(f)
            out.append(blender_to_model(evaluated_vertices(context, head)))
    finally:
        scene.frame_set(current)
    return np.stack(out)


# ---- PC2 (the point-cache format Blender's Mesh Cache modifier reads) ----
PC2_HEADER = struct.Struct("<12siiffi")


class PC2Writer:
    """Frames appended one chunk at a time; removed again unless finished."""

    def __init__(self, path: Path, num_points: int, start: float, num_frames: int):
        self.path, self.num_points, self.expected = path, num_points, num_frames
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_suffix(".pc2.partial")
        self.fh = self.tmp.open("wb")
        self.fh.write(PC2_HEADER.pack(b"POINTCACHE2\0", 1, num_points, float(start), 1.0, num_frames))
        self.written = 0

    def append(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames, "<f4")
        if frames.shape[1:] != (self.num_points, 3):
            raise ValueError(f"frames of {frames.shape[1]} points for a cache of {self.num_points}")
        self.fh.write(frames.tobytes())
        self.written += len(frames)

    def finish(self) -> Path:
        self.fh.close()
        if self.written != self.expected:
            self.discard()
            raise ValueError(f"the cache got {self.written} of {self.expected} frames")
        self.tmp.replace(self.path)
        return self.path

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def read_pc2(path: str | Path) -> tuple[np.ndarray, float]:
    """(frames, points, 3) and the start frame of a PC2 file."""
    raw = Path(path).read_bytes()
    magic, version, n, start, rate, count = PC2_HEADER.unpack_from(raw)
    if magic != b"POINTCACHE2\0":
        raise ValueError(f"{path}: not a PC2 file")
    return np.frombuffer(raw, "<f4", count * n * 3, PC2_HEADER.size).reshape(count, n, 3), start


def create_baked_object(context, detailed, head, path: Path, frame_start: int) -> bpy.types.Object:
    """`<detailed> Baked`: the detailed mesh played back from the PC2 cache by a Mesh Cache
    modifier, placed like the low-res head (its parent's motion carries it)."""
    obj = _new_object_from(context, detailed, f"{detailed.name} Baked", read_vertices(detailed.data), Role.BAKED)
    try:
        mod = cast(bpy.types.MeshCacheModifier, obj.modifiers.new("HeadCraft Bake", "MESH_CACHE"))
        mod.cache_format = "PC2"
        mod.filepath = bpy.path.relpath(str(path)) if bpy.data.filepath else str(path)
        mod.frame_start = float(frame_start)
        mod.frame_scale = 1.0
        obj["headcraft_cache"] = str(path)
        _place_like(obj, head)
    except Exception:
        remove_object(obj)
        raise
    return obj


def cache_path(detailed: bpy.types.Object) -> Path:
    """Beside the .blend when it is saved, else in the extension's user folder."""
    from .. import runtime
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in detailed.name)
    folder = Path(bpy.path.abspath("//headcraft_cache")) if bpy.data.filepath else runtime.user_dir() / "cache"
    return folder / f"{safe}.pc2"


# ---- performances ----
def fcurves(id_block, action_name: str):
    """The F-curves that animate `id_block` (a new action `action_name` if it has none).
    Blender 4.4+ has slotted actions (5.0 removed Action.fcurves): the curves live in the
    channelbag of the ID's slot. 4.2 has only Action.fcurves. The one place that tells the two apart."""
    ad = id_block.animation_data or id_block.animation_data_create()
    action = ad.action
    if action is None:
        action = ad.action = bpy.data.actions.new(action_name)
    if not hasattr(action, "slots"):
        return action.fcurves
    if ad.action_slot is None:
        ad.action_slot = action.slots.new(id_block.id_type, id_block.name)
    # What bpy_extras.anim_utils.action_ensure_channelbag_for_slot does on 5.x (4.5 lacks it).
    layer = action.layers[0] if action.layers else action.layers.new("Layer")
    strip = layer.strips[0] if layer.strips else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(ad.action_slot, ensure=True).fcurves


def _fcurve(curves, data_path: str, index: int = 0) -> bpy.types.FCurve:
    fc = curves.find(data_path, index=index)
    if fc is not None:
        curves.remove(fc)                  # the import replaces the channel
    return curves.new(data_path, index=index)


def _write(fc: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray) -> None:
    fc.keyframe_points.add(len(frames))
    fc.keyframe_points.foreach_set("co", np.stack([frames, values], 1).astype(np.float32).ravel())
    fc.keyframe_points.foreach_set("interpolation", np.full(len(frames), 2, np.int32))    # LINEAR
    fc.update()


def apply_performance(context, head: bpy.types.Object, perf: Performance, frame_start: int) -> dict:
    """Keyframes on the head's expression keys and its rig's jaw/neck/eye bones, at the scene's
    frame rate. Returns what was written and what this head has no channel for."""
    scene = context.scene
    scene_fps = scene.render.fps / scene.render.fps_base
    offsets, perf = resample(perf, scene_fps)
    frames = frame_start + offsets
    keys = mesh_of(head).shape_keys
    names = [n for n in perf.keys if keys is not None and n in keys.key_blocks]
    missing = [n for n in perf.keys if n not in names]
    rig = head.parent if head.parent is not None and head.parent.type == "ARMATURE" else None
    joints = [j for j in perf.rotations
              if rig is not None and rig.pose is not None and head_objects.bone_name(j) in rig.pose.bones]
    missing += [j for j in perf.rotations if j not in joints]
    if not names and not joints:
        raise ValueError(f"{perf.source}: none of its channels exist on {head.name} "
                         f"(ARKit names need an OpenHead head; FLAME expressions a FLAME head)")
    if names:
        curves = fcurves(keys, f"{head.name} Performance")
        for n in names:
            _write(_fcurve(curves, f'key_blocks["{n}"].value'), frames, perf.keys[n])
    if joints:
        assert rig is not None and rig.pose is not None    # the joints are its bones
        curves = fcurves(rig, f"{rig.name} Performance")
        for j in joints:
            bone = rig.pose.bones[head_objects.bone_name(j)]
            bone.rotation_mode = "XYZ"
            eulers = np.array([_euler(r) for r in perf.rotations[j]])
            path = f'pose.bones["{bone.name}"].rotation_euler'
            for axis in range(3):
                _write(_fcurve(curves, path, axis), frames, eulers[:, axis])
    end = int(frames[-1])
    if end > scene.frame_end:
        scene.frame_end = end
    return {"frames": len(frames), "keys": len(names), "joints": joints, "missing": missing,
            "first": int(frames[0]), "last": end}


def _euler(axis_angle: np.ndarray) -> tuple[float, float, float]:
    """Model-frame axis-angle -> the bone's XYZ Euler (bone axes are the model axes)."""
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-10:
        return (0.0, 0.0, 0.0)
    euler = Matrix.Rotation(angle, 3, tuple(axis_angle / angle)).to_euler("XYZ")
    return (euler.x, euler.y, euler.z)
