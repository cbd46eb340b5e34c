"""The Fit Scan part of the HeadCraft sidebar."""
import json

import bpy

from ..ui import SidebarSubPanel
from . import operators


class VIEW3D_PT_headcraft_fit(SidebarSubPanel, bpy.types.Panel):
    bl_label = "Fit Scan"

    def draw(self, context):
        layout = self.layout
        s = context.scene.headcraft
        layout.prop(s, "fit_scan")
        col = layout.column(align=True)
        col.prop(s, "fit_model")
        col.prop(s, "fit_preset")
        col.prop(s, "fit_partial")
        col.prop(s, "fit_steps")
        layout.prop(s, "fit_landmarks", expand=True)
        scan = operators._scan(context)
        if scan is None:
            layout.label(text="Pick the scan mesh to fit", icon="INFO")
        elif s.fit_landmarks == "HAND" and operators._landmarks_object(scan) is None:
            layout.label(text="Detect landmarks, then edit them", icon="INFO")
        row = layout.row(align=True)
        row.operator("headcraft.detect_landmarks", icon="EMPTY_AXIS")
        row.operator("headcraft.fit_scan", icon="MOD_SHRINKWRAP")
        obj = context.active_object
        if obj is not None and obj.get("headcraft_fit_report"):
            report = json.loads(obj["headcraft_fit_report"])
            box = layout.box()
            box.label(text="Fit error (mm): median / 95th", icon="MOD_MESHDEFORM")
            for region in ("all", "face", "scalp", "neck", "ears"):
                r = report.get(region)
                if r:
                    box.label(text=f"{region}: {r['result_to_scan_median']:.2f} / {r['result_to_scan_p95']:.2f}")


CLASSES = (VIEW3D_PT_headcraft_fit,)
