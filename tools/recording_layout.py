"""A stand-in for bpy.types.UILayout that records calls and checks what they name.

Headless Blender never draws panels, so this is the one acceptable stand-in: it runs every
panel's draw() and fails when a property or operator it names does not exist. It also writes
what a panel would show as indented text (`draw_text`, `build.py ui`).
"""
from typing import Any

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


def _icon(icon: str) -> str:
    return f" <{icon}>" if icon not in ("NONE", "BLANK1") else ""


class RecordingLayout:
    def __init__(self, calls=None, lines=None, depth=0):
        self.calls = [] if calls is None else calls
        self.lines = [] if lines is None else lines
        self.depth = depth
        self.enabled = self.active = True
        self.alert = False
        self.scale_y = 1.0

    def _line(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def _child(self, kind):
        self.calls.append((kind,))
        if kind == "box":
            self._line("+--")
        return RecordingLayout(self.calls, self.lines, self.depth + (kind == "box"))

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
        self._line(f"{text}{_icon(icon)}")

    def prop(self, data, prop, **kw):
        assert prop in data.bl_rna.properties, f"{type(data).__name__} has no property {prop!r}"
        self.calls.append(("prop", prop))
        rna = data.bl_rna.properties[prop]
        value = getattr(data, prop)
        if rna.type == "POINTER":
            value = getattr(value, "name", None) or "(none)"
        elif rna.type == "ENUM" and not rna.is_enum_flag:
            value = next((i.name for i in rna.enum_items if i.identifier == value), value)
        elif rna.type == "FLOAT" and getattr(rna, "array_length", 0) == 0:
            value = f"{value:.4g}"
        elif hasattr(value, "__len__") and not isinstance(value, str):
            value = tuple(value)
        self._line(f"{kw.get('text', rna.name)}: {value!s}" if rna.type != "BOOLEAN"
                   else f"[{'x' if value else ' '}] {kw.get('text', rna.name)}")

    def operator(self, idname, text=None, icon="NONE", **kw):
        if icon != "NONE":
            assert icon in bpy.types.UILayout.bl_rna.functions["operator"].parameters["icon"].enum_items, icon
        self.calls.append(("operator", idname))
        mod, name = idname.split(".")
        op = getattr(getattr(bpy.ops, mod), name)
        label = op.get_rna_type().name if text is None else text
        self._line(f"[ {label or '(icon)'} ]{_icon(icon)}{'' if op.poll() else ' (greyed out)'}")
        return OperatorProps(idname)

    def menu(self, menu, text="", icon="NONE", **kw):
        if icon != "NONE":
            assert icon in bpy.types.UILayout.bl_rna.functions["menu"].parameters["icon"].enum_items, icon
        assert hasattr(bpy.types, menu), f"no menu {menu!r}"
        self.calls.append(("menu", menu))
        self._line(f"[ {text or getattr(bpy.types, menu).bl_label} > ]{_icon(icon)}")

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.calls.append(("progress", factor, text))
        filled = round(factor * 10)
        self._line(f"[{'#' * filled}{'-' * (10 - filled)}] {text}")

    def separator(self, **kw):
        self.calls.append(("separator",))


class DrawProxy:
    """`self` for a draw() call: the real object's attributes plus the recording layout."""

    def __init__(self, real, layout):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "layout", layout)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _record(cls_or_obj, context, real=None) -> RecordingLayout:
    layout = RecordingLayout()
    cls: type[Any] = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)   # a Panel or Menu class
    cls.draw(DrawProxy(real if real is not None else cls_or_obj, layout), context)
    return layout


def draw(cls_or_obj, context, real=None):
    return _record(cls_or_obj, context, real).calls


def draw_text(cls_or_obj, context, real=None) -> list[str]:
    """What the panel (or menu) shows, one line per item, boxes indented."""
    return _record(cls_or_obj, context, real).lines
