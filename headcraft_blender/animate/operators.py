"""Operators that animate detailed heads: the shape-key rig, the exact bake, performances."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import bpy
from bpy_extras.io_utils import ImportHelper

from .. import polls, runtime
from ..layout import objects as layout_objects
from ..meshdata import model_to_blender
from ..models import model_params
from . import objects, render
from .performance import PerformanceError, read

BAKE_CHUNK_BYTES = 96 << 20          # dense frames per backend reply


def _detailed_with_head(context):
    obj = layout_objects.find_detailed(context.active_object)
    return (obj, objects.coarse_head(obj)) if obj is not None else (None, None)


GONE = "This detailed head's low-res head is gone (it was deleted or renamed)"


class _DetailedOperator:
    bl_options = runtime.JOB_OPTIONS

    @classmethod
    def poll(cls, context):
        obj, head = _detailed_with_head(context)
        return polls.detailed_selected(cls, context, (obj is None or head is not None, GONE))

    @classmethod
    def description(cls, context, properties):
        obj = layout_objects.find_detailed(context.active_object) if context else None
        if obj is not None and objects.coarse_head(obj) is None:
            return GONE
        return cls.__doc__


class HEADCRAFT_OT_build_rig(_DetailedOperator, bpy.types.Operator):
    """Add '<detailed> Animated': the detailed head driven in real time by its low-res head's keys and armature"""
    bl_idname = "headcraft.build_rig"
    bl_label = "Build Detailed Rig"

    def execute(self, context):
        detailed, head = _detailed_with_head(context)
        names = [n for n in head.get("headcraft_expr_names", [])
                 if head.data.shape_keys and n in head.data.shape_keys.key_blocks]
        if not names:
            self.report({"ERROR"}, f"{head.name} has no expression keys to drive")
            return {"CANCELLED"}
        d_name, h_name = detailed.name, head.name

        def apply(result, arrays):
            detailed, head = bpy.data.objects.get(d_name), bpy.data.objects.get(h_name)
            if detailed is None or head is None:
                raise ValueError("the detailed or low-res head was deleted while the rig was built")
            old = objects.rig_of(detailed)
            obj = objects.create_rig_object(bpy.context, detailed, head, result, arrays)
            if old is not None:
                objects.remove_object(old)
                obj.name = f"{d_name} Animated"
            runtime.notify(f"{obj.name}: {len(result['expr_names'])} expression keys driven by {h_name}")

        params = dict(model_params(layout_objects.model_of(head)), expr_names=names)
        return runtime.submit_from_operator(self, runtime.UIJob(
            f"Rig {d_name}", "animate.rig", params, objects.rig_request(detailed, head), apply))


