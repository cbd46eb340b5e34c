"""Operators for UV layouts, baking displacement maps and applying maps to heads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import bpy

from bpy_extras.io_utils import ImportHelper

from .. import polls, runtime
from ..client.limits import MAX_LAYOUT_FILE_BYTES
from ..models import model_params
from . import objects
from .properties import FORMATS


def _settings(context):
    return context.scene.headcraft.layout


def _layout_name(context) -> str:
    return _settings(context).uv_layout.strip() or "headcraft"


def _target(context):
    """The active HeadCraft head (low-res) or detailed head."""
    obj = context.active_object
    return objects.find_detailed(obj) or objects.head_of(obj)


class HEADCRAFT_OT_show_layout(bpy.types.Operator):
    """Add the chosen UV layout to the active HeadCraft head or detailed head as a UV map"""
    bl_idname = "headcraft.show_layout"
    bl_label = "Show Layout"
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (_target(context) is not None, "Select a HeadCraft head or detailed head"))

    use_for_render: bpy.props.BoolProperty(
        name="Use for Render", default=False,
        description="Also make the layout the UV map used for rendering (HeadCraft's materials name "
                    "their UV map, so they render without it)")

    def execute(self, context):
        obj = _target(context)
        name, layout, render = obj.name, _layout_name(context), self.use_for_render

        def apply(result, arrays):
            target = bpy.data.objects.get(name)
            if target is None:
                raise ValueError(f"{name} was deleted while the layout was computed")
            uv = arrays["uv"] if len(target.data.polygons) == len(arrays["uv"]) else arrays["dense_uv"]
            objects.set_uv_map(target, result["layout"], uv, render=render)
            rep = result["report"]
            _settings(bpy.context).known_layouts = ",".join(result["layouts"])
            runtime.notify(f"Layout {result['layout']} on {name}: {rep.get('flipped', 0)} flipped triangles, "
                           f"{rep.get('coverage', 0):.0%} of the square used")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Layout {layout}", "layout.get", dict(model_params(objects.model_of(obj)), layout=layout), None,
            apply))


class HEADCRAFT_OT_save_layout(bpy.types.Operator):
    """Save the active head's active UV map (e.g. re-unwrapped) as a named layout of its head model"""
    bl_idname = "headcraft.save_layout"
    bl_label = "Save Layout As"
    bl_options = runtime.JOB_OPTIONS

    name: bpy.props.StringProperty(name="Name", default="my layout", description="Name of the saved layout")

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context)

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        head = objects.head_of(context.active_object)
        try:
            uv = objects.read_uv_map(head)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

        def apply(result, arrays):
            s = _settings(bpy.context)
            s.known_layouts = ",".join(result["layouts"])
            s.uv_layout = result["layout"]
            rep = result["report"]
            level = "WARNING" if rep.get("flipped") or rep.get("outside_unit_square") else "INFO"
            runtime.notify(f"Saved layout {result['layout']}: {rep.get('flipped', 0)} flipped triangles, "
                           f"{rep.get('outside_unit_square', 0)} outside the unit square", level)

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Save layout {self.name}", "layout.save", dict(model_params(objects.model_of(head)), name=self.name),
            {"uv": uv}, apply))


# the stubs type ImportHelper.check and .invoke as returning None (they return a bool, a set)
class HEADCRAFT_OT_import_layout(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import a UV layout of the head's model: an OBJ of its triangles with UVs, or a .npy (triangles x 3 x 2)"""
    bl_idname = "headcraft.import_layout"
    bl_label = "Import Layout"
    bl_options = runtime.JOB_OPTIONS

    filter_glob: bpy.props.StringProperty(default="*.obj;*.npy", options={"HIDDEN"},
                                         description="The files the browser shows")
    name: bpy.props.StringProperty(name="Name", default="",
                                   description="Name of the imported layout (empty: the file's name; 'published' "
                                               "is the one a published HeadCraft checkpoint uses)")

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context)

    def execute(self, context):
        head = objects.head_of(context.active_object)
        path = Path(bpy.path.abspath(self.filepath))
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("obj", "npy"):
            self.report({"ERROR"}, f"{path.name}: choose an .obj or .npy layout file")
            return {"CANCELLED"}
        try:
            if path.stat().st_size > MAX_LAYOUT_FILE_BYTES:
                self.report({"ERROR"}, f"{path.name}: {path.stat().st_size / 1e6:.0f} MB; a layout file is at most "
                                       f"{MAX_LAYOUT_FILE_BYTES / 1e6:.0f} MB")
                return {"CANCELLED"}
            content = np.fromfile(path, np.uint8)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot read {path.name}: {exc.strerror or exc}")
            return {"CANCELLED"}
        name = self.name.strip() or path.stem

        def apply(result, arrays):
            s = _settings(bpy.context)
            s.known_layouts = ",".join(result["layouts"])
            s.uv_layout = result["layout"]
            rep = result["report"]
            bad = rep.get("flipped") or rep.get("overlap_texels_512") or rep.get("outside_unit_square")
            runtime.notify(f"Imported layout {result['layout']}: {rep.get('flipped', 0)} flipped triangles, "
                           f"{rep.get('overlap_texels_512', 0)} overlapping texels, "
                           f"{rep.get('outside_unit_square', 0)} triangles outside the unit square",
                           "WARNING" if bad else "INFO")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Import layout {name}", "layout.import",
            dict(model_params(objects.model_of(head)), name=name, format=fmt, source=path.name),
            {"file": content}, apply))


