"""The main job, headless (`python build.py demo`), every step through the extension's operators
and a real backend process, as a user would click them:

  a procedural scan (or --scan FILE) -> Fit Scan -> Bake Map -> four generated heads on the fitted
  identity -> an interpolation between two of them -> the shipped ARKit performance on the
  fitted head -> the detailed rig and the exact PC2 bake -> a contact sheet of the heads, a
  turntable and an animation contact sheet -> out/demo/demo.blend; and a gallery of 16 heads of
  the generator (front and three-quarter, the backend's rasteriser) -> out/demo/gallery.png
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "demo"
PERFORMANCE = ROOT / "demo" / "arkit_performance.csv"


class Steps:
    """Prints each step with its time; a failed operator stops the demo with its message."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def run(self, what: str, op, **kw):
        t = time.perf_counter()
        try:
            res = op(**kw)
        except RuntimeError as exc:
            raise SystemExit(f"demo: {what} failed: {exc}") from None
        if res != {"FINISHED"}:
            raise SystemExit(f"demo: {what} did not finish ({res})")
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {what} ({time.perf_counter() - t:.1f} s)", flush=True)


def synthetic_scan(bpy, ext, seed: int):
    """A procedural scan with short hair, noise, holes, a shoulder stub and vertex colours, in
    millimetres and upright, as a scanner's export imported into Blender."""
    import numpy as np
    from headcraft_backend.procedural.scans import make_scan
    from headcraft_backend.head.registry import load_model_data
    synth = make_scan(load_model_data({"model": "openhead"}), seed, hair="short", similarity=False, scale=1000.0)
    me = ext.meshdata.new_mesh("Demo Scan", ext.meshdata.model_to_blender(synth.vertices), synth.faces)
    if synth.colors is not None:
        rgba = np.concatenate([synth.colors, np.ones((len(synth.colors), 1))], 1).astype(np.float32)
        me.color_attributes.new("Col", "FLOAT_COLOR", "POINT").data.foreach_set("color", rgba.ravel())
    obj = bpy.data.objects.new("Demo Scan", me)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def imported_scan(bpy, path: Path):
    before = set(bpy.data.objects)
    suffix = path.suffix.lower()
    importer = {".ply": bpy.ops.wm.ply_import, ".obj": bpy.ops.wm.obj_import, ".stl": bpy.ops.wm.stl_import,
                ".glb": bpy.ops.import_scene.gltf, ".gltf": bpy.ops.import_scene.gltf}.get(suffix)
    if importer is None:
        raise SystemExit(f"demo: {path.name}: use a .ply, .obj, .stl or .glb scan")
    importer(filepath=str(path))
    new = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
    if not new:
        raise SystemExit(f"demo: {path.name} holds no mesh")
    return new[0]


def activate(bpy, obj) -> None:
    for o in bpy.context.selected_objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def render_lineup(bpy, ext, steps: Steps, objects, columns: int = 4) -> Path:
    """A front view of each object (hidden ones shown for their view) in one contact sheet."""
    s, files = bpy.context.scene.headcraft, []
    s.animate.turntable_views = 1
    for i, obj in enumerate(objects):
        hidden, obj.hide_render = obj.hide_render, False
        s.animate.output_folder = f"//render/heads/{i}/"
        activate(bpy, obj)
        steps.run(f"Render a front view of {obj.name}", bpy.ops.headcraft.render, mode="TURNTABLE")
        obj.hide_render = hidden
        files.append(OUT / "render" / "heads" / str(i) / "turntable_000.png")
    sheet = OUT / "render" / "heads_contact_sheet.png"
    ext.animate.render.contact_sheet(files, sheet, columns)
    return sheet


