"""The Maps part of the HeadCraft sidebar: layouts, baking, applying maps."""
import bpy

from .. import polls
from ..ui import SidebarSubPanel
from . import objects


class VIEW3D_PT_headcraft_maps(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Layouts and Maps"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.headcraft.layout
        obj = context.active_object
        layout.prop(s, "uv_layout")
        if s.known_layouts:
            layout.label(text=f"Known: {s.known_layouts.replace(',', ', ')}")
        row = layout.row(align=True)
        row.operator("headcraft.show_layout", icon="UV")
        row.operator("headcraft.save_layout", icon="FILE_TICK")
        row.operator("headcraft.import_layout", icon="IMPORT")

        box = layout.box()
        box.label(text="Bake", icon="RENDER_STILL")
        col = box.column(align=True)
        col.prop(s, "size")
        col.prop(s, "space")
        row = box.row(align=True)
        row.prop(s, "exr", toggle=True)
        row.prop(s, "png16", toggle=True)
        row.prop(s, "npy", toggle=True)
        box.prop(s, "folder")
        box.prop(s, "storage")
        if objects.find_detailed(obj) is None:
            box.label(text=polls.SELECT_DETAILED, icon="INFO")
        row = box.row(align=True)
        row.operator("headcraft.bake_map", icon="IMAGE_DATA")
        row.operator("headcraft.bake_colour", icon="COLOR")

        box = layout.box()
        box.label(text="Apply", icon="MOD_DISPLACE")
        box.prop(s, "map_file")
        box.prop(s, "map_image")
        if objects.head_of(obj) is None:
            box.label(text=polls.SELECT_HEAD, icon="INFO")
        col = box.column(align=True)
        col.operator("headcraft.apply_map", icon="MESH_MONKEY")
        col.operator("headcraft.add_displacement_material", icon="MATERIAL")
        col.operator("headcraft.convert_map", icon="UV_SYNC_SELECT")


CLASSES = (VIEW3D_PT_headcraft_maps,)
