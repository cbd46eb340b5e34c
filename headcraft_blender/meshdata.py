"""Fast conversion between numpy arrays and Blender meshes, and the one axis conversion.

Backend/model frame: metres, Y up, face towards +Z. Blender: metres, Z up, face towards -Y.
model (x, y, z) -> Blender (x, -z, y); this file is the only place that converts.
"""
from __future__ import annotations

from typing import cast

import numpy as np

import bpy


def model_to_blender(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return np.stack([v[..., 0], -v[..., 2], v[..., 1]], -1)


def blender_to_model(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], -1)


def mesh_of(obj: bpy.types.Object) -> bpy.types.Mesh:
    """A mesh object's mesh: its `data`, which Blender's stubs type as any object's data."""
    return cast(bpy.types.Mesh, obj.data)


def new_mesh(name: str, verts: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None) -> bpy.types.Mesh:
    """A triangle mesh from (V, 3) Blender-frame vertices, (F, 3) faces, optional (F, 3, 2) UVs."""
    verts = np.ascontiguousarray(verts, np.float32)
    faces = np.ascontiguousarray(faces, np.int32)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.vertices.foreach_set("co", verts.ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.ravel())
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if uv is not None:
        layer = me.uv_layers.new(name="UVMap")
        layer.uv.foreach_set("vector", np.ascontiguousarray(uv, np.float32).ravel())
    me.update(calc_edges=True)
    return me


def read_vertices(me: bpy.types.Mesh) -> np.ndarray:
    out = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def write_vertices(me: bpy.types.Mesh, verts: np.ndarray) -> None:
    me.vertices.foreach_set("co", np.ascontiguousarray(verts, np.float32).ravel())
    me.update()


def read_faces(me: bpy.types.Mesh) -> np.ndarray:
    """Triangles of a mesh (its loop triangles, so n-gons come out triangulated)."""
    me.calc_loop_triangles()
    out = np.empty(len(me.loop_triangles) * 3, np.int32)
    me.loop_triangles.foreach_get("vertices", out)
    return out.reshape(-1, 3)


def new_shape_key(obj: bpy.types.Object, name: str) -> bpy.types.ShapeKey:
    """A shape key (from the basis, not the mix) at value 0: Blender 5.x starts new keys at 1,
    4.x at 0."""
    kb = obj.shape_key_add(name=name, from_mix=False)
    kb.value = 0.0
    return kb


def add_shape_keys(obj: bpy.types.Object, names: list[str], deltas: np.ndarray,
                   slider_min: float, slider_max: float) -> None:
    """Append one key per name: basis + delta (deltas (K, V, 3), Blender frame)."""
    if mesh_of(obj).shape_keys is None:
        new_shape_key(obj, "Basis")
    basis = read_vertices(mesh_of(obj))
    for name, delta in zip(names, deltas):
        kb = new_shape_key(obj, name)
        kb.points.foreach_set("co", (basis + delta).ravel())
        kb.slider_min, kb.slider_max = slider_min, slider_max


def key_values(obj: bpy.types.Object, names: list[str]) -> np.ndarray:
    keys = mesh_of(obj).shape_keys
    if keys is None:
        return np.zeros(len(names), np.float32)
    blocks = keys.key_blocks
    return np.array([blocks[n].value if n in blocks else 0.0 for n in names], np.float32)


def set_key_values(obj: bpy.types.Object, names: list[str], values) -> None:
    keys = mesh_of(obj).shape_keys
    assert keys is not None     # the object's keys are being set
    blocks = keys.key_blocks
    for n, v in zip(names, values):
        kb = blocks[n]
        kb.value = float(np.clip(v, kb.slider_min, kb.slider_max))


def material_image(obj: bpy.types.Object) -> bpy.types.Image | None:
    """The image of the first Image Texture node in the object's materials (imported textured
    scans have one feeding the Base Color), or None."""
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or not mat.use_nodes or mat.node_tree is None:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "TEX_IMAGE":
                image = cast(bpy.types.ShaderNodeTexImage, node).image
                if image is not None and image.size[0] > 0:
                    return image
    return None


def image_srgb(img: bpy.types.Image) -> np.ndarray:
    """(H, W, 3) float32 display-encoded sRGB colours of an image, row 0 at the top."""
    w, h = img.size
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)  # type: ignore[attr-defined]  # the stubs type pixels as a float
    px = px.reshape(h, w, img.channels)[::-1, :, :3]
    if img.is_float:      # float images hold linear values; byte images their sRGB codes
        px = np.clip(px, 0, 1)
        px = np.where(px <= 0.0031308, 12.92 * px, 1.055 * np.power(px, 1 / 2.4) - 0.055)
    return np.ascontiguousarray(px, np.float32)


def corner_uv(me: bpy.types.Mesh) -> np.ndarray | None:
    """(loops, 2) coordinates of the active UV map, or None without one."""
    layer = me.uv_layers.active
    if layer is None:
        return None
    uv = np.empty(len(me.loops) * 2, np.float32)
    layer.uv.foreach_get("vector", uv)
    return uv.reshape(-1, 2)


def vertex_average(me: bpy.types.Mesh, per_corner: np.ndarray) -> np.ndarray:
    """Per-vertex mean of per-corner (loop) values."""
    vidx = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", vidx)
    acc = np.zeros((len(me.vertices), per_corner.shape[1]), np.float64)
    for c in range(per_corner.shape[1]):
        acc[:, c] = np.bincount(vidx, per_corner[:, c], minlength=len(me.vertices))
    return (acc / np.maximum(np.bincount(vidx, minlength=len(me.vertices)), 1)[:, None]).astype(np.float32)


def attribute_colours(me: bpy.types.Mesh) -> np.ndarray | None:
    """(V, 3) sRGB colours of the active colour attribute (corner colours averaged per vertex),
    or None without one."""
    col = cast("bpy.types.FloatColorAttribute | bpy.types.ByteColorAttribute | None",
               me.color_attributes.active_color)    # the stubs: an Attribute, which has no data
    if col is None or col.domain not in ("POINT", "CORNER"):
        return None
    rgba = np.empty(len(col.data) * 4, np.float32)
    col.data.foreach_get("color_srgb", rgba)
    rgb = rgba.reshape(-1, 4)[:, :3]
    return vertex_average(me, rgb) if col.domain == "CORNER" else rgb.copy()


def texture_vertex_colours(obj: bpy.types.Object, me: bpy.types.Mesh) -> np.ndarray | None:
    """(V, 3) sRGB colours read from the object's image texture at its active UV map (each
    vertex the mean of its corners), or None when it has no texture or UVs."""
    img, uv = material_image(obj), corner_uv(me)
    if img is None or uv is None or not len(uv):
        return None
    tex = image_srgb(img)
    h, w = tex.shape[:2]
    x = np.clip((uv[:, 0] % 1.0) * w, 0, w - 1).astype(np.int64)
    y = np.clip((1.0 - uv[:, 1] % 1.0) * h, 0, h - 1).astype(np.int64)
    return vertex_average(me, tex[y, x])
