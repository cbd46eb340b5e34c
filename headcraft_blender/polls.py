"""The checks operator polls share; a failed check tells the user why (Blender's poll message)."""
from __future__ import annotations

from . import runtime
from .head import objects as head_objects
from .layout import objects as layout_objects

SELECT_HEAD = "Select a HeadCraft head"
SELECT_DETAILED = "Select a detailed head (from Fit Scan or Apply Map)"
BUSY = "Wait for the running HeadCraft job to finish, or cancel it"


def check(cls, context, *conditions: tuple[object, str], idle: bool = True) -> bool:
    """Object Mode, every (ok, reason) condition, and with `idle` no running HeadCraft job.
    Sets the first failing reason as the operator's poll message and returns False then."""
    if context.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode")
        return False
    for ok, reason in conditions:
        if not ok:
            cls.poll_message_set(reason)
            return False
    if idle and runtime.STATE.busy():
        cls.poll_message_set(BUSY)
        return False
    return True


def active_head(context):
    """The low-res HeadCraft head of the active object (the mesh or its rig), or None."""
    return head_objects.find_head(context.active_object)


def active_detailed(context):
    """The active object when it is a detailed head, else None."""
    return layout_objects.find_detailed(context.active_object)


def head_selected(cls, context, *conditions: tuple[object, str], reason: str = SELECT_HEAD,
                  idle: bool = True) -> bool:
    """check() with a low-res head active (else `reason`) before the other conditions."""
    return check(cls, context, (active_head(context) is not None, reason), *conditions, idle=idle)


def detailed_selected(cls, context, *conditions: tuple[object, str], idle: bool = True) -> bool:
    """check() with a detailed head active before the other conditions."""
    return check(cls, context, (active_detailed(context) is not None, SELECT_DETAILED), *conditions,
                 idle=idle)
