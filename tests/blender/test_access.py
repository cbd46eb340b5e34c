"""HeadCraft where Blender users look for it (menus, Esc), where new objects land, and what it
leaves alone (the user's materials and render UV map); real bpy and backend."""
import types

import numpy as np
import pytest

from headcraft_backend.layout import formats
from recording_layout import RecordingLayout, draw

MENUS = ("VIEW3D_MT_mesh_add", "TOPBAR_MT_file_import", "VIEW3D_MT_object_context_menu")


class _Capture(RecordingLayout):
    """Also keeps the operator properties an entry sets."""

    def __init__(self):
        super().__init__()
        self.props = {}

    def operator(self, idname, **kw):
        self.props[idname] = super().operator(idname, **kw)
        return self.props[idname]


def _our_draw_funcs(bpy, ext, menu):
    return [f for f in getattr(bpy.types, menu)._dyn_ui_initialize() if f.__module__.startswith(ext.__name__)]


def _draw_ours(bpy, ext, menu):
    """What HeadCraft's entries in a Blender menu draw, as RecordingLayout calls."""
    calls = []
    for f in _our_draw_funcs(bpy, ext, menu):
        f(types.SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    return calls


def _add_head(bpy):
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    return bpy.context.active_object


def _node_snapshot(mat):
    nt = mat.node_tree
    return (sorted((n.name, n.bl_idname) for n in nt.nodes),
            sorted((lk.from_node.name, lk.from_socket.identifier, lk.to_node.name, lk.to_socket.identifier)
                   for lk in nt.links),
            tuple(nt.nodes["Principled BSDF"].inputs["Base Color"].default_value))


def _user_material(bpy, name):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.5, 0.4, 1.0)
    mat.node_tree.nodes.new("ShaderNodeTexNoise")
    return mat


def test_menu_entries(blender, ext):
    bpy = blender
    s = bpy.context.scene.headcraft.head
    s.model, s.num_shape, s.num_expr, s.random_identity = "OPENHEAD", 7, 3, True
    layout = _Capture()
    for f in _our_draw_funcs(bpy, ext, "VIEW3D_MT_mesh_add"):
        f(types.SimpleNamespace(layout=layout), bpy.context)
    assert ("operator", "headcraft.add_head") in layout.calls
    assert _draw_ours(bpy, ext, "TOPBAR_MT_file_import") == [("operator", "headcraft.import_performance")]
    # nothing HeadCraft-made selected: no submenu in the context menu
    assert _draw_ours(bpy, ext, "VIEW3D_MT_object_context_menu") == []
    # Add > Mesh uses the sidebar's settings: run what the menu entry would
    op = layout.props["headcraft.add_head"]
    assert (op.model, op.num_shape, op.num_expr, op.randomize_identity) == ("OPENHEAD", 7, 3, True)
    assert bpy.ops.headcraft.add_head(model=op.model, num_shape=op.num_shape, num_expr=op.num_expr) == {"FINISHED"}
    head = bpy.context.active_object
    assert head["headcraft_num_shape"] == 7 and head["headcraft_num_expr"] == 3
    calls = _draw_ours(bpy, ext, "VIEW3D_MT_object_context_menu")
    assert ("menu", "VIEW3D_MT_headcraft_object") in calls
    ops = {c[1] for c in draw(bpy.types.VIEW3D_MT_headcraft_object, bpy.context) if c[0] == "operator"}
    assert {"headcraft.randomize_identity", "headcraft.randomize_expression", "headcraft.show_layout",
            "headcraft.apply_map", "headcraft.generate", "headcraft.import_performance"} <= ops
    assert "headcraft.bake_map" not in ops
    # the rig selected counts as its head
    bpy.context.view_layer.objects.active = head.parent
    assert ("menu", "VIEW3D_MT_headcraft_object") in _draw_ours(bpy, ext, "VIEW3D_MT_object_context_menu")
    # unregistering takes every entry and the key out again
    ext.menus.unregister()
    try:
        assert all(_our_draw_funcs(bpy, ext, m) == [] for m in MENUS)
        assert not hasattr(bpy.types, "VIEW3D_MT_headcraft_object")
        assert not _cancel_items(bpy)
    finally:
        ext.menus.register()
    assert all(len(_our_draw_funcs(bpy, ext, m)) == 1 for m in MENUS)


def test_detailed_head_context_menu(blender, ext, tmp_path):
    bpy = blender
    _add_head(bpy)
    s = bpy.context.scene.headcraft
    s.layout.map_file = str(formats.write(np.zeros((256, 256, 3), np.float32), tmp_path, "zero", "exr")[0])
    assert bpy.ops.headcraft.apply_map() == {"FINISHED"}
    ops = {c[1] for c in draw(bpy.types.VIEW3D_MT_headcraft_object, bpy.context) if c[0] == "operator"}
    assert {"headcraft.bake_map", "headcraft.build_rig", "headcraft.show_layout", "headcraft.fit_generator"} <= ops
    assert "headcraft.randomize_identity" not in ops


def _cancel_items(bpy):
    kc = bpy.context.window_manager.keyconfigs.addon
    return [kmi for km in (kc.keymaps if kc else ()) for kmi in km.keymap_items
            if kmi.idname == "headcraft.cancel_job"]


