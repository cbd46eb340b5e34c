"""Operators: detect landmarks on a scan (editable), fit a head to it."""
import bpy

from .. import polls, runtime
from ..client.presets import PAPER_WEIGHTS
from ..head.operators import model_params
from ..roles import Role, role_of
from . import objects

PRESET_ITEMS = [("PAPER", "Paper", "The paper's settings: 1000 + 1000 registration steps"),
                ("PREVIEW", "Preview", "250 + 250 larger steps: a quick look")]
LANDMARK_ITEMS = [("AUTO", "Automatic", "Detect face landmarks on a render of the scan"),
                  ("HAND", "Hand-Placed", "Use the scan's Landmarks object (Detect Landmarks, then edit them)")]
UNIT_ITEMS = [("AUTO", "Estimate", "Estimate the scale from the landmarks and the surface"),
              ("SCENE", "Scene Units", "The scan's world-space size is right in the scene's units"),
              ("MM", "Millimeters", "World-space coordinates are millimeters (a typical scanner export)"),
              ("CM", "Centimeters", "World-space coordinates are centimeters"),
              ("M", "Meters", "World-space coordinates are meters")]
# Every weight of the fit, defaulting to the paper preset's (the backend's presets.py, copied):
# (scene property, request section, backend field, default, label)
WEIGHTS = tuple((f"fit_w{tag}_{field.removeprefix('w_')}", section, field, PAPER_WEIGHTS[section][field], label)
                for tag, section, fields in (
                    ("1", "stage1", (("w_chamfer", "Chamfer"), ("w_edge", "Edge"), ("w_laplacian", "Laplacian"),
                                     ("prune", "Prune"))),
                    ("2", "stage2", (("w_chamfer", "Chamfer"), ("w_edge", "Edge"), ("w_laplacian", "Laplacian"),
                                     ("prune", "Prune"))),
                    ("c", "coarse", (("w_landmarks", "Landmarks"), ("w_surface", "Surface"),
                                     ("w_shape", "Identity Prior"), ("w_expr", "Expression Prior"),
                                     ("w_pose", "Pose Prior"), ("w_jaw_side", "Jaw Sideways Prior"))))
                for field, label in fields)
_STAGE = {"stage1": "Stage 1 (hair and scalp)", "stage2": "Stage 2 (face and hair, along normals)"}
WEIGHT_TOOLTIPS = {   # the weights' tooltips, by scene property
    **{f"fit_w{n}_{term}": f"{_STAGE[f'stage{n}']}: {text}" for n in (1, 2) for term, text in (
        ("chamfer", "how strongly the head's surface is pulled onto the scan"),
        ("edge", "how strongly edge lengths are kept (higher stretches the surface less)"),
        ("laplacian", "how strongly the surface is kept smooth"),
        ("prune", "scan and head points farther apart than this " + ("squared " if n == 1 else "")
                  + "distance (HeadCraft units, 1 = 8.3 mm) do not pull on each other"))},
    "fit_wc_landmarks": "Coarse fit: how strongly the head's landmarks are pulled onto the scan's",
    "fit_wc_surface": "Coarse fit: how strongly the head's surface is pulled onto the scan",
    "fit_wc_shape": "Coarse fit: how strongly the identity is kept near the average head",
    "fit_wc_expr": "Coarse fit: how strongly the expression is kept near a neutral face",
    "fit_wc_pose": "Coarse fit: how strongly the jaw and neck are kept near their rest pose",
    "fit_wc_jaw_side": "Coarse fit: how strongly the jaw is kept from turning or tilting sideways",
}
WEIGHT_SECTIONS = (("coarse", "Coarse Fit"), ("stage1", "Stage 1: Hair and Scalp"),
                   ("stage2", "Stage 2: Face and Hair, Along Normals"))
PARTIAL_ITEMS = [("FULL", "Full Scan", "A scan of the whole head"),
                 ("DEPTH", "Depth View", "A single depth map or dense partial cloud"),
                 ("SPARSE", "Sparse Cloud", "A sparse partial point cloud")]


def chosen_scan(context):
    """The scan mesh chosen in the Fit Scan panel, or None."""
    obj = context.scene.headcraft.fit_scan
    return obj if obj is not None and obj.type == "MESH" else None


