"""HeadCraft in Blender's own menus (Add > Mesh, File > Import, the object context menu) and
Esc to cancel the running job."""
from __future__ import annotations

import bpy

from .head import objects as head_objects
from .layout import objects as layout_objects

_KEYMAP_ITEMS: list[tuple[bpy.types.KeyMap, bpy.types.KeyMapItem]] = []


def draw_add_head(self, context):
    """Add > Mesh: a head with the sidebar's Head settings (the redo panel changes them)."""
    self.layout.separator()
    op = self.layout.operator("headcraft.add_head", text="HeadCraft Head", icon="USER")
    s = getattr(getattr(context.scene, "headcraft", None), "head", None)
    if s is not None:
        op.model, op.num_shape, op.num_expr = s.model, s.num_shape, s.num_expr
        op.randomize_identity, op.randomize_expression = s.random_identity, s.random_expression


def draw_import(self, context):
    """File > Import: keyframes the active HeadCraft head (the operator's poll says so)."""
    self.layout.operator("headcraft.import_performance", text="HeadCraft Performance (.csv, .npz)")


class VIEW3D_MT_headcraft_object(bpy.types.Menu):
    """The HeadCraft actions that apply to the active head or detailed head"""
    bl_label = "HeadCraft"

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        detailed = layout_objects.find_detailed(obj)
        if detailed is not None:
            layout.operator("headcraft.show_layout", icon="UV")
            layout.operator("headcraft.bake_map", icon="IMAGE_DATA")
            if detailed.get("headcraft_scan"):
                layout.operator("headcraft.bake_colour", icon="COLOR")
            layout.operator("headcraft.fit_generator")
            layout.separator()
            layout.operator("headcraft.build_rig", icon="ARMATURE_DATA")
            layout.operator("headcraft.bake_animation", icon="RENDER_ANIMATION")
        elif head_objects.find_head(obj) is not None:
            layout.operator("headcraft.randomize_identity", icon="FILE_REFRESH")
            layout.operator("headcraft.randomize_expression", icon="FILE_REFRESH")
            layout.operator("headcraft.reset_head", icon="LOOP_BACK")
            layout.operator("headcraft.sync_rig", icon="BONE_DATA")
            layout.separator()
            layout.operator("headcraft.show_layout", icon="UV")
            layout.operator("headcraft.apply_map", icon="MOD_DISPLACE")
            layout.operator("headcraft.add_displacement_material", icon="MATERIAL")
            layout.operator("headcraft.generate", icon="SHADERFX")
            layout.separator()
            layout.operator("headcraft.import_performance", icon="IMPORT")
        layout.separator()
        layout.operator("headcraft.render", text="Render Turntable", icon="RENDER_STILL").mode = "TURNTABLE"


def draw_object_context(self, context):
    """Right-click on a HeadCraft head (or its rig) or detailed head: the HeadCraft submenu."""
    obj = context.active_object
    if layout_objects.find_detailed(obj) is not None or head_objects.find_head(obj) is not None:
        self.layout.separator()
        self.layout.menu(VIEW3D_MT_headcraft_object.__name__, icon="USER")


MENUS = (("VIEW3D_MT_mesh_add", draw_add_head), ("TOPBAR_MT_file_import", draw_import),
         ("VIEW3D_MT_object_context_menu", draw_object_context))


def register():
    bpy.utils.register_class(VIEW3D_MT_headcraft_object)
    for menu, draw in MENUS:
        getattr(bpy.types, menu).append(draw)
    # Esc cancels the running job; with none running the operator's poll fails and Esc passes on
    kc = bpy.context.window_manager.keyconfigs.addon
    if kc is not None:          # None in some headless sessions: no keys to bind there
        km = kc.keymaps.new(name="Window", space_type="EMPTY", region_type="WINDOW")
        _KEYMAP_ITEMS.append((km, km.keymap_items.new("headcraft.cancel_job", "ESC", "PRESS")))


def unregister():
    for km, kmi in _KEYMAP_ITEMS:
        try:
            km.keymap_items.remove(kmi)
        except (ReferenceError, RuntimeError):    # the keyconfig went first (Blender quitting)
            pass
    _KEYMAP_ITEMS.clear()
    for menu, draw in reversed(MENUS):
        getattr(bpy.types, menu).remove(draw)
    bpy.utils.unregister_class(VIEW3D_MT_headcraft_object)
