"""The main job, headless (`python build.py demo`): add an OpenHead with a random identity and
expression through the real backend, save out/demo/demo.blend and a Cycles render."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "demo"


def frame_camera(bpy, head, distance: float = 0.75) -> None:
    """A camera in front of the head (Blender -Y), a key light and a fill light."""
    deps = bpy.context.evaluated_depsgraph_get()
    ev = head.evaluated_get(deps)
    co = np.array([head.matrix_world @ v.co for v in ev.data.vertices])
    centre = (co.min(0) + co.max(0)) / 2
    scene = bpy.context.scene
    cam = bpy.data.objects.new("Demo Camera", bpy.data.cameras.new("Demo Camera"))
    cam.data.lens = 85
    scene.collection.objects.link(cam)
    cam.location = (centre[0] + 0.25, centre[1] - distance, centre[2] + 0.05)
    direction = centre - np.array(cam.location)
    cam.rotation_euler = _look_rotation(direction)
    scene.camera = cam
    for name, loc, energy in (("Key", (0.6, -0.8, 0.7), 30.0), ("Fill", (-0.7, -0.5, 0.2), 8.0)):
        light = bpy.data.objects.new(name, bpy.data.lights.new(name, "AREA"))
        light.data.energy, light.data.size = energy, 0.6
        light.location = tuple(np.array(loc) + centre)
        light.rotation_euler = _look_rotation(centre - np.array(light.location))
        scene.collection.objects.link(light)


def _look_rotation(direction):
    from mathutils import Vector
    return Vector(tuple(direction)).to_track_quat("-Z", "Y").to_euler()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=512)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tools"))
    import bpy

    from blender_session import disable_extension, enable_extension
    OUT.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext = enable_extension("demo")
    try:
        t = time.perf_counter()
        res = bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=50, num_expr=52,
                                         randomize_identity=True, randomize_expression=True,
                                         seed=args.seed)
        if res != {"FINISHED"}:
            print("demo: Add Head failed (see the message above)")
            return 1
        head = bpy.context.active_object
        print(f"added {head.name}: {len(head.data.vertices)} vertices, "
              f"{len(head.data.shape_keys.key_blocks) - 1} shape keys, rig {head.parent.name} "
              f"in {time.perf_counter() - t:.1f} s (backend start included)")
        # Open the jaw a little through the rig, as an animator would.
        head.parent.pose.bones["jaw"].rotation_euler[0] = 0.12
        mat = bpy.data.materials.new("Demo Skin")
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (0.62, 0.42, 0.33, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.45
        head.data.materials.append(mat)
        head.data.shade_smooth()
        frame_camera(bpy, head)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = args.samples
        scene.render.resolution_x = scene.render.resolution_y = args.resolution
        scene.world = bpy.data.worlds.new("Demo World")
        scene.world.color = (0.05, 0.05, 0.06)
        scene.render.filepath = str(OUT / "head.png")
        t = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        print(f"rendered {OUT / 'head.png'} in {time.perf_counter() - t:.1f} s")
        bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
        print(f"saved {OUT / 'demo.blend'}")
    finally:
        disable_extension(ext)
    return 0


if __name__ == "__main__":
    sys.exit(main())
