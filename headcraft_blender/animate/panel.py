"""The Animate part of the HeadCraft sidebar."""
import bpy

from ..layout import objects as layout_objects
from ..ui import SidebarSubPanel
from . import objects


class VIEW3D_PT_headcraft_animate(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Animate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.headcraft.animate
        obj = context.active_object
        head = layout_objects.head_of(obj)
        layout.label(text="Low-res head: keyframe it, or import a performance", icon="ARMATURE_DATA")
        layout.operator("headcraft.import_performance", icon="IMPORT")
        if head is None and layout_objects.find_detailed(obj) is None:
            layout.label(text="Select a HeadCraft head or detailed head", icon="INFO")
        layout.separator()
        detailed = layout_objects.find_detailed(obj)
        if detailed is not None and objects.coarse_head(detailed) is None:
            layout.label(text="This detailed head's low-res head is gone", icon="ERROR")
        layout.operator("headcraft.build_rig", icon="SHAPEKEY_DATA")
        row = layout.row(align=True)
        row.prop(s, "scene_range")
        sub = row.row(align=True)
        sub.active = not s.scene_range
        sub.prop(s, "frame_start")
        sub.prop(s, "frame_end")
        layout.operator("headcraft.bake_animation", icon="RENDER_ANIMATION")
        if obj is not None and "headcraft_rig_deviation_mm" in obj:
            layout.label(text=f"Rig vs exact bake: {obj['headcraft_rig_deviation_mm']:.2f} mm max, "
                              f"{obj.get('headcraft_rig_deviation_p99_mm', 0.0):.2f} mm p99")
        layout.separator()
        layout.label(text="Render", icon="RENDER_STILL")
        col = layout.column(align=True)
        col.prop(s, "engine")
        col.prop(s, "resolution")
        col.prop(s, "samples")
        col.prop(s, "turntable_views")
        row = col.row(align=True)
        row.prop(s, "sheet_frames")
        row.prop(s, "sheet_columns")
        col.prop(s, "output_folder")
        col = layout.column(align=True)
        col.operator("headcraft.render", text="Render Turntable", icon="FILE_REFRESH").mode = "TURNTABLE"
        col.operator("headcraft.render", text="Render Animation", icon="RENDER_ANIMATION").mode = "ANIMATION"


CLASSES = (VIEW3D_PT_headcraft_animate,)
