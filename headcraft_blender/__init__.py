"""HeadCraft for Blender: detailed parametric heads, fitted, generated and animated.

bpy-dependent modules are imported in register() so `headcraft_blender.client` stays usable
(and testable) outside Blender.
"""


def register():
    from . import addon
    addon.register()


def unregister():
    from . import addon
    addon.unregister()
