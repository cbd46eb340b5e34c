"""Operators: detect landmarks on a scan (editable), fit a head to it."""
import bpy

from .. import polls, runtime
from ..head import objects as head_objects
from ..models import model_params
from ..roles import Role, role_of
from . import objects
from .properties import WEIGHTS

def chosen_scan(context):
    """The scan mesh chosen in the Fit Scan panel, or None."""
    obj = context.scene.headcraft.fit.scan
    return obj if obj is not None and obj.type == "MESH" else None


def landmarks_object(scan):
    """The scan's Landmarks object (made by Detect Landmarks, edited by hand), or None."""
    obj = bpy.data.objects.get(f"{scan.name} Landmarks")
    return obj if role_of(obj) is Role.LANDMARKS else None


def found_directions(scan) -> dict:
    """The `up` and `forward` Detect Landmarks found the scan's face with (kept on its Landmarks
    object), so that the fit renders from there instead of searching again; empty when none."""
    lmk = landmarks_object(scan)
    if lmk is None or "headcraft_up" not in lmk or "headcraft_forward" not in lmk:
        return {}
    return {"up": [float(x) for x in lmk["headcraft_up"]], "forward": [float(x) for x in lmk["headcraft_forward"]]}


def scan_units_per_metre(scene) -> float | None:
    """The scale the user vouches for (scan units per metre), or None to estimate it."""
    units = scene.headcraft.fit.units
    if units == "SCENE":
        return 1.0 / (scene.unit_settings.scale_length or 1.0)
    return {"MM": 1000.0, "CM": 100.0, "M": 1.0}.get(units)


def fit_settings(scene) -> dict:
    """The request's `coarse`, `stage1` and `stage2` sections from the panel."""
    s = scene.headcraft.fit
    out: dict[str, dict] = {"coarse": {}, "stage1": {}, "stage2": {}}
    if s.custom_weights:
        for prop, section, field, _, _ in WEIGHTS:
            out[section][field] = getattr(s, prop)
    if s.steps:
        out["stage1"]["steps"] = out["stage2"]["steps"] = s.steps
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
            obj["headcraft_up"], obj["headcraft_forward"] = result["up"], result["forward"]
            runtime.notify(f"{len(out['landmark_ids'])} landmarks on {name} (edit them in Edit Mode, "
                           f"snapping to the scan), confidence {result['confidence']:.2f}")
            obj.select_set(True)

        return _submit(self, f"Landmarks on {name}", "fit.landmarks", {"name": name}, arrays, apply)


def _scan_arrays(op, scan, hand_landmarks: bool) -> dict | None:
    """The scan's arrays, with its hand-placed landmarks when asked for (None: reported)."""
    arrays = objects.scan_arrays(scan)
    if hand_landmarks:
        lmk = landmarks_object(scan)
        if lmk is None:
            op.report({"ERROR"}, f"No '{scan.name} Landmarks' object: press Detect Landmarks "
                                 f"first, or choose Automatic")
            return None
        try:
            arrays.update(objects.landmark_arrays(lmk))
        except ValueError as exc:
            op.report({"ERROR"}, str(exc))
            return None
    return arrays


class HEADCRAFT_OT_fit_scan(_ScanOperator, bpy.types.Operator):
    """Fit the head model and high-detail displacements to the scan (the scan is not changed)"""
    bl_idname = "headcraft.fit_scan"
    bl_label = "Fit Scan"
    bl_options = runtime.JOB_OPTIONS

    def execute(self, context):
        s = context.scene.headcraft.fit
        scan = chosen_scan(context)
        arrays = _scan_arrays(self, scan, s.landmarks == "HAND")
        if arrays is None:
            return {"CANCELLED"}
        params = dict(model_params(s.model), name=scan.name, preset=s.preset.lower(),
                      partial=s.scan_kind != "FULL", sparse=s.scan_kind == "SPARSE")
        params.update(fit_settings(context.scene))
        params.update(found_directions(scan))
        name = scan.name

        def apply(result, out):
            head, detailed = objects.create_fitted(bpy.context, result, out, bpy.data.objects[name])
            face = result["report"].get("face", {})
            runtime.notify(f"Fitted {name}: face median {face.get('result_to_scan_median', float('nan')):.2f} mm, "
                           f"{len(detailed.data.vertices):,} detailed vertices"
                           + (f" ({'; '.join(result['notes'])})" if result["notes"] else ""))

        return _submit(self, f"Fit {name}", "fit.scan", params, arrays, apply)


class HEADCRAFT_OT_complete_scan(bpy.types.Operator):
    """Complete a partial scan into a whole detailed head with the Generate panel's generator"""
    bl_idname = "headcraft.complete_scan"
    bl_label = "Complete Head"
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (chosen_scan(context) is not None,
                                          "Choose the scan mesh in the Fit Scan panel"),
                           (context.scene.headcraft.fit.scan_kind != "FULL",
                            "Set Scan Kind to Depth View or Sparse Cloud: a full scan needs no completion"))

    def execute(self, context):
        settings = context.scene.headcraft
        s = settings.fit
        scan = chosen_scan(context)
        arrays = _scan_arrays(self, scan, s.landmarks == "HAND")
        if arrays is None:
            return {"CANCELLED"}
        checkpoint = settings.generate.checkpoint
        n = s.latent_steps
        params = dict(model_params(s.model), name=scan.name, preset=s.preset.lower(), sparse=s.scan_kind == "SPARSE",
                      layout=settings.layout.uv_layout.strip() or "headcraft", keep_observed=s.keep_observed,
                      checkpoint=bpy.path.abspath(checkpoint) if checkpoint.startswith("//") else checkpoint,
                      settings={"steps_z": n, "steps_delta": n, "steps_noise": n})
        params.update(fit_settings(context.scene))
        params.update(found_directions(scan))
        name = scan.name

        def apply(result, out):
            scan_obj = bpy.data.objects[name]
            obj = objects.create_detailed(bpy.context, result, out, f"{name} Completed",
                                          objects.similarity_matrix(result["similarity"]),
                                          head_objects.collection_of(bpy.context, scan_obj))
            obj["headcraft_scan"] = name
            head_objects.select_only(bpy.context, obj)
            runtime.notify(f"Completed {name}: {result['seen']:.0%} of the head seen, the rest from "
                           f"{result['generator']}" + (f" ({'; '.join(result['notes'])})" if result["notes"] else ""))

        return _submit(self, f"Complete {name}", "generate.complete", params, arrays, apply)


CLASSES = (HEADCRAFT_OT_detect_landmarks, HEADCRAFT_OT_fit_scan, HEADCRAFT_OT_complete_scan)
