"""The Generate part of the HeadCraft sidebar."""
import bpy

from ..layout import objects as layout_objects
from ..ui import SidebarSubPanel


class VIEW3D_PT_headcraft_generate(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.headcraft.generate
        row = layout.row(align=True)
        row.prop(s, "checkpoint")
        row.operator("headcraft.use_published_model", text="", icon="IMPORT")
        if not s.checkpoint:
            layout.label(text="Empty: the backend's bundled demo model", icon="INFO")
        elif s.checkpoint.lower().endswith(".ckpt"):
            uv_layout = context.scene.headcraft.layout.uv_layout.strip() or "headcraft"
            layout.label(text=f"Published model: FLAME heads, layout '{uv_layout}'",
                         icon="INFO")
        col = layout.column(align=True)
        col.prop(s, "seed")
        col.prop(s, "psi")
        col.prop(s, "noise")
        row = layout.row(align=True)
        row.prop(s, "mix")
        sub = row.row(align=True)
        sub.active = s.mix
        sub.prop(s, "mix_seed")
        sub.prop(s, "mix_from")
        if layout_objects.head_of(context.active_object) is None:
            layout.label(text="Select a HeadCraft head (its identity is used)", icon="INFO")
        layout.operator("headcraft.generate", icon="SHADERFX")
        row = layout.row(align=True)
        row.prop(s, "to_seed")
        row.prop(s, "interpolate_steps")
        row = layout.row(align=True)
        row.operator("headcraft.interpolate", icon="IPO_LINEAR")
        row.operator("headcraft.transfer_hair", icon="OUTLINER_DATA_CURVES")
        row = layout.row(align=True)
        row.prop(s, "fit_steps")
        row.operator("headcraft.fit_generator", icon="VIEWZOOM")
        box = layout.box()
        box.label(text="Two detailed heads (active: start or face)", icon="USER")
        row = box.row(align=True)
        row.operator("headcraft.interpolate_heads", icon="IPO_LINEAR")
        row.operator("headcraft.transfer_hair_heads", icon="OUTLINER_DATA_CURVES")
        box.prop(s, "hair_source")
        obj = context.active_object
        if obj is not None and "headcraft_factor" in obj:
            layout.prop(obj, '["headcraft_factor"]', text="Factor", slider=True)


CLASSES = (VIEW3D_PT_headcraft_generate,)
