"""The Fit Scan part of the HeadCraft sidebar."""
import json

import bpy

from ..ui import SidebarSubPanel
from . import operators
from .properties import WEIGHT_SECTIONS, WEIGHTS


class VIEW3D_PT_headcraft_fit(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Fit Scan"

    def draw(self, context):
        layout = self.layout
        s = context.scene.headcraft.fit
        layout.prop(s, "scan")
        col = layout.column(align=True)
        col.prop(s, "model")
        col.prop(s, "preset")
        col.prop(s, "scan_kind")
        col.prop(s, "steps")
        col.prop(s, "units")
        layout.prop(s, "landmarks", expand=True)
        scan = operators.chosen_scan(context)
        if scan is None:
            layout.label(text="Pick the scan mesh to fit", icon="INFO")
        elif s.landmarks == "HAND" and operators.landmarks_object(scan) is None:
            layout.label(text="Detect landmarks, then edit them", icon="INFO")
        row = layout.row(align=True)
        row.operator("headcraft.detect_landmarks", icon="EMPTY_AXIS")
        row.operator("headcraft.fit_scan", icon="MOD_SHRINKWRAP")
        if s.scan_kind != "FULL":
            box = layout.box()
            box.label(text="Completion", icon="MOD_REMESH")
            box.prop(s, "latent_steps")
            box.prop(s, "keep_observed")
            box.operator("headcraft.complete_scan", icon="MOD_REMESH")
        obj = context.active_object
        if obj is not None and obj.get("headcraft_fit_report"):
            report = json.loads(obj["headcraft_fit_report"])
            box = layout.box()
            box.label(text="Fit error (mm): median / 95th", icon="MOD_MESHDEFORM")
            for region in ("all", "face", "scalp", "neck", "ears"):
                r = report.get(region)
                if r:
                    box.label(text=f"{region}: {r['result_to_scan_median']:.2f} / {r['result_to_scan_p95']:.2f}")


class VIEW3D_PT_headcraft_fit_weights(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Weights"
    bl_parent_id = "VIEW3D_PT_headcraft_fit"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_header(self, context):
        self.layout.prop(context.scene.headcraft.fit, "custom_weights", text="")

    def draw(self, context):
        s = context.scene.headcraft.fit
        layout = self.layout
        layout.active = s.custom_weights
        for section, title in WEIGHT_SECTIONS:
            col = layout.column(align=True)
            col.label(text=title)
            for prop, sec, *_ in WEIGHTS:
                if sec == section:
                    col.prop(s, prop)


CLASSES = (VIEW3D_PT_headcraft_fit, VIEW3D_PT_headcraft_fit_weights)