class HEADCRAFT_OT_bake_map(bpy.types.Operator):
    """Bake the active detailed head's displacements into a map image (and files) in the chosen layout"""
    bl_idname = "headcraft.bake_map"
    bl_label = "Bake Map"
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.detailed_selected(cls, context)

    def execute(self, context):
        obj = objects.find_detailed(context.active_object)
        s = _settings(context)
        space = s.space.lower()
        fmts = [f for f in FORMATS if getattr(s, f)]
        folder = None
        if fmts or s.storage == "FILE":
            try:   # before the compute: a folder that cannot be written fails now, not after it
                folder = str(runtime.output_folder(s.folder, "maps"))
            except (OSError, ValueError) as exc:
                self.report({"ERROR"}, f"Choose a folder you can write to for the map files (or turn the "
                                       f"file formats off): {exc}")
                return {"CANCELLED"}
        layout, name = _layout_name(context), obj.name
        stem = bpy.path.clean_name(f"{name}_{layout}_{space}")
        params = dict(model_params(objects.model_of(obj)), layout=layout, size=int(s.size), space=space,
                      formats=fmts, name=stem)

        def apply(result, arrays):
            written, failed = [], ""
            try:
                written = objects.write_files(folder, arrays, result["files"]) if fmts else []
            except OSError as exc:    # the image is still made: the compute is not thrown away
                failed = f"; the files could not be written ({exc}): use Image > Save As"
            img = objects.map_image(f"{name} {result['layout']} {space}", arrays["map"])
            img["headcraft_space"] = space
            img["headcraft_layout"] = result["layout"]
            if "visibility_map" in arrays:
                vis = np.repeat(arrays["visibility_map"][..., None], 3, -1)
                objects.map_image(f"{name} {result['layout']} visibility", vis)
            s2 = _settings(bpy.context)
            s2.map_image = img
            note = f", {result['clipped_fraction']:.1%} of texels beyond +-20 units" if result["clipped_fraction"] else ""
            where = f"; wrote {len(written)} files to {written[0].parent}" if written else ""
            runtime.notify(f"Baked {img.name} ({result['size']}^2){note}{where}{failed}",
                           "WARNING" if failed else "INFO")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Bake {name}", "map.bake", params, objects.detailed_arrays(obj), apply))


def _map_arrays(context) -> tuple[dict, str, str]:
    """The map to apply: the chosen file (sent as bytes; the backend decodes every format) or
    the chosen image. Returns (arrays, description, space hint)."""
    s = _settings(context)
    if s.map_file:
        path = Path(bpy.path.abspath(s.map_file))
        files = [path]
        if "_-20_to_20_ch" in path.name:
            stem = path.name.split("_-20_to_20_ch")[0]
            files = [path.parent / f"{stem}_-20_to_20_ch{c}.png" for c in range(3)]
        arrays = {}
        for p in files:
            try:
                arrays[f"file__{p.name}"] = np.frombuffer(p.read_bytes(), np.uint8)
            except OSError as exc:
                raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
        return arrays, path.name, s.space.lower()
    if s.map_image is None:
        raise ValueError("Choose a map file or a map image")
    img = s.map_image
    return {"map": objects.image_map(img)}, img.name, str(img.get("headcraft_space", s.space.lower()))


class HEADCRAFT_OT_bake_colour(bpy.types.Operator):
    """Bake the colors of the scan a detailed head was fitted to onto its layout, as an image and a material"""
    bl_idname = "headcraft.bake_colour"
    bl_label = "Bake Scan Color"
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        obj = polls.active_detailed(context)
        return polls.detailed_selected(cls, context, (obj is None or obj.get("headcraft_scan"),
                                                      "This detailed head has no scan to take colors from (use "
                                                      "one made by Fit Scan)"))

    def execute(self, context):
        obj = objects.find_detailed(context.active_object)
        scan = bpy.data.objects.get(obj["headcraft_scan"])
        if scan is None or scan.type != "MESH":
            self.report({"ERROR"}, f"The scan {obj['headcraft_scan']!r} of {obj.name} is not in this file any more")
            return {"CANCELLED"}
        try:
            arrays = objects.scan_colour_arrays(scan)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        arrays["final"] = objects.world_vertices(obj)
        s = _settings(context)
        layout, name, folder = _layout_name(context), obj.name, s.folder
        params = dict(model_params(objects.model_of(obj)), layout=layout, size=int(s.size),
                      name=bpy.path.clean_name(f"{name}_{layout}_color"))

        scan_name = scan.name

        def apply(result, out):
            written, failed = [], ""
            try:
                written = objects.write_files(folder, out, result["files"]) if folder else []
            except (OSError, ValueError) as exc:   # the image and material are still made
                failed = f"; the file could not be written ({exc})"
            target = bpy.data.objects.get(name)
            if target is None:
                raise ValueError(f"{name} was deleted while its color was baked")
            objects.set_uv_map(target, result["layout"], out["dense_uv"])
            img = objects.colour_image(f"{name} {result['layout']} color", out["map"])
            mat = objects.colour_material(target, img, result["layout"])
            where = (f"; wrote {written[0]}" if written else "") + failed
            slot = "" if objects.renders_with(target, mat) else (
                f"; {mat.name} is in a slot of its own: assign it to faces in Edit Mode to render with it")
            runtime.notify(f"Baked the color of {scan_name} onto {name}: {img.name}{where}{slot}",
                           "WARNING" if slot or failed else "INFO")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Color {name}", "map.bake_colour", params, arrays, apply))


