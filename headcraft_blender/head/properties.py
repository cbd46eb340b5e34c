"""The Head panel's settings: scene.headcraft.head."""
import bpy

from ..declared import default, numeric
from ..models import MODEL_ITEMS

# Add Head's sizes: the request's bounds, with the panel's own default and ceiling
NUM_SHAPE = numeric("head.build", "num_shape", default=50, max=300)
NUM_EXPR = numeric("head.build", "num_expr", default=100, max=100)


class HeadCraftHeadSettings(bpy.types.PropertyGroup):
    model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default=default("head.build", "model"),
                                  description="The parametric head model Add Head builds from")
    num_shape: bpy.props.IntProperty(name="Identity Keys", **NUM_SHAPE,
                                     description="Number of identity shape keys on a new head")
    num_expr: bpy.props.IntProperty(name="Expression Keys", **NUM_EXPR,
                                    description="Number of expression shape keys on a new head")
    random_identity: bpy.props.BoolProperty(name="Random Identity", default=True,
                                            description="Give a new head a random identity instead of the average one")
    random_expression: bpy.props.BoolProperty(name="Random Expression", default=False,
                                              description="Give a new head a random expression instead of a neutral face")


CLASSES = (HeadCraftHeadSettings,)