def render_gallery(steps: Steps, checkpoint: str) -> Path:
    """16 generated heads on the template, front and three-quarter (evaluate/gallery.py)."""
    from PIL import Image
    from headcraft_backend.evaluate.gallery import gallery
    t = time.perf_counter()
    g = gallery(checkpoint)
    path = OUT / "gallery.png"
    Image.fromarray(g.image).save(path)
    print(f"[{time.perf_counter() - steps.t0:6.0f} s] Gallery of {len(g.tiles)} generated heads -> "
          f"{path.relative_to(ROOT)} ({time.perf_counter() - t:.1f} s)", flush=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scan", type=Path, help="your own scan instead of a procedural one")
    ap.add_argument("--seed", type=int, default=7, help="the procedural scan's seed")
    ap.add_argument("--preset", choices=("PREVIEW", "PAPER"), default="PREVIEW", help="Fit Scan preset")
    ap.add_argument("--checkpoint", default="", help="generator (default: the bundled demo model)")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples")
    ap.add_argument("--resolution", type=int, default=384)
    ap.add_argument("--gallery-only", action="store_true",
                    help="only the gallery of generated heads (no Blender; a few seconds per head)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.gallery_only:
        render_gallery(Steps(), args.checkpoint)
        return 0
    sys.path.insert(0, str(ROOT / "tools"))
    import bpy

    from blender_session import disable_extension, enable_extension
    OUT.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext = enable_extension("demo")
    steps, ops = Steps(), bpy.ops.headcraft
    try:
        # saved first, so maps, caches and renders go beside it ('//' paths)
        bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
        scene, s = bpy.context.scene, bpy.context.scene.headcraft
        scene.render.fps = 24
        scene.world = bpy.data.worlds.new("Demo World")
        scene.world.color = (0.06, 0.06, 0.07)
        scan = imported_scan(bpy, args.scan) if args.scan else synthetic_scan(bpy, ext, args.seed)
        print(f"scan: {scan.name}, {len(scan.data.vertices):,} vertices")
        s.fit.scan, s.fit.preset, s.fit.landmarks = scan, args.preset, "AUTO"
        steps.run("Fit Scan", ops.fit_scan)
        fitted, detailed = (bpy.data.objects[f"{scan.name} {k}"] for k in ("Fit", "Detailed"))
        scan.hide_set(True)
        scan.hide_render = True

        activate(bpy, detailed)
        s.layout.folder, s.layout.size, s.layout.exr, s.layout.png16 = "//maps/", "1024", True, True
        steps.run("Bake Map (1024^2, object space, EXR + 16-bit PNGs)", ops.bake_map)

        s.generate.checkpoint, s.generate.psi = args.checkpoint, 0.7
        generated = []
        for seed in range(1, 5):
            activate(bpy, fitted)
            s.generate.seed = seed
            steps.run(f"Generate seed {seed} on the fitted identity", ops.generate)
            generated.append(bpy.context.active_object)
        activate(bpy, fitted)
        s.generate.seed, s.generate.to_seed, s.generate.interpolate_steps = 1, 2, 9
        steps.run("Interpolate seed 1 -> seed 2 (9 cached steps)", ops.interpolate)
        interpolation = bpy.context.active_object
        interpolation["headcraft_factor"] = 0.5
        interpolation.data.update()

        s.animate.engine, s.animate.samples = "CYCLES", args.samples
        s.animate.resolution = (args.resolution, args.resolution)
        render_lineup(bpy, ext, steps, [scan, fitted, detailed, *generated, interpolation])
        for i, obj in enumerate([*generated[1:], interpolation]):      # side by side
            obj.location.x += 0.3 * (i + 1) * fitted.matrix_world.to_scale().x

        activate(bpy, fitted)
        steps.run(f"Import Performance {PERFORMANCE.name}", ops.import_performance,
                  filepath=str(PERFORMANCE), frame_start=1)
        scene.frame_start, scene.frame_end = 1, int(fitted.data.shape_keys.animation_data.action.frame_range[1])
        hero = generated[0]
        skin = bpy.data.materials.new("Demo Skin")
        skin.use_nodes = True
        bsdf = skin.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (0.62, 0.43, 0.34, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.5
        for obj in (fitted, detailed, *generated[1:], interpolation):
            obj.hide_render = True
        activate(bpy, hero)
        steps.run(f"Build Detailed Rig on {hero.name}", ops.build_rig)
        s.animate.scene_range = True
        steps.run(f"Bake Animation, frames {scene.frame_start}-{scene.frame_end}", ops.bake_animation)
        rig = bpy.data.objects[f"{hero.name} Animated"]
        baked = bpy.data.objects[f"{hero.name} Baked"]
        baked.data.materials.clear()
        baked.data.materials.append(skin)
        hero.hide_set(True)
        hero.hide_render = True       # the baked copy stands in its place
        rig.hide_render = True
        print(f"  rig vs exact bake: {baked['headcraft_rig_deviation_mm']:.2f} mm max, "
              f"{baked['headcraft_rig_deviation_p99_mm']:.2f} mm p99")

        s.animate.output_folder, s.animate.turntable_views = "//render/", 8
        s.animate.sheet_frames, s.animate.sheet_columns = 8, 4
        activate(bpy, baked)
        steps.run("Render turntable (8 views) + contact sheet", ops.render, mode="TURNTABLE")
        scene.frame_step = max(1, (scene.frame_end - scene.frame_start) // 8)
        steps.run("Render animation + contact sheet", ops.render, mode="ANIMATION")
        scene.frame_step = 1
        scene.frame_set(scene.frame_start)
        bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
        render_gallery(steps, args.checkpoint)
        print(f"\ndone in {time.perf_counter() - steps.t0:.0f} s:\n"
              f"  {OUT / 'demo.blend'}\n  maps: {OUT / 'maps'}\n"
              f"  renders and contact sheets (heads, turntable, animation): {OUT / 'render'}\n"
              f"  gallery of generated heads: {OUT / 'gallery.png'}\n  PC2 cache: {baked['headcraft_cache']}")
    finally:
        disable_extension(ext)
    return 0


if __name__ == "__main__":
    sys.exit(main())
