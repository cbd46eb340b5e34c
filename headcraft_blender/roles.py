"""What a HeadCraft object is, stored in its custom property `headcraft_role`. The values are
saved in .blend files: never change one."""
from __future__ import annotations

import enum

import bpy

ROLE_PROPERTY = "headcraft_role"


class Role(enum.StrEnum):
    HEAD = "head"               # the low-res parametric head mesh, with keys and rig
    RIG = "rig"                 # the head's armature
    DETAILED = "detailed"       # a dense displaced head (Fit Scan, Apply Map, the generator)
    LANDMARKS = "landmarks"     # the editable landmark points of a scan
    ANIMATED = "animated"       # a detailed head driven in real time by its low-res head
    BAKED = "baked"             # a detailed head played from its baked mesh cache


def set_role(obj: bpy.types.Object, role: Role) -> None:
    obj[ROLE_PROPERTY] = role.value


def role_of(obj: bpy.types.Object | None) -> Role | None:
    """The object's role; None for an object HeadCraft did not make (or an unknown role)."""
    # (the stubs type bpy_struct.get as returning None)
    try:
        return Role(obj.get(ROLE_PROPERTY)) if obj is not None else None  # type: ignore[func-returns-value, arg-type]
    except ValueError:
        return None


def has_role(obj: bpy.types.Object) -> bool:
    """Whether HeadCraft made the object (whatever its role)."""
    return ROLE_PROPERTY in obj     # type: ignore[operator]  # the stubs give bpy_struct no __contains__
