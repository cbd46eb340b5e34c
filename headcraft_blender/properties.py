"""The scene's HeadCraft settings: scene.headcraft holds one group per capability
(scene.headcraft.head, .fit, .layout, .generate, .animate), each defined in the capability's
properties.py. Files saved with the earlier flat settings are moved into the groups when they
load (old_settings.py)."""
import bpy

from . import old_settings
from .animate import properties as animate
from .fit import properties as fit
from .generate import properties as generate
from .head import properties as head
from .layout import properties as layout


class HeadCraftSettings(bpy.types.PropertyGroup):
    head: bpy.props.PointerProperty(type=head.HeadCraftHeadSettings, name="Head",
                                    description="The Head panel's settings")
    fit: bpy.props.PointerProperty(type=fit.HeadCraftFitSettings, name="Fit Scan",
                                   description="The Fit Scan panel's settings")
    layout: bpy.props.PointerProperty(type=layout.HeadCraftLayoutSettings, name="Layouts and Maps",
                                      description="The Layouts and Maps panel's settings")
    generate: bpy.props.PointerProperty(type=generate.HeadCraftGenerateSettings, name="Generate",
                                        description="The Generate panel's settings")
    animate: bpy.props.PointerProperty(type=animate.HeadCraftAnimateSettings, name="Animate",
                                       description="The Animate panel's settings")


# the groups before the one that points to them (registered in this order, unregistered in reverse)
CLASSES = (*head.CLASSES, *fit.CLASSES, *layout.CLASSES, *generate.CLASSES, *animate.CLASSES, HeadCraftSettings)


def register():
    bpy.types.Scene.headcraft = bpy.props.PointerProperty(type=HeadCraftSettings)
    bpy.app.handlers.load_post.append(old_settings.on_load)
    old_settings.migrate_all()          # the file open while the extension is enabled


def unregister():
    if old_settings.on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(old_settings.on_load)
    del bpy.types.Scene.headcraft
