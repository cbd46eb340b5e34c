"""Operators for generating detailed heads with the StyleGAN over displacement maps."""
from __future__ import annotations

import bpy

from .. import runtime
from ..fit import build as fit_build
from ..head import build as head_build
from ..head.operators import model_params
from ..layout import build as layout_build


class HEADCRAFT_OT_generate(bpy.types.Operator):
    """Sample a displacement map from the generator and apply it to the active head's current
    identity and expression as a new detailed head"""
    bl_idname = "headcraft.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.mode == "OBJECT" and layout_build.head_of(context.active_object) is not None \
            and not runtime.busy()

    def execute(self, context):
        s = context.scene.headcraft
        if not s.gen_checkpoint.strip():
            self.report({"ERROR"}, "Set a generator checkpoint first (our .json, or a published .ckpt with its "
                                   "ema_*.pth beside it; see the README for the demo model and training)")
            return {"CANCELLED"}
        head = layout_build.head_of(context.active_object)
        name, world = head.name, head.matrix_world.copy()
        layout = s.map_layout.strip() or "headcraft"
        checkpoint = bpy.path.abspath(s.gen_checkpoint) if s.gen_checkpoint.startswith("//") else s.gen_checkpoint
        params = dict(model_params(layout_build.model_of(head)), layout=layout, checkpoint=checkpoint,
                      seed=s.gen_seed, psi=s.gen_psi, noise=s.gen_noise.lower())
        if s.gen_mix:
            params.update(mix_seed=s.gen_mix_seed, mix_from=s.gen_mix_from)

        def apply(result, out):
            info = {"model": layout_build.model_of(head).lower(), "version": head.get("headcraft_version", "")}
            obj = fit_build.create_detailed(bpy.context, info, out, f"{name} Seed {result['seed']}", world)
            obj.data.uv_layers[0].name = layout_build.UV_PREFIX + result["layout"]
            obj["headcraft_head"], obj["headcraft_seed"], obj["headcraft_psi"] = name, result["seed"], result["psi"]
            img = layout_build.map_image(f"{name} Seed {result['seed']} map", out["map"])
            img["headcraft_space"], img["headcraft_layout"] = "object", result["layout"]
            bpy.context.scene.headcraft.map_image = img
            head_build._select_only(bpy.context, obj)
            runtime.notify(f"Generated {obj.name} (psi {result['psi']}, {result['generator']})")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Generate seed {s.gen_seed}", "generate.sample", params,
            {"coarse_vertices": layout_build.shaped_vertices(head)}, apply, runtime.notify_error))


CLASSES = (HEADCRAFT_OT_generate,)
