"""Rendering (turntable, animation, contact sheet, cancel) and exporting the animated detailed
head with Blender's own glTF and FBX exporters."""
import json
import struct

import numpy as np
import pytest

from recording_layout import draw
from test_animate_panel import detailed  # noqa: F401  (fixture)


def pixels(bpy, path):
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, 4)
    finally:
        bpy.data.images.remove(img)


@pytest.fixture
def small_render(blender, tmp_path):
    s = blender.context.scene.headcraft
    s.animate.engine, s.animate.resolution, s.animate.samples = "CYCLES", (40, 32), 1
    s.animate.turntable_views, s.animate.sheet_frames, s.animate.sheet_columns = 4, 4, 2
    s.animate.output_folder = str(tmp_path)
    return s


def test_turntable_and_contact_sheet(blender, ext, small_render, tmp_path):
    bpy = blender
    bpy.ops.mesh.primitive_cube_add(location=(3, 0, 0))
    cube = bpy.context.active_object
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    scene, r = bpy.context.scene, bpy.context.scene.render
    r.engine, r.resolution_x, r.resolution_y = "BLENDER_WORKBENCH", 300, 200
    assert bpy.ops.headcraft.render(mode="TURNTABLE") == {"FINISHED"}
    views = [pixels(bpy, tmp_path / f"turntable_{i:03d}.png") for i in range(4)]
    assert views[0].shape == (32, 40, 4)
    assert views[0][..., :3].std() > 0.02                           # something lit is in the picture
    assert np.abs(views[0] - views[2]).mean() > 0.01                # front and back differ
    sheet = pixels(bpy, tmp_path / "turntable_contact_sheet.png")
    assert sheet.shape == (64, 80, 4)
    np.testing.assert_allclose(sheet[32:, :40], views[0], atol=1 / 255)   # top left (rows run bottom-up)
    np.testing.assert_allclose(sheet[:32, 40:], views[3], atol=1 / 255)
    # the scene is as it was, the render rig stays for the next time
    assert (r.engine, r.resolution_x, r.resolution_y, scene.camera) == ("BLENDER_WORKBENCH", 300, 200, None)
    assert not cube.hide_render
    assert "HeadCraft Camera" in bpy.data.collections["HeadCraft Render"].objects


def test_render_animation_and_cancel(blender, ext, small_render, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=52) == {"FINISHED"}
    head = bpy.context.active_object
    key = head.data.shape_keys.key_blocks["jawOpen"]
    for frame, value in ((1, 0.0), (3, 1.0)):
        key.value = value
        key.keyframe_insert("value", frame=frame)
    s, scene = small_render, bpy.context.scene
    s.animate.scene_range, s.animate.frame_start, s.animate.frame_end = False, 1, 3
    scene.frame_set(2)
    assert bpy.ops.headcraft.render(mode="ANIMATION") == {"FINISHED"}
    frames = [pixels(bpy, tmp_path / f"animation_{f:04d}.png") for f in (1, 2, 3)]
    assert np.abs(frames[0] - frames[2]).max() > 0.05               # the mouth opened
    assert (tmp_path / "animation_contact_sheet.png").exists() and scene.frame_current == 2

    # cancel after the first frame: that frame stays, no contact sheet, the scene is restored
    sheet = tmp_path / "animation_contact_sheet.png"
    sheet.unlink()
    engine = scene.render.engine
    run = ext.animate.render.RenderRun(bpy.context, "ANIMATION", head, s.animate, range(1, 4))
    assert run.step() and scene.render.engine == "CYCLES"
    # the sidebar shows it like a backend job, and its Cancel button stops it
    ext.runtime.STATE.local_tasks.append(run)
    try:
        calls = draw(ext.ui.VIEW3D_PT_headcraft, bpy.context, real=object())
        assert ("progress", pytest.approx(1 / 3), f"Animation of {head.name}: render 1/3 frames") in calls
        assert bpy.ops.headcraft.cancel_job() == {"FINISHED"}
    finally:
        ext.runtime.STATE.local_tasks.remove(run)
    assert run.finished and run.state == "cancelled" and run.done == 1
    assert not sheet.exists() and scene.render.engine == engine and scene.frame_current == 2


def _glb_json(path):
    raw = path.read_bytes()
    length, kind = struct.unpack_from("<I4s", raw, 12)
    assert kind == b"JSON"
    return json.loads(raw[20:20 + length])


def test_export_keeps_shape_keys(blender, ext, detailed, tmp_path):  # noqa: F811
    bpy = blender
    head, det = detailed
    assert bpy.ops.headcraft.build_rig() == {"FINISHED"}
    rig = bpy.context.scene.objects[f"{det.name} Animated"]
    names = [k.name for k in rig.data.shape_keys.key_blocks[1:]]
    bpy.ops.object.select_all(action="DESELECT")
    rig.select_set(True)
    bpy.context.view_layer.objects.active = rig

    glb = tmp_path / "head.glb"
    assert bpy.ops.export_scene.gltf(filepath=str(glb), use_selection=True, export_morph=True) == {"FINISHED"}
    gltf = _glb_json(glb)
    mesh = next(m for m in gltf["meshes"] if m["primitives"][0].get("targets"))
    assert len(mesh["primitives"][0]["targets"]) == len(names)
    assert mesh["extras"]["targetNames"] == names

    fbx = tmp_path / "head.fbx"
    assert bpy.ops.export_scene.fbx(filepath=str(fbx), use_selection=True) == {"FINISHED"}
    before = set(bpy.data.objects)
    assert bpy.ops.import_scene.fbx(filepath=str(fbx)) == {"FINISHED"}
    imported = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
    assert len(imported) == 1
    keys = imported[0].data.shape_keys.key_blocks
    assert [k.name for k in keys[1:]] == names
    # the jawOpen key moves the same vertices by the same amounts (FBX stores centimetres)
    i = names.index("jawOpen") + 1
    ours = np.array([p.co for p in rig.data.shape_keys.key_blocks[i].points]) - \
        np.array([p.co for p in rig.data.shape_keys.key_blocks[0].points])
    theirs = np.array([p.co for p in keys[i].data]) - np.array([p.co for p in keys[0].data])
    ours, theirs = np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1)
    scale = theirs.max() / ours.max()
    assert ours.max() > 0.001
    np.testing.assert_allclose(theirs, scale * ours, atol=1e-3 * theirs.max())
