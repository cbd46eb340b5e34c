"""Scene settings of the HeadCraft panels."""

import bpy

from .fit.operators import LANDMARK_ITEMS, PARTIAL_ITEMS, PRESET_ITEMS, UNIT_ITEMS, WEIGHT_TOOLTIPS, WEIGHTS
from .head.operators import MODEL_ITEMS
from .layout.operators import SIZE_ITEMS, SPACE_ITEMS
from .roles import has_role


def _is_mesh(self, obj):
    return obj.type == "MESH" and not has_role(obj)


class HeadCraftSceneSettings(bpy.types.PropertyGroup):
    model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default="OPENHEAD",
                                  description="The parametric head model Add Head builds from")
    num_shape: bpy.props.IntProperty(name="Identity Keys", default=50, min=0, max=300,
                                     description="Number of identity shape keys on a new head")
    num_expr: bpy.props.IntProperty(name="Expression Keys", default=100, min=0, max=100,
                                    description="Number of expression shape keys on a new head")
    random_identity: bpy.props.BoolProperty(name="Random Identity", default=True,
                                            description="Give a new head a random identity instead of the average one")
    random_expression: bpy.props.BoolProperty(name="Random Expression", default=False,
                                              description="Give a new head a random expression instead of a neutral face")
    fit_scan: bpy.props.PointerProperty(name="Scan", type=bpy.types.Object, poll=_is_mesh,
                                        description="The scan mesh to fit (it is never modified)")
    fit_model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default="OPENHEAD",
                                      description="The parametric head model fitted to the scan")
    fit_preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="PAPER",
                                       description="Steps and step sizes of the detailed fit")
    fit_landmarks: bpy.props.EnumProperty(name="Landmarks", items=LANDMARK_ITEMS, default="AUTO",
                                          description="Where the face landmarks that start the fit come from")
    fit_partial: bpy.props.EnumProperty(name="Scan Kind", items=PARTIAL_ITEMS, default="FULL",
                                        description="How much of the head the scan covers")
    fit_steps: bpy.props.IntProperty(name="Steps per Stage", default=0, min=0, max=20000,
                                     description="Registration steps per stage; 0 uses the preset's")
    fit_units: bpy.props.EnumProperty(name="Scan Units", items=UNIT_ITEMS, default="AUTO",
                                      description="The scan's units, which set the head's size")
    fit_custom_weights: bpy.props.BoolProperty(
        name="Custom Weights", default=False,
        description="Send the weights below instead of the preset's (learning rates stay the preset's)")
    map_layout: bpy.props.StringProperty(
        name="Layout", default="headcraft",
        description="UV layout: headcraft (face left, scalp right), standard (the model's own) or a saved one")
    map_layouts: bpy.props.StringProperty(name="Known Layouts", default="", options={"HIDDEN"},
                                          description="The layouts the backend knows, comma-separated")
    map_size: bpy.props.EnumProperty(name="Size", items=SIZE_ITEMS, default="1024",
                                     description="Width and height of baked maps in pixels")
    map_space: bpy.props.EnumProperty(name="Space", items=SPACE_ITEMS, default="OBJECT",
                                      description="The axes baked displacements are measured in")
    map_exr: bpy.props.BoolProperty(name="EXR", default=True, description="Also write a float OpenEXR file (lossless)")
    map_png16: bpy.props.BoolProperty(name="PNG 16", default=False,
                                      description="Also write three 16-bit PNGs, +-20 units (the published maps' format)")
    map_npy: bpy.props.BoolProperty(name="NumPy", default=False, description="Also write a float32 .npy array")
    map_storage: bpy.props.EnumProperty(name="Storage", default="PACK", items=[
        ("PACK", "Pack in .blend", "Images made by HeadCraft are packed into the .blend file"),
        ("FILE", "Files in Folder", "Images made by HeadCraft are saved to the folder below (EXR for maps, PNG "
                                    "for colors) and read from there")],
        description="Where the pixels of the images HeadCraft makes are kept when the .blend is saved")
    map_folder: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH", default="//headcraft_maps/",
                                         description="Where baked map files go ('//' = next to the .blend)")
    map_file: bpy.props.StringProperty(name="Map File", subtype="FILE_PATH", default="",
                                       description="EXR, one of the three 16-bit PNGs, or .npy (used before the image)")
    gen_checkpoint: bpy.props.StringProperty(
        name="Checkpoint", subtype="FILE_PATH", default="",
        description="Generator on the backend's machine: our .json (with its .safetensors) or a published "
                    ".ckpt (its ema_*.pth beside it is used); empty uses the bundled demo model")
    gen_seed: bpy.props.IntProperty(name="Seed", default=0, min=0,
                                    description="Picks the generated head; the same seed gives the same head")
    gen_psi: bpy.props.FloatProperty(name="Truncation", default=0.7, min=0.0, max=1.5,
                                     description="How far from the average head: 0 = the average head, "
                                                 "1 = the generator's full variety")
    gen_noise: bpy.props.EnumProperty(name="Scalp Noise", default="CONST", description="Fine random detail in the hair", items=[
        ("CONST", "Constant", "The generator's fixed noise (reproducible)"),
        ("RANDOM", "Random", "Fresh noise each time (hair strands vary)"),
        ("NONE", "None", "No noise")])
    gen_mix: bpy.props.BoolProperty(name="Mix", default=False,
                                    description="Mix in the styles of a second seed (style mixing)")
    gen_mix_seed: bpy.props.IntProperty(name="Seed 2", default=1, min=0,
                                        description="The second seed whose styles are mixed in")
    gen_mix_from: bpy.props.IntProperty(name="From", default=8, min=0, max=32,
                                        description="Styles from this layer on come from the second seed")
    interp_seed_b: bpy.props.IntProperty(name="To Seed", default=1, min=0,
                                         description="The second seed: where Interpolate ends, and the hair "
                                                     "Transfer Hair takes")
    interp_steps: bpy.props.IntProperty(name="Steps", default=9, min=2, max=64,
                                        description="Heads computed along the way (cached as shape keys)")
    fit_latent_steps: bpy.props.IntProperty(name="Fit Steps", default=1000, min=10, max=20000,
                                            description="Optimization steps of the style fit (the paper: 1000)")
    map_image: bpy.props.PointerProperty(name="Map Image", type=bpy.types.Image,
                                         description="A displacement map image in HeadCraft units")
    anim_scene_range: bpy.props.BoolProperty(name="Scene Range", default=True,
                                              description="Use the scene's frame range")
    anim_frame_start: bpy.props.IntProperty(name="Start", default=1,
                                            description="First frame to bake or render")
    anim_frame_end: bpy.props.IntProperty(name="End", default=250,
                                          description="Last frame to bake or render")
    render_engine: bpy.props.EnumProperty(name="Engine", default="CYCLES", description="Render engine", items=[
        ("CYCLES", "Cycles", "Path tracing (skin and hair detail read best)"),
        ("EEVEE", "EEVEE", "Fast rasterized previews"),
        ("WORKBENCH", "Workbench", "Solid shading, the fastest")])
    render_resolution: bpy.props.IntVectorProperty(name="Resolution", size=2, default=(1024, 1024), min=16,
                                                   max=8192, description="Width and height of the images in pixels")
    render_samples: bpy.props.IntProperty(name="Samples", default=64, min=1, max=4096,
                                          description="Samples per pixel (Cycles and EEVEE)")
    render_turntable_views: bpy.props.IntProperty(name="Views", default=36, min=1, max=720,
                                                  description="Turntable images over one full turn")
    render_folder: bpy.props.StringProperty(
        name="Output", subtype="DIR_PATH", default="//headcraft_render/",
        description="Where frames and the contact sheet go ('//' = next to the .blend; the extension's "
                    "user folder while the file is unsaved)")
    render_contact_count: bpy.props.IntProperty(name="Sheet Frames", default=12, min=1, max=100,
                                                 description="Frames on the contact sheet, evenly spread")
    render_contact_columns: bpy.props.IntProperty(name="Columns", default=4, min=1, max=20,
                                                  description="Images per row of the contact sheet")


for _prop, _section, _field, _default, _label in WEIGHTS:
    HeadCraftSceneSettings.__annotations__[_prop] = bpy.props.FloatProperty(
        name=_label, default=_default, min=0.0, precision=4,
        description=WEIGHT_TOOLTIPS[_prop])


CLASSES = (HeadCraftSceneSettings,)


def register():
    bpy.types.Scene.headcraft = bpy.props.PointerProperty(type=HeadCraftSceneSettings)


def unregister():
    del bpy.types.Scene.headcraft
