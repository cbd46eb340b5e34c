"""The checks operator polls share; a failed check tells the user why (Blender's poll message)."""
from __future__ import annotations

from . import runtime

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
