"""A stand-in for bpy.types.UILayout that records calls and checks what they name.

Headless Blender never draws panels, so this is the one acceptable stand-in: it runs every
panel's draw() and fails when a property or operator it names does not exist.
"""
import bpy


class OperatorProps:
    def __init__(self, idname):
        self.idname = idname
        mod, name = idname.split(".")
        op = getattr(getattr(bpy.ops, mod), name)
        self._rna = op.get_rna_type()

    def __setattr__(self, key, value):
        if key not in ("idname", "_rna") and key not in self._rna.properties:
            raise AttributeError(f"operator {self.idname} has no property {key!r}")
        object.__setattr__(self, key, value)


class RecordingLayout:
    def __init__(self, calls=None):
        self.calls = [] if calls is None else calls
        self.enabled = self.active = True
        self.alert = False
        self.scale_y = 1.0

    def _child(self, kind):
        self.calls.append((kind,))
        return RecordingLayout(self.calls)

    def row(self, **kw):
        return self._child("row")

    def column(self, **kw):
        return self._child("column")

    def box(self):
        return self._child("box")

    def split(self, **kw):
        return self._child("split")

    def label(self, text="", icon="NONE", **kw):
        if icon != "NONE":
            assert icon in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items, icon
        self.calls.append(("label", text))

    def prop(self, data, prop, **kw):
        assert prop in data.bl_rna.properties, f"{type(data).__name__} has no property {prop!r}"
        self.calls.append(("prop", prop))

    def operator(self, idname, text=None, icon="NONE", **kw):
        if icon != "NONE":
            assert icon in bpy.types.UILayout.bl_rna.functions["operator"].parameters["icon"].enum_items, icon
        self.calls.append(("operator", idname))
        return OperatorProps(idname)

    def menu(self, menu, text="", icon="NONE", **kw):
        if icon != "NONE":
            assert icon in bpy.types.UILayout.bl_rna.functions["menu"].parameters["icon"].enum_items, icon
        assert hasattr(bpy.types, menu), f"no menu {menu!r}"
        self.calls.append(("menu", menu))

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.calls.append(("progress", factor, text))

    def separator(self, **kw):
        self.calls.append(("separator",))


class DrawProxy:
    """`self` for a draw() call: the real object's attributes plus the recording layout."""

    def __init__(self, real, layout):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "layout", layout)

    def __getattr__(self, name):
        return getattr(self._real, name)


def draw(cls_or_obj, context, real=None):
    layout = RecordingLayout()
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    cls.draw(DrawProxy(real if real is not None else cls_or_obj, layout), context)
    return layout.calls