def test_escape_cancels_the_running_job(blender, ext):
    bpy = blender
    # with nothing running the operator's poll fails, so Esc goes on to Blender's own keys
    assert not bpy.ops.headcraft.cancel_job.poll()
    if bpy.context.window_manager.keyconfigs.addon is None:
        pytest.skip("this headless Blender has no addon keyconfig, so there is no key to check")
    items = _cancel_items(bpy)
    assert len(items) == 1 and items[0].type == "ESC" and items[0].value == "PRESS" and items[0].active
    assert not (items[0].shift or items[0].ctrl or items[0].alt)


def test_add_head_at_cursor_into_active_collection(blender, ext, tmp_path):
    bpy = blender
    sc, vl = bpy.context.scene, bpy.context.view_layer
    heads = bpy.data.collections.new("My Heads")
    sc.collection.children.link(heads)
    vl.active_layer_collection = vl.layer_collection.children[heads.name]
    sc.cursor.location = (0.5, -1.0, 2.0)
    head = _add_head(bpy)
    rig = head.parent
    assert list(head.users_collection) == [heads] and list(rig.users_collection) == [heads]
    vl.update()
    np.testing.assert_allclose(rig.matrix_world.translation, (0.5, -1.0, 2.0), atol=1e-6)
    np.testing.assert_allclose(head.matrix_world.translation, (0.5, -1.0, 2.0), atol=1e-6)
    assert "HeadCraft" not in bpy.data.collections
    # a detailed head made from it sits over it, beside it, whatever collection is active now
    other = bpy.data.collections.new("Other")
    sc.collection.children.link(other)
    vl.active_layer_collection = vl.layer_collection.children[other.name]
    s = sc.headcraft
    s.layout.map_file = str(formats.write(np.zeros((256, 256, 3), np.float32), tmp_path, "zero", "exr")[0])
    bpy.context.view_layer.objects.active = head
    assert bpy.ops.headcraft.apply_map() == {"FINISHED"}
    detailed = bpy.context.active_object
    assert detailed.get("headcraft_role") == "detailed" and list(detailed.users_collection) == [heads]
    vl.update()
    np.testing.assert_allclose(np.array(detailed.matrix_world), np.array(head.matrix_world), atol=1e-6)
    # a collection that is gone by the time a job applies: the scene's own
    objects = ext.head.objects
    name = objects.active_collection_name(bpy.context)
    ctx = bpy.context
    assert name == "Other" and objects.collection_named(ctx, name) == other
    vl.layer_collection.children[other.name].exclude = True      # its objects could not be selected
    assert objects.collection_named(ctx, name) == sc.collection
    bpy.data.collections.remove(other)
    assert objects.collection_named(ctx, name) == sc.collection
    assert objects.collection_named(ctx, "") == sc.collection


def test_displacement_material_leaves_user_materials_alone(blender, ext):
    bpy = blender
    head = _add_head(bpy)
    skin = _user_material(bpy, "Skin")
    head.data.materials.append(skin)
    # a material elsewhere that happens to have the name HeadCraft would choose
    namesake = _user_material(bpy, f"{head.name} HeadCraft Displacement")
    elsewhere = bpy.data.objects.new("Elsewhere", bpy.data.meshes.new("Elsewhere"))
    bpy.context.scene.collection.objects.link(elsewhere)
    elsewhere.data.materials.append(namesake)
    before = _node_snapshot(skin), _node_snapshot(namesake)
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    img = ext.layout.objects.map_image("Lift", np.full((64, 64, 3), 0.1, np.float32))
    img["headcraft_space"], img["headcraft_layout"] = "object", "headcraft"
    bpy.context.scene.headcraft.layout.map_image = img
    for _ in range(2):           # again: HeadCraft's own slot is reused, no third slot
        assert bpy.ops.headcraft.add_displacement_material() == {"FINISHED"}
        mats = [sl.material for sl in head.material_slots]
        assert len(mats) == 2 and mats[0] == skin and mats[1] not in (skin, namesake)
        assert mats[1]["headcraft_material"] == "displacement"
        assert any(n.type == "VECTOR_DISPLACEMENT" for n in mats[1].node_tree.nodes)
        assert (_node_snapshot(skin), _node_snapshot(namesake)) == before
        assert list(elsewhere.data.materials) == [namesake]
    # the faces still render with the user's material (the new one waits in its own slot)
    assert ext.layout.objects.renders_with(head, skin) and not ext.layout.objects.renders_with(head, mats[1])
    assert sum(m.get("headcraft_material") == "displacement" for m in bpy.data.materials) == 1


def test_show_layout_keeps_the_render_uv_map(blender, ext):
    bpy = blender
    head = _add_head(bpy)
    uvs = head.data.uv_layers
    assert uvs["UVMap"].active_render
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    assert uvs.active.name == "HeadCraft headcraft"
    assert [u.name for u in uvs if u.active_render] == ["UVMap"]
    # a tangent-space displacement material needs it: Cycles takes tangents from the render map
    img = ext.layout.objects.map_image("Tangent", np.zeros((64, 64, 3), np.float32))
    img["headcraft_space"], img["headcraft_layout"] = "tangent", "headcraft"
    bpy.context.scene.headcraft.layout.map_image = img
    assert bpy.ops.headcraft.add_displacement_material() == {"FINISHED"}
    assert [u.name for u in uvs if u.active_render] == ["HeadCraft headcraft"]
