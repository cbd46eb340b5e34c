"""Turntables, animation renders and contact sheets, one frame at a time on the main thread so a
modal operator can show progress and stop between frames. Every scene setting a render touches
is put back afterwards; the camera and lights live in a 'HeadCraft Render' collection of their
own (made once, reused, free to tweak)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import numpy as np

import bpy
from mathutils import Matrix, Vector

from .. import runtime
from ..head.objects import ensure_collection

RENDER_COLLECTION = "HeadCraft Render"
PIVOT, CAMERA = "HeadCraft Turntable", "HeadCraft Camera"
LIGHTS = (("Key", (-0.6, -1.0, 0.5), 12.0), ("Fill", (0.9, -0.7, 0.1), 4.0), ("Rim", (0.2, 1.0, 0.8), 8.0))
LENS_MM = 85.0


def _object(coll, name, data) -> bpy.types.Object:
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, data)
        coll.objects.link(obj)
    return obj


def world_bounds(objects) -> tuple[Vector, float]:
    """Centre and radius of the evaluated bounding boxes (world space)."""
    pts = np.array([tuple(o.matrix_world @ Vector(c)) for o in objects for c in o.bound_box])
    lo, hi = pts.min(0), pts.max(0)
    return Vector((lo + hi) / 2), float(np.linalg.norm(hi - lo)) / 2


def camera_rig(scene, target: bpy.types.Object, objects) -> tuple[bpy.types.Object, bpy.types.Object]:
    """The pivot (at the objects' centre, turning about the head's up axis) with the camera in
    front of the face framing them all, and three area lights when the scene has none of its own."""
    coll = ensure_collection(scene, RENDER_COLLECTION)
    pivot = _object(coll, PIVOT, None)
    pivot.empty_display_type, pivot.empty_display_size = "CIRCLE", 0.05
    cam = _object(coll, CAMERA, bpy.data.cameras.get(CAMERA) or bpy.data.cameras.new(CAMERA))
    cam_data = cast(bpy.types.Camera, cam.data)
    cam_data.lens, cam_data.sensor_fit = LENS_MM, "AUTO"
    centre, radius = world_bounds(objects)
    rot = target.matrix_world.to_quaternion()
    up, forward = rot @ Vector((0, 0, 1)), rot @ Vector((0, -1, 0))      # the head faces -Y
    pivot.matrix_world = Matrix.Translation(centre) @ rot.to_matrix().to_4x4()
    pivot["headcraft_up"] = tuple(up)  # type: ignore[arg-type]  # the stubs give Vector no __iter__
    distance = 0.85 * radius / math.sin(math.atan(18.0 / LENS_MM))
    cam.parent = pivot
    cam.matrix_world = _look_at(centre + forward * distance, centre, up)
    cam_data.clip_start, cam_data.clip_end = distance / 100, distance * 10
    own = [o for o in scene.objects if o.type == "LIGHT" and not o.hide_render and o.name not in coll.objects]
    if not own:
        for name, direction, watts in LIGHTS:
            name = f"HeadCraft {name}"
            light = _object(coll, name, bpy.data.lights.get(name) or bpy.data.lights.new(name, "AREA"))
            light_data = cast(bpy.types.AreaLight, light.data)
            light_data.energy, light_data.size = watts * (distance / 0.6) ** 2, distance * 0.5
            light.parent = pivot
            light.matrix_world = _look_at(centre + (rot @ Vector(direction).normalized()) * distance, centre, up)
    return pivot, cam


def _look_at(eye: Vector, centre: Vector, up: Vector) -> Matrix:
    """A camera/light matrix at `eye` looking at `centre` (-Z) with `up` as its Y."""
    z = (eye - centre).normalized()
    x = up.cross(z).normalized()
    y = z.cross(x)
    m = Matrix((x, y, z)).transposed().to_4x4()  # type: ignore[arg-type]  # (Vectors: no Sequence to the stubs)
    m.translation = eye
    return m


def engine_id(name: str) -> str:
    """CYCLES / EEVEE / WORKBENCH -> this Blender's engine identifier (EEVEE's changed names)."""
    if name == "EEVEE":
        engine = cast(bpy.types.EnumProperty, bpy.types.RenderSettings.bl_rna.properties["engine"])
        static = engine.enum_items.keys()
        return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in static else "BLENDER_EEVEE"
    return {"WORKBENCH": "BLENDER_WORKBENCH"}.get(name, name)


class RenderRun:
    """Frames rendered one per `step()`; `finish()` (or `cancel()`) restores the scene."""

    def __init__(self, context, mode: str, target: bpy.types.Object, settings, frames: range | None = None):
        self.scene, self.mode, self.target = context.scene, mode, target
        s = settings
        self.folder = runtime.output_folder(s.output_folder, "renders")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.title = f"{'Turntable' if mode == 'TURNTABLE' else 'Animation'} of {target.name}"
        self.state, self.stage, self.message, self.fraction = "running", "render", "", 0.0
        self.contact_count, self.contact_columns = s.sheet_frames, s.sheet_columns
        self.files: list[Path] = []
        scene, r = self.scene, self.scene.render
        self._saved = {"engine": r.engine, "x": r.resolution_x, "y": r.resolution_y,
                       "pct": r.resolution_percentage, "path": r.filepath, "format": r.image_settings.file_format,
                       "colour": r.image_settings.color_mode, "camera": scene.camera, "frame": scene.frame_current,
                       "samples": _samples(scene)}
        self._hidden: list[bpy.types.Object] = []
        self.pivot: bpy.types.Object | None       # the turntable's
        try:
            try:
                r.engine = engine_id(s.engine)
            except TypeError:
                raise ValueError(f"this Blender has no {s.engine} engine (is its add-on enabled?)") from None
            r.resolution_x, r.resolution_y = s.resolution
            r.resolution_percentage = 100
            r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
            _set_samples(scene, s.samples)
            if mode == "TURNTABLE":
                keep = {target, *target.children_recursive, *(target.parent and [target.parent] or [])}
                for o in scene.objects:
                    if o.type in {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME"} \
                            and o not in keep and not o.hide_render:
                        o.hide_render = True
                        self._hidden.append(o)
                self.pivot, cam = camera_rig(scene, target, [target])
                self.rest = self.pivot.matrix_world.copy()
                n = max(1, s.turntable_views)
                self.jobs = [(i, 2 * math.pi * i / n) for i in range(n)]
            else:
                self.pivot = None
                cam = scene.camera
                if cam is None:
                    _, cam = camera_rig(scene, target, [target])
                self.jobs = [(f, None) for f in (frames or range(scene.frame_start, scene.frame_end + 1))]
            scene.camera = cam
        except Exception:
            self._restore()
            raise
        self.total, self.done = len(self.jobs), 0

    def step(self) -> bool:
        """Render the next frame; False when every frame is rendered."""
        if self.done >= self.total:
            return False
        index, angle = self.jobs[self.done]
        scene = self.scene
        if angle is None:
            scene.frame_set(index)
            name = f"animation_{index:04d}.png"
        else:
            assert self.pivot is not None     # a turntable's view
            up = Vector(self.pivot["headcraft_up"])
            centre = self.rest.translation
            spin = Matrix.Translation(centre) @ Matrix.Rotation(angle, 4, up) @ Matrix.Translation(-centre)
            self.pivot.matrix_world = spin @ self.rest
            name = f"turntable_{index:03d}.png"
        path = self.folder / name
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        self.files.append(path)
        self.done += 1
        self.fraction = self.done / self.total
        self.message = f"{self.done}/{self.total} frames"
        return self.done < self.total

    def finish(self) -> Path | None:
        """Restore the scene and write the contact sheet; its path (None when nothing rendered)."""
        self._restore()
        self.state = "done"
        if not self.files:
            return None
        sheet = self.folder / f"{'turntable' if self.mode == 'TURNTABLE' else 'animation'}_contact_sheet.png"
        contact_sheet(pick(self.files, self.contact_count), sheet, self.contact_columns)
        return sheet

    def cancel(self) -> None:
        """Stop after the current frame; frames already written stay, no contact sheet."""
        if self.state == "running":
            self._restore()
            self.state = "cancelled"

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def _restore(self) -> None:
        scene, r, s = self.scene, self.scene.render, self._saved
        r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage = s["engine"], s["x"], s["y"], s["pct"]
        r.filepath, r.image_settings.file_format = s["path"], s["format"]
        r.image_settings.color_mode = s["colour"]
        _set_samples(scene, s["samples"])
        scene.camera = s["camera"]
        for o in self._hidden:
            if o.name in bpy.data.objects:
                o.hide_render = False
        self._hidden = []
        pivot, rest = getattr(self, "pivot", None), getattr(self, "rest", None)     # unset when __init__ failed
        if pivot is not None and rest is not None:
            pivot.matrix_world = rest
        if scene.frame_current != s["frame"]:
            scene.frame_set(s["frame"])


def _samples(scene) -> int:
    if scene.render.engine == "CYCLES":
        return scene.cycles.samples
    return scene.eevee.taa_render_samples


def _set_samples(scene, n: int) -> None:
    if scene.render.engine == "CYCLES":
        scene.cycles.samples = n
    elif scene.render.engine.startswith("BLENDER_EEVEE"):
        scene.eevee.taa_render_samples = n


def pick(files: list[Path], count: int) -> list[Path]:
    """Up to `count` files evenly spread, first and last included."""
    if len(files) <= count:
        return list(files)
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def contact_sheet(files: list[Path], out: Path, columns: int) -> None:
    """The images in a grid (row-major from the top left) as one PNG."""
    tiles = []
    for f in files:
        img = bpy.data.images.load(str(f), check_existing=False)
        try:
            w, h = img.size
            px = np.empty(w * h * 4, np.float32)
            img.pixels.foreach_get(px)  # type: ignore[attr-defined]  # the stubs type pixels as a float
            tiles.append(px.reshape(h, w, 4))
        finally:
            bpy.data.images.remove(img)
    h, w = tiles[0].shape[:2]
    cols = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.ones((rows * h, cols * w, 4), np.float32)
    sheet[..., :3] = 0.18
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        top = (rows - 1 - r) * h                   # Blender's pixel rows run bottom-up
        sheet[top:top + h, c * w:(c + 1) * w] = t[:h, :w]
    img = bpy.data.images.new(out.stem, cols * w, rows * h, alpha=True)
    try:
        img.pixels.foreach_set(sheet.ravel())  # type: ignore[attr-defined]  # (as above)
        img.filepath_raw, img.file_format = str(out), "PNG"
        img.save()
    finally:
        bpy.data.images.remove(img)
