"""The Animate panel's settings: scene.headcraft.animate (the frame range of Bake Animation and
Render Animation, and the renders)."""
import bpy

ENGINE_ITEMS = [("CYCLES", "Cycles", "Path tracing (skin and hair detail read best)"),
                ("EEVEE", "EEVEE", "Fast rasterized previews"),
                ("WORKBENCH", "Workbench", "Solid shading, the fastest")]


class HeadCraftAnimateSettings(bpy.types.PropertyGroup):
    scene_range: bpy.props.BoolProperty(name="Scene Range", default=True, description="Use the scene's frame range")
    frame_start: bpy.props.IntProperty(name="Start", default=1, description="First frame to bake or render")
    frame_end: bpy.props.IntProperty(name="End", default=250, description="Last frame to bake or render")
    engine: bpy.props.EnumProperty(name="Engine", items=ENGINE_ITEMS, default="CYCLES", description="Render engine")
    resolution: bpy.props.IntVectorProperty(name="Resolution", size=2, default=(1024, 1024), min=16, max=8192,
                                            description="Width and height of the images in pixels")
    samples: bpy.props.IntProperty(name="Samples", default=64, min=1, max=4096,
                                   description="Samples per pixel (Cycles and EEVEE)")
    turntable_views: bpy.props.IntProperty(name="Views", default=36, min=1, max=720,
                                           description="Turntable images over one full turn")
    output_folder: bpy.props.StringProperty(
        name="Output", subtype="DIR_PATH", default="//headcraft_render/",
        description="Where frames and the contact sheet go ('//' = next to the .blend; the extension's "
                    "user folder while the file is unsaved)")
    sheet_frames: bpy.props.IntProperty(name="Sheet Frames", default=12, min=1, max=100,
                                        description="Frames on the contact sheet, evenly spread")
    sheet_columns: bpy.props.IntProperty(name="Columns", default=4, min=1, max=20,
                                         description="Images per row of the contact sheet")


CLASSES = (HeadCraftAnimateSettings,)
