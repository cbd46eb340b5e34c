"""Wording in Blender's style: tooltips everywhere, one-line operator tooltips, US English, Title
Case labels, and polls that say why an operator is unavailable."""
import ast
import re
from pathlib import Path

import pytest

import bpy

PACKAGE = Path(__file__).resolve().parents[2] / "headcraft_blender"
BRITISH = re.compile(r"\b(colours?|millimetres?|centimetres?|metres?|randomis\w*|normalis\w*|centres?|"
                     r"behaviours?|licence|optimis\w*|rasteris\w*|favours?|greys?)\b", re.IGNORECASE)
# Blender's Title Case leaves these lowercase unless first ("x" as in "1024 x 1024").
SMALL_WORDS = {"a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "nor", "but", "per", "by",
               "as", "at", "from", "with", "into", "vs", "x"}
# Operators whose poll is True in an empty scene, so they cannot show a poll message there.
POLL_TRUE_WHEN_EMPTY = {
    "headcraft.add_head": "adding a head needs nothing selected",
    "headcraft.setup_backend": "only unavailable while a set-up runs",
    "headcraft.open_backend_log": "depends on whether the backend has written a log, not on the scene",
}


def _title_case_errors(text: str) -> list[str]:
    bad = []
    for i, word in enumerate(text.split()):
        for part in word.split("-"):
            core = part.strip("()[]:,'\"/")
            if core.startswith("."):      # a file extension: .blend, .csv
                continue
            core = core.strip(".")
            if not core or not core[0].isalpha():
                continue
            if i > 0 and core in SMALL_WORDS:
                continue
            if not core[0].isupper():
                bad.append(core)
    return bad


def _classes(ext):
    return list(ext.addon.CLASSES)


def _operator(cls):
    mod, name = cls.bl_idname.split(".")
    return getattr(getattr(bpy.ops, mod), name)


def _own_properties(cls, ext):
    """(owner name, RNA property) for the properties the extension defines on `cls`."""
    if issubclass(cls, bpy.types.Operator):
        rna, base = _operator(cls).get_rna_type(), {"rna_type"}
    elif issubclass(cls, bpy.types.AddonPreferences):
        rna = bpy.context.preferences.addons[ext.__name__].preferences.bl_rna
        base = set(bpy.types.AddonPreferences.bl_rna.properties.keys())
    elif issubclass(cls, bpy.types.PropertyGroup):
        rna, base = cls.bl_rna, set(bpy.types.PropertyGroup.bl_rna.properties.keys())
    else:
        return []
    return [(cls.__name__, p) for p in rna.properties if p.identifier not in base]


def _ui_texts(ext):
    """(where, text, is_label) for every user-visible string that RNA holds."""
    out = []
    for cls in _classes(ext):
        if issubclass(cls, bpy.types.Operator):
            rna = _operator(cls).get_rna_type()
            out += [(cls.bl_idname, rna.name, True), (cls.bl_idname, rna.description, False)]
        elif issubclass(cls, (bpy.types.Panel, bpy.types.Menu)):
            out.append((cls.__name__, cls.bl_label, True))
        for owner, prop in _own_properties(cls, ext):
            where = f"{owner}.{prop.identifier}"
            out += [(where, prop.name, not prop.is_hidden), (where, prop.description, False)]
            if prop.type == "ENUM":
                for item in prop.enum_items:
                    out += [(f"{where}[{item.identifier}]", item.name, True),
                            (f"{where}[{item.identifier}]", item.description, False)]
    return out


