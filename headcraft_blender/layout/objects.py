"""Blender objects for layouts and maps: UV maps, map images, detailed heads, a Cycles material.

Maps arrive as (H, W, 3) float arrays in HeadCraft units with row 0 at the top; Blender images
store rows bottom-up, so rows are flipped here and nowhere else.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import cast

import numpy as np

import bpy

from .. import runtime
from ..client.units import HC_UNITS_PER_METRE
from ..fit import objects as fit_objects
from ..head import objects as head_objects
from ..meshdata import (attribute_colours, blender_to_model, corner_uv, image_srgb, material_image, mesh_of,
                        read_vertices)
from ..roles import Role, role_of

UV_PREFIX = "HeadCraft "
MATERIAL_PURPOSE = "headcraft_material"     # on materials HeadCraft made: "displacement" or "color"


def shaped_vertices(head: bpy.types.Object, identity_only: bool = False) -> np.ndarray:
    """The head's current identity + expression (shape keys mixed, no rig pose), model frame;
    with identity_only, the expression keys are left out (the neutral face)."""
    me = mesh_of(head)
    base = read_vertices(me)
    keys: Iterable[bpy.types.ShapeKey] = me.shape_keys.key_blocks if me.shape_keys else []
    # (the stubs type bpy_struct.get as returning None)
    expressions = (set(head.get("headcraft_expr_names", []))  # type: ignore[func-returns-value, call-overload]
                   if identity_only else set())
    out = base.copy()
    buf = np.empty(base.size, np.float32)
    for kb in list(keys)[1:]:
        if kb.mute or kb.value == 0.0 or kb.name in expressions:
            continue
        kb.points.foreach_get("co", buf)
        out += kb.value * (buf.reshape(-1, 3) - base)
    return blender_to_model(out)


def set_uv_map(obj: bpy.types.Object, layout: str, uv: np.ndarray,
               render: bool = False) -> bpy.types.MeshUVLoopLayer:
    """Per-corner UVs (F, 3, 2) as the UV map "HeadCraft <layout>", made active for editing (and
    for rendering only with `render`: HeadCraft's materials name their UV map); an existing map
    of that name is overwritten."""
    me = mesh_of(obj)
    if len(me.polygons) != len(uv) or len(me.loops) != uv.size // 2:
        raise ValueError(f"{obj.name} has {len(me.polygons)} faces; the layout is for {len(uv)} triangles")
    name = UV_PREFIX + layout
    layer = me.uv_layers.get(name) or me.uv_layers.new(name=name)
    if layer is None:
        raise ValueError(f"{obj.name} has no room for another UV map (Blender allows 8)")
    layer.uv.foreach_set("vector", np.ascontiguousarray(uv, np.float32).ravel())
    me.uv_layers.active = layer
    if render:
        layer.active_render = True
    return layer


def read_uv_map(obj: bpy.types.Object) -> np.ndarray:
    """The active UV map as per-corner UVs (F, 3, 2) of a triangle mesh."""
    me = mesh_of(obj)
    layer = me.uv_layers.active
    if layer is None:
        raise ValueError(f"{obj.name} has no UV map")
    sizes = np.empty(len(me.polygons), np.int32)
    me.polygons.foreach_get("loop_total", sizes)
    if (sizes != 3).any():
        raise ValueError(f"{obj.name} has faces that are not triangles; a layout must keep the head's topology")
    uv = np.empty(len(me.loops) * 2, np.float32)
    layer.uv.foreach_get("vector", uv)
    return uv.reshape(-1, 3, 2)


def map_image(name: str, m: np.ndarray) -> bpy.types.Image:
    """A float image (Non-Color) holding the map; an image of that name is replaced in place."""
    h, w, _ = m.shape
    img: bpy.types.Image | None = bpy.data.images.get(name)
    if img is not None and (tuple(img.size) != (w, h) or not img.is_float):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=False, float_buffer=True)
    # (colorspace_settings and pixels: the stubs type them as Optional and as a float)
    img.colorspace_settings.name = "Non-Color"  # type: ignore[union-attr]
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = m[::-1]
    img.pixels.foreach_set(rgba.ravel())  # type: ignore[attr-defined]
    img["headcraft_map"] = True
    keep_image(img, float(rgba.flat[0]))
    return img


def keep_image(img: bpy.types.Image, first: float) -> None:
    """Make the pixels survive saving the .blend: packed into it (the default), or written to
    the maps folder and read from there (the panel's Storage). `first` is the first pixel
    value: rewriting one value marks the image changed, which foreach_set alone does not, and
    without it pack() and save() store stale pixels."""
    img.pixels[0] = first  # type: ignore[index]  # the stubs type pixels as a float
    img.update()
    img.use_fake_user = True      # kept even when no material uses it (Blender drops unused images)
    # (scene.headcraft: this extension's property, which Blender's stubs cannot know)
    s = bpy.context.scene.headcraft.layout  # type: ignore[union-attr]
    if s.storage == "FILE":
        folder = runtime.output_folder(s.folder, "maps")
        path = folder / (bpy.path.clean_name(img.name) + (".exr" if img.is_float else ".png"))
        if img.packed_file is not None:
            img.unpack(method="REMOVE")
        img.filepath_raw = str(path)
        img.file_format = "OPEN_EXR" if img.is_float else "PNG"
        img.save()
        if bpy.data.filepath:
            img.filepath = bpy.path.relpath(str(path))
    else:
        img.pack()


def image_map(img: bpy.types.Image) -> np.ndarray:
    """(H, W, 3) map (row 0 at the top) from an image's pixels."""
    w, h = img.size
    if w != h or w == 0:
        raise ValueError(f"{img.name} is {w}x{h}; a displacement map is square")
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)  # type: ignore[attr-defined]  # the stubs type pixels as a float
    px = px.reshape(h, w, img.channels)[::-1]
    if img.channels < 3:
        raise ValueError(f"{img.name} has {img.channels} channels; a displacement map needs 3")
    return np.ascontiguousarray(px[..., :3])


def write_files(folder: str, arrays: dict, names: list[str]) -> list[Path]:
    """Write encoded map files (bytes from the backend) into a folder (Blender-relative paths
    allowed); all files or none: a failure removes what this call wrote."""
    written = []
    try:
        out = runtime.output_folder(folder, "maps")
        for name in names:
            p = out / Path(name).name
            p.write_bytes(np.asarray(arrays[f"file__{name}"], np.uint8).tobytes())
            written.append(p)
    except OSError:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def displacement_material(head: bpy.types.Object, img: bpy.types.Image, space: str,
                          layout: str) -> bpy.types.Material:
    """A Cycles material displacing the low-res head by a map (true displacement, and a
    Subdivision modifier to carry it). Object-space maps are in the model frame (Y up), so
    their axes are turned to Blender's here; HeadCraft units become metres. A tangent-space map
    makes the layout the render UV map: Cycles takes tangents from that map."""
    mat, out, bsdf, tex = _image_material(head, f"{head.name} HeadCraft Displacement", "displacement", img, layout)
    nt = mat.node_tree
    disp = nt.nodes.new("ShaderNodeVectorDisplacement")
    disp.space = "TANGENT" if space == "tangent" else "OBJECT"
    disp.inputs["Midlevel"].default_value = 0.0
    disp.inputs["Scale"].default_value = 1.0 / HC_UNITS_PER_METRE
    vec = tex.outputs["Color"]
    if space == "object":           # model (x, y, z) -> Blender (x, -z, y)
        sep = nt.nodes.new("ShaderNodeSeparateXYZ")
        comb = nt.nodes.new("ShaderNodeCombineXYZ")
        neg = nt.nodes.new("ShaderNodeMath")
        neg.operation = "MULTIPLY"
        neg.inputs[1].default_value = -1.0
        nt.links.new(vec, sep.inputs["Vector"])
        nt.links.new(sep.outputs["X"], comb.inputs["X"])
        nt.links.new(sep.outputs["Z"], neg.inputs[0])
        nt.links.new(neg.outputs["Value"], comb.inputs["Y"])
        nt.links.new(sep.outputs["Y"], comb.inputs["Z"])
        vec = comb.outputs["Vector"]
    nt.links.new(vec, disp.inputs["Vector"])
    nt.links.new(disp.outputs["Displacement"], out.inputs["Displacement"])
    if space == "tangent":
        mesh_of(head).uv_layers[UV_PREFIX + layout].active_render = True
    if hasattr(mat, "displacement_method"):
        mat.displacement_method = "DISPLACEMENT"
    else:   # Blender < 4.1
        mat.cycles.displacement_method = "DISPLACEMENT"
    mat["headcraft_map"] = img.name
    if not any(m.type == "SUBSURF" for m in head.modifiers):
        sub = cast(bpy.types.SubsurfModifier, head.modifiers.new("HeadCraft Subdivision", "SUBSURF"))
        sub.levels, sub.render_levels = 1, 3
    return mat


def find_detailed(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    if obj is not None and role_of(obj) is Role.DETAILED and obj.type == "MESH" \
            and "headcraft_displacement" in mesh_of(obj).attributes:
        return obj
    return None


def detailed_arrays(obj: bpy.types.Object) -> dict:
    """base and displacement (model frame, metres) of a detailed head; with shape keys (an
    interpolation), the detail of the current mix."""
    me = mesh_of(obj)
    basis = read_vertices(me)
    disp = np.empty(len(me.vertices) * 3, np.float32)
    cast(bpy.types.FloatVectorAttribute, me.attributes["headcraft_displacement"]).data.foreach_get("vector", disp)
    base = basis - disp.reshape(-1, 3)
    final = basis.copy()
    buf = np.empty(basis.size, np.float32)
    for kb in list(me.shape_keys.key_blocks)[1:] if me.shape_keys else []:
        if not kb.mute and kb.value != 0.0:
            kb.points.foreach_get("co", buf)
            final += kb.value * (buf.reshape(-1, 3) - basis)
    out = {"base": blender_to_model(base), "displacement": blender_to_model(final - base)}
    if "headcraft_visibility" in me.attributes:
        vis = np.empty(len(me.vertices), np.bool_)
        cast(bpy.types.BoolAttribute, me.attributes["headcraft_visibility"]).data.foreach_get("value", vis)
        out["visibility"] = vis.astype(np.uint8)
    return out


def model_of(obj: bpy.types.Object) -> str:
    """"OPENHEAD" or "FLAME" for a HeadCraft object."""
    # (the stubs type bpy_struct.get as returning None)
    return str(obj.get("headcraft_model", "openhead")).upper()  # type: ignore[func-returns-value]


def head_of(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    return head_objects.find_head(obj)


def scan_colour_arrays(obj: bpy.types.Object) -> dict:
    """World-space scan surface (model frame) with its colours: the active colour attribute
    (display-encoded sRGB), else its image texture with the active UV map per triangle corner."""
    deps = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(deps)
    me = ev.to_mesh()
    try:
        me.calc_loop_triangles()
        n_tri = len(me.loop_triangles)
        if n_tri == 0:
            raise ValueError(f"{obj.name} has no faces to take colors from")
        tris = np.empty(n_tri * 3, np.int32)
        me.loop_triangles.foreach_get("vertices", tris)
        loops = np.empty(n_tri * 3, np.int32)
        me.loop_triangles.foreach_get("loops", loops)
        mw = np.array(obj.matrix_world, np.float32)
        verts = read_vertices(me) @ mw[:3, :3].T + mw[:3, 3]
        out = {"scan_vertices": blender_to_model(verts), "scan_faces": tris.reshape(-1, 3)}
        rgb = attribute_colours(me)
        if rgb is not None:
            out["scan_colors"] = rgb
            return out
        img = material_image(obj)
        uv = corner_uv(me)
        if img is None or uv is None:
            raise ValueError(f"{obj.name} has no colors: give it a color attribute or an image texture")
        out["scan_uv"] = uv[loops].reshape(-1, 3, 2)
        out["texture"] = image_srgb(img)
        return out
    finally:
        ev.to_mesh_clear()


def colour_image(name: str, m: np.ndarray) -> bpy.types.Image:
    """An 8-bit sRGB image of display-encoded colours (row 0 of `m` at the top)."""
    h, w, _ = m.shape
    img: bpy.types.Image | None = bpy.data.images.get(name)
    if img is not None and tuple(img.size) != (w, h):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=False)
    # (colorspace_settings and pixels: the stubs type them as Optional and as a float)
    img.colorspace_settings.name = "sRGB"  # type: ignore[union-attr]
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = m[::-1]
    img.pixels.foreach_set(rgba.ravel())  # type: ignore[attr-defined]
    keep_image(img, float(rgba.flat[0]))
    return img


def colour_material(obj: bpy.types.Object, img: bpy.types.Image, layout: str) -> bpy.types.Material:
    mat, _, bsdf, tex = _image_material(obj, f"{obj.name} HeadCraft Color", "color", img, layout)
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _image_material(obj, name: str, purpose: str, img: bpy.types.Image, layout: str):
    """(material, output, Principled BSDF, image texture on the layout's UV map): a new material,
    marked with its purpose. The user's materials stay as they are: it takes the slot of
    HeadCraft's earlier material for the same purpose, else an empty slot, else a new one."""
    mat = bpy.data.materials.new(name)
    mat[MATERIAL_PURPOSE] = purpose
    mat.use_nodes = True
    nt = mat.node_tree
    assert nt is not None   # made by use_nodes
    nt.nodes.clear()        # the new material's default nodes
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    uvn = cast(bpy.types.ShaderNodeUVMap, nt.nodes.new("ShaderNodeUVMap"))
    uvn.uv_map = UV_PREFIX + layout
    tex = cast(bpy.types.ShaderNodeTexImage, nt.nodes.new("ShaderNodeTexImage"))
    tex.image = img
    tex.interpolation = "Linear"
    nt.links.new(uvn.outputs["UV"], tex.inputs["Vector"])
    slots = list(obj.material_slots)
    index = next((i for i, sl in enumerate(slots) if sl.material and sl.material.get(MATERIAL_PURPOSE) == purpose),
                 next((i for i, sl in enumerate(slots) if sl.material is None), None))
    if index is None:
        obj.data.materials.append(mat)
        index = len(obj.material_slots) - 1
    else:
        old = slots[index].material
        slots[index].material = mat
        if old is not None and old.users == 0:      # HeadCraft's earlier one, used nowhere else
            bpy.data.materials.remove(old)
            mat.name = name
    obj.active_material_index = index
    return mat, out, bsdf, tex


def renders_with(obj: bpy.types.Object, mat: bpy.types.Material) -> bool:
    """True when some face of the object uses the material."""
    slots = [i for i, sl in enumerate(obj.material_slots) if sl.material == mat]
    me = mesh_of(obj)
    if not slots or not len(me.polygons):
        return False
    index = np.empty(len(me.polygons), np.int32)
    me.polygons.foreach_get("material_index", index)
    return bool(np.isin(np.minimum(index, len(obj.material_slots) - 1), slots).any())


def world_vertices(obj: bpy.types.Object) -> np.ndarray:
    mw = np.array(obj.matrix_world, np.float32)
    return blender_to_model(read_vertices(mesh_of(obj)) @ mw[:3, :3].T + mw[:3, 3])


def detailed_from_reply(context, result: dict, out: dict, name: str, world, model: str, head_name: str,
                        version: str = "") -> bpy.types.Object:
    """A detailed head from a reply that applied a map (map.apply, generate.*): its UV map named
    after the layout, linked to the head it was made on, selected."""
    obj = fit_objects.create_detailed(context, {"model": model, "version": version}, out, name, world,
                                    head_objects.collection_of(context, bpy.data.objects.get(head_name)))
    mesh_of(obj).uv_layers[0].name = UV_PREFIX + result["layout"]
    obj["headcraft_head"] = head_name
    head_objects.select_only(context, obj)
    return obj
