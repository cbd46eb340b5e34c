"""Operators for adding and editing parametric heads."""

import bpy

from .. import polls, runtime
from ..declared import default
from ..models import MODEL_ITEMS, model_params
from . import objects
from .properties import NUM_EXPR, NUM_SHAPE


class HEADCRAFT_OT_add_head(bpy.types.Operator):
    """Add a parametric head with identity and expression shape keys and a jaw/neck/eye rig"""
    bl_idname = "headcraft.add_head"
    bl_label = "Add Head"
    bl_options = runtime.JOB_OPTIONS

    model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default=default("head.build", "model"),
                                  description="The parametric head model to build the head from")
    num_shape: bpy.props.IntProperty(name="Identity Keys", **NUM_SHAPE,
                                     description="Number of identity shape keys (Shape000...)")
    num_expr: bpy.props.IntProperty(name="Expression Keys", **NUM_EXPR,
                                    description="Number of expression shape keys (ARKit names for "
                                                "OpenHead, Exp000... for FLAME)")
    randomize_identity: bpy.props.BoolProperty(name="Random Identity", default=False,
                                               description="Start from a random identity instead of the average head")
    randomize_expression: bpy.props.BoolProperty(name="Random Expression", default=False,
                                                 description="Start with a random expression instead of a neutral face")
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1,
                                description="Seed for the random identity and expression; -1 picks a new one")

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context)

    def execute(self, context):
        params = dict(model_params(self.model), num_shape=self.num_shape, num_expr=self.num_expr)
        options = (self.randomize_identity, self.randomize_expression,
                   None if self.seed < 0 else self.seed)
        name = "OpenHead" if self.model == "OPENHEAD" else "FLAME Head"
        # where the user asked for it: the head is built later, after the cursor may have moved
        location = tuple(context.scene.cursor.location)
        collection = objects.active_collection_name(context)

        def apply(result, arrays):
            head = objects.create_head(bpy.context, result, arrays, name=name, location=location,
                                     collection=objects.collection_named(bpy.context, collection))
            if options[0] or options[1]:
                objects.randomize(head, options[0], options[1], options[2])
                objects.sync_rig(bpy.context, head)
            runtime.notify(f"Added {head.name}: {len(head.data.vertices)} vertices, "
                           f"{len(head.data.shape_keys.key_blocks) - 1} shape keys")

        return runtime.submit_from_operator(
            self, runtime.UIJob(f"Add {name}", "head.build", params, None, apply))


class _HeadOperator:
    bl_options = runtime.UNDO_OPTIONS     # typed there: a mixin's own set literal would be set[str]

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context, idle=False)


class HEADCRAFT_OT_randomize_identity(_HeadOperator, bpy.types.Operator):
    """Set the identity shape keys to a random sample of the model's prior and move the rig"""
    bl_idname = "headcraft.randomize_identity"
    bl_label = "Randomize Identity"
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1,
                                description="Seed for the random identity; -1 picks a new one")

    def execute(self, context):
        head = polls.active_head(context)
        objects.randomize(head, True, False, None if self.seed < 0 else self.seed)
        objects.sync_rig(context, head)
        return {"FINISHED"}


class HEADCRAFT_OT_randomize_expression(_HeadOperator, bpy.types.Operator):
    """Set the expression shape keys to a random expression"""
    bl_idname = "headcraft.randomize_expression"
    bl_label = "Randomize Expression"
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1,
                                description="Seed for the random expression; -1 picks a new one")

    def execute(self, context):
        objects.randomize(polls.active_head(context), False, True, None if self.seed < 0 else self.seed)
        return {"FINISHED"}


class HEADCRAFT_OT_reset_head(_HeadOperator, bpy.types.Operator):
    """Zero the identity and expression keys and clear the rig's pose"""
    bl_idname = "headcraft.reset_head"
    bl_label = "Reset Head"

    def execute(self, context):
        head = polls.active_head(context)
        objects.reset(head)
        objects.sync_rig(context, head)
        return {"FINISHED"}


class HEADCRAFT_OT_sync_rig(_HeadOperator, bpy.types.Operator):
    """Move the rig's joints to the current identity (after editing identity keys by hand)"""
    bl_idname = "headcraft.sync_rig"
    bl_label = "Fit Rig to Identity"

    def execute(self, context):
        objects.sync_rig(context, polls.active_head(context))
        return {"FINISHED"}


CLASSES = (HEADCRAFT_OT_add_head, HEADCRAFT_OT_randomize_identity,
           HEADCRAFT_OT_randomize_expression, HEADCRAFT_OT_reset_head, HEADCRAFT_OT_sync_rig)