def _source_strings():
    """(file:line, string, is_button) for string constants passed to calls in the extension's
    source (reports, notifications, labels, errors, job titles), f-strings' literal parts included."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = getattr(node.func, "attr", getattr(node.func, "id", ""))
            values = [*node.args, *(k.value for k in node.keywords)]
            for value in values:
                for sub in ast.walk(value):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.append((f"{path.relative_to(PACKAGE)}:{sub.lineno}", sub.value, False))
            if func == "operator":
                for k in node.keywords:
                    if k.arg == "text" and isinstance(k.value, ast.Constant):
                        out.append((f"{path.relative_to(PACKAGE)}:{k.value.lineno}", k.value.value, True))
    return out


def test_every_property_has_a_one_line_tooltip(blender, ext):
    missing = []
    for cls in _classes(ext):
        for owner, prop in _own_properties(cls, ext):
            if not prop.description.strip() or "\n" in prop.description:
                missing.append(f"{owner}.{prop.identifier}")
            if prop.type == "ENUM":
                missing += [f"{owner}.{prop.identifier}[{i.identifier}]" for i in prop.enum_items
                            if not i.description.strip() or "\n" in i.description]
    assert not missing, missing


def test_every_operator_has_a_one_line_tooltip(blender, ext):
    ops = [c for c in _classes(ext) if issubclass(c, bpy.types.Operator)]
    assert len(ops) > 20
    bad = [c.bl_idname for c in ops
           if not _operator(c).get_rna_type().description.strip() or "\n" in _operator(c).get_rna_type().description]
    assert not bad, bad


def test_no_british_spellings(blender, ext):
    texts = [(w, t) for w, t, _ in _ui_texts(ext)] + [(w, t) for w, t, _ in _source_strings()]
    bad = [(w, t) for w, t in texts if BRITISH.search(t)]
    assert not bad, bad


def test_labels_are_in_title_case(blender, ext):
    assert _title_case_errors("Fit Rig to Identity") == []
    assert _title_case_errors("Scan units") == ["units"]
    labels = [(w, t) for w, t, is_label in _ui_texts(ext) + _source_strings() if is_label]
    bad = [(w, t) for w, t in labels if _title_case_errors(t)]
    assert not bad, bad


def _poll_operators(ext):
    """bl_idname of every HeadCraft operator that defines a poll (itself or through a mixin)."""
    return sorted(c.bl_idname for c in _classes(ext) if issubclass(c, bpy.types.Operator)
                  and any("poll" in vars(k) for k in c.__mro__ if k.__module__.startswith(ext.__name__)))


def test_polls_say_why_in_an_empty_scene(blender, ext):
    """Blender puts the poll message into the RuntimeError; without one it says 'context is
    incorrect'."""
    bpy.context.scene.headcraft.layout.map_image = None
    assert not ext.runtime.STATE.busy()
    ids = _poll_operators(ext)
    assert len(ids) > 15
    for idname in ids:
        if idname in POLL_TRUE_WHEN_EMPTY:
            continue
        mod, name = idname.split(".")
        op = getattr(getattr(bpy.ops, mod), name)
        assert not op.poll(), f"{idname} polls True in an empty scene: list it in POLL_TRUE_WHEN_EMPTY"
        with pytest.raises(RuntimeError) as err:
            op()
        message = str(err.value)
        assert "context is incorrect" not in message and "poll()" in message, (idname, message)
    assert bpy.ops.headcraft.add_head.poll() and bpy.ops.headcraft.setup_backend.poll()


def test_polls_name_the_running_job_and_the_mode(blender, ext):
    job = ext.runtime.UIJob("Test job", "diagnostics.echo", {}, None, lambda r, a: None)
    ext.runtime.STATE.jobs.append(job)
    try:
        with pytest.raises(RuntimeError, match="Wait for the running HeadCraft job"):
            bpy.ops.headcraft.add_head()
    finally:
        ext.runtime.STATE.jobs.remove(job)
    with pytest.raises(RuntimeError, match="No HeadCraft job is running"):
        bpy.ops.headcraft.cancel_job()
    mesh = bpy.data.meshes.new("Plane")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Plane", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        with pytest.raises(RuntimeError, match="Switch to Object Mode"):
            bpy.ops.headcraft.add_head()
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
