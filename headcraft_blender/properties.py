"""Scene settings of the HeadCraft panels."""

import bpy

from .head.operators import MODEL_ITEMS


class HeadCraftSceneSettings(bpy.types.PropertyGroup):
    model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default="OPENHEAD")
    num_shape: bpy.props.IntProperty(name="Identity keys", default=50, min=0, max=300)
    num_expr: bpy.props.IntProperty(name="Expression keys", default=100, min=0, max=100)
    random_identity: bpy.props.BoolProperty(name="Random identity", default=True)
    random_expression: bpy.props.BoolProperty(name="Random expression", default=False)


CLASSES = (HeadCraftSceneSettings,)


def register():
    bpy.types.Scene.headcraft = bpy.props.PointerProperty(type=HeadCraftSceneSettings)


def unregister():
    del bpy.types.Scene.headcraft