class _BakeRun:
    """One bake: coarse frames sent in chunks, each reply appended to the PC2 file and compared
    with the real-time rig when there is one; the object is made only when every frame is in."""

    def __init__(self, op, context, detailed, head, frames: range, params: dict, base_arrays: dict):
        self.d_name, self.h_name, self.frames, self.params = detailed.name, head.name, frames, params
        self.base_arrays = base_arrays
        self.coarse = objects.coarse_frames(context, head, frames)
        n = len(base_arrays["base"])
        self.chunk = max(1, min(len(frames), BAKE_CHUNK_BYTES // (12 * n)))
        self.path = objects.cache_path(detailed)
        self.writer = objects.PC2Writer(self.path, n, frames.start, len(frames))
        rig = objects.rig_of(detailed)
        self.rig_name = rig.name if rig is not None else None
        self.deviation = (0.0, 0.0)          # the rig against the bake: max and 99th percentile
        self.next = 0

    def submit(self):
        s = self.next
        arrays = dict(self.base_arrays, coarse_frames=self.coarse[s:s + self.chunk])
        return runtime.submit(runtime.UIJob(
            f"Bake frames {self.frames[s]}-{self.frames[min(s + self.chunk, len(self.frames)) - 1]} "
            f"of {self.frames.start}-{self.frames[-1]}", "animate.bake", self.params, arrays,
            self.on_done, self.on_error, self.writer.discard,
            undo=f"Bake {self.d_name}" if s + self.chunk >= len(self.frames) else None))

    def on_done(self, result, arrays):
        try:
            verts = model_to_blender(arrays["vertices"])
            self.writer.append(verts)
            rig = bpy.data.objects.get(self.rig_name) if self.rig_name else None
            if rig is not None:
                self.deviation = tuple(map(max, self.deviation, self._rig_deviation(rig, verts)))
            self.next += len(verts)
            if self.next < len(self.frames):
                self.submit()
                return
            self.writer.finish()
            detailed, head = bpy.data.objects.get(self.d_name), bpy.data.objects.get(self.h_name)
            if detailed is None or head is None:
                raise ValueError("the detailed or low-res head was deleted during the bake")
            obj = objects.create_baked_object(bpy.context, detailed, head, self.path, self.frames.start)
            worst, p99 = (d * 1e3 for d in self.deviation)
            obj["headcraft_rig_deviation_mm"], obj["headcraft_rig_deviation_p99_mm"] = worst, p99
            versus = (f"; the real-time rig is within {worst:.2f} mm of the exact bake "
                      f"(99% of vertices within {p99:.2f} mm)" if self.rig_name else "")
            runtime.notify(f"{obj.name}: {len(self.frames)} frames baked to {self.path.name}{versus}")
        except Exception:
            self.writer.discard()
            raise

    def _rig_deviation(self, rig, exact: np.ndarray) -> tuple[float, float]:
        """Largest distance and largest 99th percentile over these frames (metres)."""
        scene = bpy.context.scene
        assert scene is not None    # a bake runs in a scene
        current, worst, p99 = scene.frame_current, 0.0, 0.0
        try:
            for i, v in enumerate(exact):
                scene.frame_set(self.frames[self.next + i])
                d = np.linalg.norm(objects.evaluated_vertices(bpy.context, rig) - v, axis=1)
                worst, p99 = max(worst, float(d.max())), max(p99, float(np.percentile(d, 99)))
        finally:
            scene.frame_set(current)
        return worst, p99

    def on_error(self, message: str):
        self.writer.discard()


class HEADCRAFT_OT_bake_animation(_DetailedOperator, bpy.types.Operator):
    """Compute the exact detailed head for each frame of its low-res head's animation into a mesh cache"""
    bl_idname = "headcraft.bake_animation"
    bl_label = "Bake Animation"

    def execute(self, context):
        detailed, head = _detailed_with_head(context)
        s, scene = context.scene.headcraft.animate, context.scene
        start, end = (scene.frame_start, scene.frame_end) if s.scene_range else (s.frame_start, s.frame_end)
        if end < start:
            self.report({"ERROR"}, f"The frame range {start}-{end} is empty")
            return {"CANCELLED"}
        arrays = objects.rig_request(detailed, head)
        arrays.pop("coarse_neutral")
        try:
            run = _BakeRun(self, context, detailed, head, range(start, end + 1),
                           model_params(layout_objects.model_of(head)), arrays)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot write the cache: {exc}")
            return {"CANCELLED"}
        with runtime.reporting_to(self):
            job = run.submit()
        return {"CANCELLED"} if job.finished and job.state != "done" else {"FINISHED"}


# the stubs type ImportHelper.check and .invoke as returning None (they return a bool, a set)
class HEADCRAFT_OT_import_performance(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Keyframe the active low-res head from an ARKit blendshape CSV or a FLAME parameter sequence (.npz)"""
    bl_idname = "headcraft.import_performance"
    bl_label = "Import Performance"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: bpy.props.StringProperty(default="*.csv;*.npz", options={"HIDDEN"},
                                          description="The file types the file browser shows")
    fps: bpy.props.FloatProperty(name="Capture Rate", default=0.0, min=0.0, max=1000.0,
                                 description="Frames per second of the file; 0 reads it from the file "
                                             "(CSV timecodes, the npz's fps, else 30)")
    frame_start: bpy.props.IntProperty(name="Start Frame", default=-1,
                                       description="Scene frame of the first sample; -1 uses the current frame")

    @classmethod
    def poll(cls, context):
        return polls.head_selected(cls, context, reason="Select the low-res HeadCraft head to keyframe", idle=False)

    def execute(self, context):
        head = layout_objects.head_of(context.active_object)
        try:
            perf = read(self.filepath, self.fps)
            start = context.scene.frame_current if self.frame_start < 0 else self.frame_start
            done = objects.apply_performance(context, head, perf, start)
        except (PerformanceError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        skipped = f"; no channel on this head for {len(done['missing'])}: {', '.join(done['missing'][:4])}" \
            if done["missing"] else ""
        msg = (f"{Path(self.filepath).name}: {done['keys']} keys and {len(done['joints'])} bones keyframed over "
               f"frames {done['first']}-{done['last']}{skipped}")
        self.report({"INFO"}, msg)
        runtime.notify(msg)
        return {"FINISHED"}


class HEADCRAFT_OT_render(bpy.types.Operator):
    """Render a turntable of the active object or the animation, then a contact sheet (Esc stops it)"""
    bl_idname = "headcraft.render"
    bl_label = "Render"

    mode: bpy.props.EnumProperty(name="Mode", description="What to render", items=[
        ("TURNTABLE", "Turntable", "One full turn around the active object"),
        ("ANIMATION", "Animation", "The Animate panel's frame range, every scene frame step")])

    _run: render.RenderRun | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return polls.check(cls, context, (context.active_object is not None, "Select the object to render"))

    @classmethod
    def description(cls, context, properties):
        return {"TURNTABLE": "Render a turntable of the active object and its contact sheet",
                "ANIMATION": "Render the animation frame range and its contact sheet"}[properties.mode]

    def _start(self, context) -> bool:
        s, scene = context.scene.headcraft.animate, context.scene
        start, end = (scene.frame_start, scene.frame_end) if s.scene_range else (s.frame_start, s.frame_end)
        if end < start:
            self.report({"ERROR"}, f"The frame range {start}-{end} is empty")
            return False
        try:
            self._run = render.RenderRun(context, self.mode, context.active_object, s,
                                         range(start, end + 1, max(1, scene.frame_step)))
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Cannot render: {exc}")
            return False
        return True

    def _step(self) -> bool:
        """One frame; False when finished or failed (the scene is restored either way)."""
        run = self._run
        assert run is not None      # made by _start
        try:
            if run.step():
                return True
            sheet = run.finish()
        except Exception as exc:  # a failed render (disk full, engine error) ends the run cleanly
            run.cancel()
            self.report({"ERROR"}, f"Rendering stopped after {run.done} of {run.total} frames: {exc}")
            return False
        assert sheet is not None    # a run renders at least one frame
        msg = f"{run.title}: {run.total} frames in {run.folder}; contact sheet {sheet.name}"
        self.report({"INFO"}, msg)
        runtime.notify(msg)
        return False

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        while self._step():
            pass
        return {"FINISHED"} if self._run.state == "done" else {"CANCELLED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        runtime.STATE.local_tasks.append(self._run)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        run = self._run
        if event.type == "ESC":
            run.cancel()
        if not run.finished and event.type == "TIMER":
            self._step()
            _redraw(context)
        if not run.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        runtime.STATE.local_tasks.remove(run)
        _redraw(context)
        if run.state == "cancelled":
            runtime.notify(f"{run.title}: cancelled after {run.done} of {run.total} frames (kept in {run.folder})")
            return {"CANCELLED"}
        return {"FINISHED"}


def _redraw(context) -> None:
    for area in context.screen.areas if context.screen else ():
        if area.type == "VIEW_3D":
            area.tag_redraw()


CLASSES = (HEADCRAFT_OT_build_rig, HEADCRAFT_OT_bake_animation, HEADCRAFT_OT_import_performance,
           HEADCRAFT_OT_render)
