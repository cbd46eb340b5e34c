"""Operators for generating detailed heads with the StyleGAN over displacement maps."""
from __future__ import annotations

import numpy as np

import bpy
from bpy_extras.io_utils import ImportHelper

from .. import polls, runtime
from ..models import model_params
from ..layout import objects as layout_objects


class _GeneratorOperator:
    """Shared by the operators that use the generator on the active head."""
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context, reason="Select a HeadCraft head (its identity and expression "
                                                        "are used)")

    def _start(self, context):
        """(settings, head, model, base params)."""
        s = context.scene.headcraft.generate
        head = layout_objects.head_of(context.active_object)
        model = layout_objects.model_of(head)
        params = dict(model_params(model), layout=_layout(context), checkpoint=_checkpoint(s), psi=s.psi)
        return s, head, model, params


class HEADCRAFT_OT_generate(_GeneratorOperator, bpy.types.Operator):
    """Sample a displacement map from the generator and apply it to the active head as a new detailed head"""
    bl_idname = "headcraft.generate"
    bl_label = "Generate"

    def execute(self, context):
        s, head, model, params = self._start(context)
        params.update(seed=s.seed, noise=s.noise.lower())
        if s.mix:
            params.update(mix_seed=s.mix_seed, mix_from=s.mix_from)
        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Generate seed {s.seed}", "generate.sample", params,
            {"coarse_vertices": layout_objects.shaped_vertices(head)},
            _new_detailed(head.name, head.matrix_world.copy(), model.lower(), f"Seed {s.seed}", "Generated",
                          {"headcraft_seed": s.seed, "headcraft_psi": s.psi})))


def _interpolation_object(context, name, world, result, out, steps):
    """A dense head whose shape keys are the interpolation's steps; the custom property
    `headcraft_factor` (0..1, keyframable) drives them, piecewise linearly between steps, so
    scrubbing never calls the backend."""
    from ..meshdata import model_to_blender
    # the basis is the bare head (no detail); each step's key adds its detail
    arrays = {"final": out["base"], "dense_faces": out["dense_faces"], "dense_uv": out["dense_uv"],
              "displacement": np.zeros_like(out["base"])}
    obj = layout_objects.detailed_from_reply(context, result, arrays, name, world, result.get("model", ""),
                                           result.get("head", ""))
    try:
        obj["headcraft_factor"] = 0.0
        obj.id_properties_ui("headcraft_factor").update(min=0.0, max=1.0, soft_min=0.0, soft_max=1.0,
                                                        description="Position between the two heads (keyframe it)")
        obj.shape_key_add(name="Basis", from_mix=False)
        base = model_to_blender(out["base"]).ravel()
        for i in range(steps):
            kb = obj.shape_key_add(name=f"Step {i:02d}", from_mix=False)
            step_base = model_to_blender(out[f"base_{i}"]).ravel() if f"base_{i}" in out else base
            kb.points.foreach_set("co", step_base + model_to_blender(out[f"displacement_{i}"]).ravel())
            kb.slider_min, kb.slider_max = 0.0, 1.0
            drv = kb.driver_add("value").driver
            drv.type = "SCRIPTED"
            var = drv.variables.new()
            var.name, var.type = "f", "SINGLE_PROP"
            var.targets[0].id = obj
            var.targets[0].data_path = '["headcraft_factor"]'
            drv.expression = f"max(0.0, 1.0 - abs(f * {steps - 1} - {i}))"
    except Exception:
        me = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(me)
        raise
    return obj


class HEADCRAFT_OT_interpolate(_GeneratorOperator, bpy.types.Operator):
    """Make the heads between two seeds on the active head, as one object blended by its keyframable Factor"""
    bl_idname = "headcraft.interpolate"
    bl_label = "Interpolate"

    def execute(self, context):
        s, head, model, params = self._start(context)
        name, world, steps = head.name, head.matrix_world.copy(), s.interpolate_steps
        seeds = (s.seed, s.to_seed)
        params.update(seed_a=seeds[0], seed_b=seeds[1], steps=steps, space="w")

        def apply(result, out):
            obj = _interpolation_object(bpy.context, f"{name} Seeds {seeds[0]}-{seeds[1]}", world,
                                        dict(result, model=model.lower(), head=name), out, steps)
            runtime.notify(f"{obj.name}: {steps} steps cached; keyframe its Factor property")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Interpolate {seeds[0]} -> {seeds[1]}", "generate.interpolate", params,
            {"coarse_vertices": layout_objects.shaped_vertices(head)}, apply))


