"""The Generate panel's settings: scene.headcraft.generate."""
import bpy

from ..declared import choices, default, numeric

NOISE_ITEMS = choices("generate.sample", "noise", {
    "const": ("Constant", "The generator's fixed noise (reproducible)"),
    "random": ("Random", "Fresh noise each time (hair strands vary)"),
    "none": ("None", "No noise")})
# the request's bounds; seeds from 0 in the panel, the psi slider from 0 to 1.5, Mix From up to
# 32 layers, Interpolate's steps 2-64 on the slider, 9 by default (the middle step is halfway)
SEED = numeric("generate.sample", "seed", min=0)
PSI = numeric("generate.sample", "psi", soft_min=0.0, soft_max=1.5)
MIX_SEED = numeric("generate.sample", "mix_seed", default=1, min=0)
MIX_FROM = numeric("generate.sample", "mix_from", default=8, max=32)
TO_SEED = numeric("generate.interpolate", "seed_b", min=0)
HAIR_SOURCE_ITEMS = choices("generate.transfer_hair", "hair_source", {
    "generator": ("Generator Fit", "The driver's hair as the generator reproduces it after fitting its styles (the "
                                   "paper's way)"),
    "map": ("Driver's Own", "The driver's own displacements, exactly")})
INTERPOLATE_STEPS = numeric("generate.interpolate", "steps", default=9, soft_max=64)


class HeadCraftGenerateSettings(bpy.types.PropertyGroup):
    checkpoint: bpy.props.StringProperty(
        name="Checkpoint", subtype="FILE_PATH", default=default("generate.sample", "checkpoint"),
        description="Generator on the backend's machine: our .json (with its .safetensors) or a published "
                    ".ckpt (its ema_*.pth beside it is used); empty uses the bundled demo model")
    seed: bpy.props.IntProperty(name="Seed", **SEED,
                                description="Picks the generated head; the same seed gives the same head")
    psi: bpy.props.FloatProperty(name="Truncation", **PSI,
                                 description="How far from the average head: 0 = the average head, "
                                             "1 = the generator's full variety")
    noise: bpy.props.EnumProperty(name="Scalp Noise", items=NOISE_ITEMS, default=default("generate.sample", "noise"),
                                  description="Fine random detail in the hair")
    mix: bpy.props.BoolProperty(name="Mix", default=False,
                                description="Mix in the styles of a second seed (style mixing)")
    mix_seed: bpy.props.IntProperty(name="Seed 2", **MIX_SEED,
                                    description="The second seed whose styles are mixed in")
    mix_from: bpy.props.IntProperty(name="From", **MIX_FROM,
                                    description="Styles from this layer on come from the second seed")
    to_seed: bpy.props.IntProperty(name="To Seed", **TO_SEED,
                                   description="The second seed: where Interpolate ends, and the hair "
                                               "Transfer Hair takes")
    interpolate_steps: bpy.props.IntProperty(name="Steps", **INTERPOLATE_STEPS,
                                             description="Heads computed along the way (cached as shape keys)")
    fit_steps: bpy.props.IntProperty(name="Fit Steps", default=1000, min=10, max=20000,
                                     description="Optimization steps of the style fit (the paper: 1000)")
    hair_source: bpy.props.EnumProperty(name="Hair", items=HAIR_SOURCE_ITEMS,
                                        default=default("generate.transfer_hair", "hair_source"),
                                        description="Where Transfer Hair between two detailed heads takes the "
                                                    "driver's hair from")


CLASSES = (HeadCraftGenerateSettings,)
