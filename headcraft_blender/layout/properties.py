"""The Layouts and Maps panel's settings: scene.headcraft.layout."""
import bpy

from ..declared import PARAMS, choices, default

_SIZE = PARAMS["map.bake"]["size"]
# the menu's sizes: powers of two from 256 to 4096, inside the bounds the bake declares
SIZE_ITEMS = [(str(s), f"{s} x {s}", f"{s} x {s} pixels") for s in (256, 512, 1024, 2048, 4096)
              if _SIZE["min"] <= s <= _SIZE["max"]]
SPACE_ITEMS = choices("map.bake", "space", {
    "object": ("Object", "Displacements in the head's own axes (as the paper; for generation)"),
    "tangent": ("Tangent", "Tangent / normal / bitangent (follows animation; Blender's Vector Displacement "
                           "node in tangent space)")})
# the file formats a bake can also write, each a toggle of the same name
FORMATS = PARAMS["map.bake"]["formats"]["choices"]
STORAGE_ITEMS = [
    ("PACK", "Pack in .blend", "Images made by HeadCraft are packed into the .blend file"),
    ("FILE", "Files in Folder", "Images made by HeadCraft are saved to the folder below (EXR for maps, PNG "
                                "for colors) and read from there")]


class HeadCraftLayoutSettings(bpy.types.PropertyGroup):
    uv_layout: bpy.props.StringProperty(
        name="Layout", default=default("map.bake", "layout"),
        description="UV layout: headcraft (face left, scalp right), standard (the model's own) or a saved one")
    known_layouts: bpy.props.StringProperty(name="Known Layouts", default="", options={"HIDDEN"},
                                            description="The layouts the backend knows, comma-separated")
    size: bpy.props.EnumProperty(name="Size", items=SIZE_ITEMS, default=str(default("map.bake", "size")),
                                 description="Width and height of baked maps in pixels")
    space: bpy.props.EnumProperty(name="Space", items=SPACE_ITEMS, default=default("map.bake", "space"),
                                  description="The axes baked displacements are measured in")
    exr: bpy.props.BoolProperty(name="EXR", default=True, description="Also write a float OpenEXR file (lossless)")
    png16: bpy.props.BoolProperty(name="PNG 16", default=False,
                                  description="Also write three 16-bit PNGs, +-20 units (the published maps' format)")
    npy: bpy.props.BoolProperty(name="NumPy", default=False, description="Also write a float32 .npy array")
    storage: bpy.props.EnumProperty(name="Storage", default="PACK", items=STORAGE_ITEMS,
                                    description="Where the pixels of the images HeadCraft makes are kept when the "
                                                ".blend is saved")
    folder: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH", default="//headcraft_maps/",
                                     description="Where baked map files go ('//' = next to the .blend)")
    map_file: bpy.props.StringProperty(name="Map File", subtype="FILE_PATH", default="",
                                       description="EXR, one of the three 16-bit PNGs, or .npy (used before the image)")
    map_image: bpy.props.PointerProperty(name="Map Image", type=bpy.types.Image,
                                         description="A displacement map image in HeadCraft units")


CLASSES = (HeadCraftLayoutSettings,)