def _layout(context) -> str:
    """The Layouts and Maps panel's layout: the one maps are generated in."""
    return context.scene.headcraft.layout.uv_layout.strip() or "headcraft"


PUBLISHED_LAYOUT = "published"     # the backend's name for the authors' layout, once imported


# the stubs type ImportHelper.check and .invoke as returning None (they return a bool, a set)
class HEADCRAFT_OT_use_published_model(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Use the published HeadCraft .ckpt (ema_*.pth beside it) with the imported layout 'published' on FLAME heads"""
    bl_idname = "headcraft.use_published_model"
    bl_label = "Published HeadCraft"
    bl_options = {"REGISTER"}

    filter_glob: bpy.props.StringProperty(default="*.ckpt", options={"HIDDEN"},
                                         description="The files the browser shows")

    def execute(self, context):
        if not self.filepath.lower().endswith(".ckpt"):
            self.report({"ERROR"}, "Choose the published HeadCraft checkpoint (a .ckpt file)")
            return {"CANCELLED"}
        settings = context.scene.headcraft
        settings.generate.checkpoint, settings.layout.uv_layout = self.filepath, PUBLISHED_LAYOUT
        todo = []
        head = layout_objects.head_of(context.active_object)
        if head is None or layout_objects.model_of(head) != "FLAME":
            todo.append("add a FLAME head (Add Head, Model: FLAME)")
        if PUBLISHED_LAYOUT not in settings.layout.known_layouts.split(","):
            todo.append("import the authors' layout with Import Layout (Layouts and Maps) under the name "
                        f"'{PUBLISHED_LAYOUT}', if you have not yet")
        msg = "Published HeadCraft set up" + (": now " + "; ".join(todo) if todo else "")
        self.report({"WARNING"} if todo else {"INFO"}, msg)
        return {"FINISHED"}


def _checkpoint(s) -> str:
    return bpy.path.abspath(s.checkpoint) if s.checkpoint.startswith("//") else s.checkpoint


def _new_detailed(head_name, world, model, suffix, note, props=None, link=None):
    """The apply callback shared by the generate operators: a detailed head from the reply, named
    after `head_name` and linked to the low-res head `link` (default: `head_name`)."""
    def apply(result, out):
        obj = layout_objects.detailed_from_reply(bpy.context, result, out, f"{head_name} {suffix}", world, model,
                                                 head_name if link is None else link)
        for k, v in (props or {}).items():
            obj[k] = v
        if "map" in out:
            img = layout_objects.map_image(f"{obj.name} map", out["map"])
            img["headcraft_space"], img["headcraft_layout"] = "object", result["layout"]
            bpy.context.scene.headcraft.layout.map_image = img
        extra = "; ".join(result.get("notes", []))
        runtime.notify(f"{note}: {obj.name}" + (f" ({extra})" if extra else ""))
    return apply


class HEADCRAFT_OT_transfer_hair(_GeneratorOperator, bpy.types.Operator):
    """Combine the face of Seed with the hair of To Seed on the active head"""
    bl_idname = "headcraft.transfer_hair"
    bl_label = "Transfer Hair"

    def execute(self, context):
        s, head, model, params = self._start(context)
        params.update(face_seed=s.seed, hair_seed=s.to_seed)
        return runtime.submit_from_operator(self, runtime.UIJob(
            "Transfer hair", "generate.transfer_hair", params, {"coarse_vertices": layout_objects.shaped_vertices(head)},
            _new_detailed(head.name, head.matrix_world.copy(), model.lower(),
                          f"Face {s.seed} Hair {s.to_seed}", "Hair transferred")))


class HEADCRAFT_OT_fit_generator(_GeneratorOperator, bpy.types.Operator):
    """Find the generator's head closest to the active detailed head (e.g. a fitted scan)"""
    bl_idname = "headcraft.fit_generator"
    bl_label = "Fit Generator to Head"

    @classmethod
    def poll(cls, context):
        return polls.detailed_selected(cls, context)

    def execute(self, context):
        s = context.scene.headcraft.generate
        obj = layout_objects.find_detailed(context.active_object)
        model = layout_objects.model_of(obj)
        arrays = layout_objects.detailed_arrays(obj)
        # the fitted low-res head's shape: the detailed head's base is its dense rebuild
        head = bpy.data.objects.get(str(obj.get("headcraft_head", "")))
        if head is not None and layout_objects.head_of(head) is not None:
            arrays["coarse_vertices"] = layout_objects.shaped_vertices(head)
        params = dict(model_params(model), layout=_layout(context), checkpoint=_checkpoint(s),
                      settings={"steps_w": s.fit_steps, "steps_z": s.fit_steps // 2,
                                "steps_delta": s.fit_steps // 2})
        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Fit generator to {obj.name}", "generate.fit_latent", params, arrays,
            _new_detailed(obj.name, obj.matrix_world.copy(), model.lower(), "Generated", "Generator fitted")))


def two_detailed(context):
    """(source, driver): the active detailed head and the one other selected detailed head of the
    same model, or None."""
    source = layout_objects.find_detailed(context.active_object)
    others = [o for o in context.selected_objects if o is not source and layout_objects.find_detailed(o) is o]
    if source is None or len(others) != 1 or layout_objects.model_of(others[0]) != layout_objects.model_of(source):
        return None
    return source, others[0]


class _TwoHeadsOperator:
    """Shared by the operators on two detailed heads (e.g. two fitted scans)."""
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (two_detailed(context) is not None,
                                          "Select two detailed heads of one head model; the active one is the "
                                          "source (the start, or the face)"))

    def _start(self, context, names):
        s = context.scene.headcraft.generate
        source, driver = two_detailed(context)
        arrays = {}
        for obj, suffix in zip((source, driver), names):
            for k, v in layout_objects.detailed_arrays(obj).items():
                if k in ("base", "displacement"):
                    arrays[f"{k}_{suffix}"] = v
        params = dict(model_params(layout_objects.model_of(source)), layout=_layout(context),
                      checkpoint=_checkpoint(s), fit_steps=s.fit_steps)
        return s, source, driver, params, arrays


