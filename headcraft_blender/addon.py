"""Registration: classes, scene settings, shutdown of the backend on unregister and exit."""
from __future__ import annotations

import atexit

import bpy

from . import preferences, properties, runtime, ui
from .head import operators as head_operators, panel as head_panel

CLASSES = (*preferences.CLASSES, *properties.CLASSES, *ui.CLASSES,
           *head_operators.CLASSES, *head_panel.CLASSES)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register()
    atexit.register(runtime.shutdown)


def unregister():
    atexit.unregister(runtime.shutdown)
    runtime.shutdown()
    if bpy.app.timers.is_registered(runtime.pump):
        bpy.app.timers.unregister(runtime.pump)
    properties.unregister()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