def landmarks_object(scan):
    """The scan's Landmarks object (made by Detect Landmarks, edited by hand), or None."""
    obj = bpy.data.objects.get(f"{scan.name} Landmarks")
    return obj if role_of(obj) is Role.LANDMARKS else None


def scan_units_per_metre(scene) -> float | None:
    """The scale the user vouches for (scan units per metre), or None to estimate it."""
    units = scene.headcraft.fit_units
    if units == "SCENE":
        return 1.0 / (scene.unit_settings.scale_length or 1.0)
    return {"MM": 1000.0, "CM": 100.0, "M": 1.0}.get(units)


def fit_settings(scene) -> dict:
    """The request's `coarse`, `stage1` and `stage2` sections from the panel."""
    s = scene.headcraft
    out = {"coarse": {}, "stage1": {}, "stage2": {}}
    if s.fit_custom_weights:
        for prop, section, field, _, _ in WEIGHTS:
            out[section][field] = getattr(s, prop)
    if s.fit_steps:
        out["stage1"]["steps"] = out["stage2"]["steps"] = s.fit_steps
    scale = scan_units_per_metre(scene)
    if scale is not None:
        out["coarse"]["scale"] = scale
    return {k: v for k, v in out.items() if v}


def _submit(op, title, kind, params, arrays, apply):
    return runtime.submit_from_operator(op, runtime.UIJob(title, kind, params, arrays, apply))


class _ScanOperator:
    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (chosen_scan(context) is not None,
                                          "Choose the scan mesh in the Fit Scan panel"))


class HEADCRAFT_OT_detect_landmarks(_ScanOperator, bpy.types.Operator):
    """Detect face landmarks on the scan and add them as an editable point object"""
    bl_idname = "headcraft.detect_landmarks"
    bl_label = "Detect Landmarks"
    bl_options = runtime.JOB_OPTIONS

    def execute(self, context):
        scan = chosen_scan(context)
        arrays = objects.scan_arrays(scan)
        name = scan.name

        def apply(result, out):
            obj = objects.create_landmarks(bpy.context, bpy.data.objects[name], out["landmark_ids"],
                                         out["landmark_points"])
            runtime.notify(f"{len(out['landmark_ids'])} landmarks on {name} (edit them in Edit Mode, "
                           f"snapping to the scan), confidence {result['confidence']:.2f}")
            obj.select_set(True)

        return _submit(self, f"Landmarks on {name}", "fit.landmarks", {"name": name}, arrays, apply)


class HEADCRAFT_OT_fit_scan(_ScanOperator, bpy.types.Operator):
    """Fit the head model and high-detail displacements to the scan (the scan is not changed)"""
    bl_idname = "headcraft.fit_scan"
    bl_label = "Fit Scan"
    bl_options = runtime.JOB_OPTIONS

    def execute(self, context):
        s = context.scene.headcraft
        scan = chosen_scan(context)
        arrays = objects.scan_arrays(scan)
        if s.fit_landmarks == "HAND":
            lmk = landmarks_object(scan)
            if lmk is None:
                self.report({"ERROR"}, f"No '{scan.name} Landmarks' object: press Detect Landmarks "
                                       f"first, or choose Automatic")
                return {"CANCELLED"}
            try:
                arrays.update(objects.landmark_arrays(lmk))
            except ValueError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        params = dict(model_params(s.fit_model), name=scan.name, preset=s.fit_preset.lower(),
                      partial=s.fit_partial != "FULL", sparse=s.fit_partial == "SPARSE")
        params.update(fit_settings(context.scene))
        name = scan.name

        def apply(result, out):
            head, detailed = objects.create_fitted(bpy.context, result, out, bpy.data.objects[name])
            face = result["report"].get("face", {})
            runtime.notify(f"Fitted {name}: face median {face.get('result_to_scan_median', float('nan')):.2f} mm, "
                           f"{len(detailed.data.vertices):,} detailed vertices"
                           + (f" ({'; '.join(result['notes'])})" if result["notes"] else ""))

        return _submit(self, f"Fit {name}", "fit.scan", params, arrays, apply)


CLASSES = (HEADCRAFT_OT_detect_landmarks, HEADCRAFT_OT_fit_scan)
