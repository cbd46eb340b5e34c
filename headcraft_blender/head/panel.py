"""The Add Head part of the HeadCraft sidebar."""
from __future__ import annotations

import bpy

from .. import runtime
from ..ui import SidebarSubPanel
from . import objects


class VIEW3D_PT_headcraft_head(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Head"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.headcraft.head
        col = layout.column(align=True)
        col.prop(settings, "model")
        if settings.model == "FLAME" and not runtime.prefs().flame_model_path:
            col.label(text="Set the FLAME files in the preferences", icon="ERROR")
        col.prop(settings, "num_shape")
        col.prop(settings, "num_expr")
        row = layout.row(align=True)
        row.prop(settings, "random_identity", toggle=True)
        row.prop(settings, "random_expression", toggle=True)
        op = layout.operator("headcraft.add_head", icon="USER")
        op.model, op.num_shape, op.num_expr = settings.model, settings.num_shape, settings.num_expr
        op.randomize_identity = settings.random_identity
        op.randomize_expression = settings.random_expression
        head = objects.find_head(context.active_object)
        if head is None:
            layout.label(text="Select a HeadCraft head to edit it", icon="INFO")
            return
        box = layout.box()
        box.label(text=f"{head.name}: {head.get('headcraft_model', '?')} "
                       f"{head.get('headcraft_version', '')}", icon="MESH_MONKEY")
        box.label(text=f"{head.get('headcraft_num_shape', 0)} identity, "
                       f"{head.get('headcraft_num_expr', 0)} expression keys")
        col = box.column(align=True)
        col.operator("headcraft.randomize_identity", icon="FILE_REFRESH")
        col.operator("headcraft.randomize_expression", icon="FILE_REFRESH")
        row = box.row(align=True)
        row.operator("headcraft.reset_head", icon="LOOP_BACK")
        row.operator("headcraft.sync_rig", icon="BONE_DATA")
        if objects.rig_out_of_date(head):
            box.label(text="Identity edited: press Fit Rig to Identity", icon="ERROR")


CLASSES = (VIEW3D_PT_headcraft_head,)