class HEADCRAFT_OT_interpolate_heads(_TwoHeadsOperator, bpy.types.Operator):
    """Fit two selected detailed heads to the generator and make the heads between them, blended by a Factor"""
    bl_idname = "headcraft.interpolate_heads"
    bl_label = "Interpolate Heads"

    def execute(self, context):
        s, source, driver, params, arrays = self._start(context, ("a", "b"))
        params["steps"] = steps = s.interpolate_steps
        name, other, world = source.name, driver.name, source.matrix_world.copy()
        model, link = layout_objects.model_of(source).lower(), str(source.get("headcraft_head", ""))

        def apply(result, out):
            obj = _interpolation_object(bpy.context, f"{name} to {other}", world, dict(result, model=model, head=link),
                                        out, steps)
            runtime.notify(f"{obj.name}: {steps} steps between two fitted heads; keyframe its Factor property")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Interpolate {name} -> {other}", "generate.interpolate_heads", params, arrays, apply))


class HEADCRAFT_OT_transfer_hair_heads(_TwoHeadsOperator, bpy.types.Operator):
    """Give the active detailed head the hair of the other selected detailed head (its face stays, seams blended)"""
    bl_idname = "headcraft.transfer_hair_heads"
    bl_label = "Transfer Hair"

    def execute(self, context):
        s, source, driver, params, arrays = self._start(context, ("face", "hair"))
        params["hair_source"] = s.hair_source.lower()
        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Hair of {driver.name} on {source.name}", "generate.transfer_hair", params, arrays,
            _new_detailed(source.name, source.matrix_world.copy(), layout_objects.model_of(source).lower(),
                          f"Hair of {driver.name}", "Hair transferred", link=str(source.get("headcraft_head", "")))))


CLASSES = (HEADCRAFT_OT_interpolate_heads, HEADCRAFT_OT_transfer_hair_heads, HEADCRAFT_OT_generate,
           HEADCRAFT_OT_interpolate, HEADCRAFT_OT_transfer_hair, HEADCRAFT_OT_fit_generator,
           HEADCRAFT_OT_use_published_model)