class HEADCRAFT_OT_apply_map(bpy.types.Operator):
    """Make a detailed head from the active head's current identity and expression and a map"""
    bl_idname = "headcraft.apply_map"
    bl_label = "Apply Map"
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context)

    def execute(self, context):
        head = objects.head_of(context.active_object)
        try:
            arrays, what, space = _map_arrays(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        arrays["coarse_vertices"] = objects.shaped_vertices(head)
        layout, name = _layout_name(context), head.name
        world = head.matrix_world.copy()

        model, version = objects.model_of(head).lower(), str(head.get("headcraft_version", ""))

        def apply(result, out):
            obj = objects.detailed_from_reply(bpy.context, result, out, f"{name} Detailed", world, model, name, version)
            obj["headcraft_map"] = what
            runtime.notify(f"Applied {what} ({result['space']} space) to {name}: {obj.name}")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Apply {what}", "map.apply", dict(model_params(objects.model_of(head)), layout=layout, space=space),
            arrays, apply))


class HEADCRAFT_OT_add_displacement_material(bpy.types.Operator):
    """Give the active head a Cycles material that truly displaces it by the chosen map image"""
    bl_idname = "headcraft.add_displacement_material"
    bl_label = "Add Displacement Material"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context, idle=False)

    def execute(self, context):
        head = objects.head_of(context.active_object)
        s = _settings(context)
        img = s.map_image
        if img is None:
            self.report({"ERROR"}, "Choose a map image (bake one, or open an EXR)")
            return {"CANCELLED"}
        layout = str(img.get("headcraft_layout", _layout_name(context)))
        if head.data.uv_layers.get(objects.UV_PREFIX + layout) is None:
            self.report({"ERROR"}, f"{head.name} has no '{objects.UV_PREFIX}{layout}' UV map: use Show Layout first")
            return {"CANCELLED"}
        space = str(img.get("headcraft_space", s.space.lower()))
        mat = objects.displacement_material(head, img, space, layout)
        msg = f"{mat.name}: {img.name} as {space}-space displacement"
        if space == "tangent":
            msg += f"; '{objects.UV_PREFIX}{layout}' is now the render UV map (Cycles takes tangents from it)"
        if objects.renders_with(head, mat):
            self.report({"INFO"}, msg)
        else:
            self.report({"WARNING"}, f"{msg}; it is in a slot of its own beside {head.name}'s materials: "
                                     f"assign it to faces in Edit Mode to render with it")
        return {"FINISHED"}


class HEADCRAFT_OT_convert_map(bpy.types.Operator):
    """Resample the chosen object-space map image from its layout into the Layout above"""
    bl_idname = "headcraft.convert_map"
    bl_label = "Convert Map"
    bl_options = runtime.JOB_OPTIONS

    source: bpy.props.StringProperty(name="From Layout", default="",
                                     description="The map's layout (empty: the one recorded when baked)")

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (_settings(context).map_image is not None,
                                          "Choose a map image (bake one, or open an EXR)"))

    def execute(self, context):
        s = _settings(context)
        img = s.map_image
        source = self.source or str(img.get("headcraft_layout", "standard"))
        target = _layout_name(context)
        space = str(img.get("headcraft_space", "object"))
        obj = context.active_object
        model = objects.model_of(obj) if obj is not None and obj.get("headcraft_model") else "OPENHEAD"
        try:
            m = objects.image_map(img)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        name = img.name

        def apply(result, arrays):
            out = objects.map_image(f"{name} -> {result['target']}", arrays["map"])
            out["headcraft_space"], out["headcraft_layout"] = "object", result["target"]
            _settings(bpy.context).map_image = out
            runtime.notify(f"Converted {name} from {result['source']} to {result['target']}: {out.name}")

        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Convert {name}", "map.convert",
            dict(model_params(model), source=source, target=target, space=space), {"map": m},
            apply))


CLASSES = (HEADCRAFT_OT_show_layout, HEADCRAFT_OT_convert_map, HEADCRAFT_OT_save_layout, HEADCRAFT_OT_import_layout,
           HEADCRAFT_OT_bake_map, HEADCRAFT_OT_bake_colour, HEADCRAFT_OT_apply_map,
           HEADCRAFT_OT_add_displacement_material)
