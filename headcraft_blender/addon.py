"""Registration: classes, scene settings, menu entries and keys, shutdown of the backend on
unregister and exit."""
from __future__ import annotations

import atexit

import bpy

from . import menus, preferences, properties, runtime, ui
from .animate import operators as animate_operators, panel as animate_panel
from .fit import operators as fit_operators, panel as fit_panel
from .head import operators as head_operators, panel as head_panel
from .generate import operators as generate_operators, panel as generate_panel
from .layout import operators as layout_operators, panel as layout_panel

CLASSES = (*preferences.CLASSES, *properties.CLASSES, *ui.CLASSES,
           *head_operators.CLASSES, *head_panel.CLASSES, *fit_operators.CLASSES, *fit_panel.CLASSES,
           *layout_operators.CLASSES, *layout_panel.CLASSES, *generate_operators.CLASSES,
           *generate_panel.CLASSES, *animate_operators.CLASSES, *animate_panel.CLASSES)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register()
    menus.register()
    atexit.register(runtime.shutdown)
    if not bpy.app.background:
        bpy.app.timers.register(runtime.health_check, first_interval=runtime.HEALTH_INTERVAL_S,
                                persistent=True)


def unregister():
    menus.unregister()
    atexit.unregister(runtime.shutdown)
    runtime.shutdown()
    for timer in (runtime.pump, runtime.health_check):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    properties.unregister()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
