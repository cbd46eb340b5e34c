"""Add Head end to end: extension -> real backend process -> Blender objects."""
import numpy as np
import pytest

import fixtures.flame_files as ff


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    return ff.write_flame_files(tmp_path_factory.mktemp("FLAME2020"), "2020")


def configure_flame(bpy, ext, files):
    p = bpy.context.preferences.addons[ext.__name__].preferences
    p.flame_model_path, p.flame_masks_path = str(files.model), str(files.masks)
    p.flame_uv_path, p.flame_landmark_path = str(files.obj), str(files.landmarks68)


def test_add_flame_head(blender, ext, flame_dir):
    bpy = blender
    configure_flame(bpy, ext, flame_dir)
    keep = bpy.data.objects.new("UserEmpty", None)
    bpy.context.scene.collection.objects.link(keep)
    keep.location = (1, 2, 3)
    res = bpy.ops.headcraft.add_head(model="FLAME", num_shape=20, num_expr=10)
    assert res == {"FINISHED"}
    head = bpy.context.active_object
    assert head.name.startswith("FLAME Head") and head["headcraft_model"] == "flame"
    assert len(head.data.vertices) == 5023 and len(head.data.polygons) == 9976
    keys = head.data.shape_keys.key_blocks
    assert [k.name for k in keys[1:4]] == ["Shape000", "Shape001", "Shape002"]
    assert "Exp009" in keys and len(keys) == 1 + 20 + 10
    assert keys["Shape000"].slider_min == -5 and keys["Shape000"].slider_max == 5
    rig = head.parent
    assert rig.type == "ARMATURE" and {b.name for b in rig.data.bones} == {
        "global", "neck", "jaw", "eye.L", "eye.R"}
    # into the active collection (here the scene's own), at the 3D cursor (here the origin)
    assert head.users_collection[0] == rig.users_collection[0] == bpy.context.scene.collection
    assert tuple(keep.location) == (1, 2, 3) and keep.users_collection[0] == bpy.context.scene.collection
    # the Blender mesh is FLAME's template converted Y-up -> Z-up
    co = np.empty(5023 * 3, np.float32)
    head.data.vertices.foreach_get("co", co)
    v = flame_dir.arrays["v_template"]
    np.testing.assert_allclose(co.reshape(-1, 3), np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1), atol=1e-6)


def _scene_snapshot(bpy):
    return sorted((o.name, o.type) for o in bpy.data.objects), len(bpy.data.meshes), len(bpy.data.armatures)


def test_flame_not_configured_is_a_clear_error_and_creates_nothing(blender, ext):
    bpy = blender
    p = bpy.context.preferences.addons[ext.__name__].preferences
    p.flame_model_path = ""
    before = _scene_snapshot(bpy)
    # a script sees the operator's error report as an exception
    with pytest.raises(RuntimeError, match="FLAME is not configured"):
        bpy.ops.headcraft.add_head(model="FLAME")
    assert _scene_snapshot(bpy) == before
    level, text = ext.runtime.STATE.messages[-1]
    assert level == "ERROR" and "FLAME is not configured" in text


def test_broken_flame_file_names_the_file(blender, ext, tmp_path, flame_dir):
    bpy = blender
    configure_flame(bpy, ext, flame_dir)
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(flame_dir.model.read_bytes()[:1000])  # truncated
    bpy.context.preferences.addons[ext.__name__].preferences.flame_model_path = str(bad)
    before = _scene_snapshot(bpy)
    with pytest.raises(RuntimeError, match="generic_model.pkl"):
        bpy.ops.headcraft.add_head(model="FLAME")
    assert _scene_snapshot(bpy) == before
    assert "generic_model.pkl" in ext.runtime.STATE.messages[-1][1]


def test_dead_backend_gives_clear_message_then_recovers(blender, ext, flame_dir):
    bpy = blender
    configure_flame(bpy, ext, flame_dir)
    mgr = ext.runtime.STATE.backend
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    good = prefs.python_path
    mgr.stop()
    prefs.python_path = "/nonexistent/python"
    before = _scene_snapshot(bpy)
    try:
        with pytest.raises(RuntimeError, match="press Set Up Backend"):
            bpy.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2)
        # what to do on the first line, the path after it
        first, path = ext.runtime.STATE.messages[-1][1].split("\n")
        assert "press Set Up Backend" in first and path == "Not found: /nonexistent/python"
        assert _scene_snapshot(bpy) == before and mgr.status()["state"] == "error"
    finally:
        prefs.python_path = good
    # a backend killed behind our back: the next job restarts it
    assert bpy.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2) == {"FINISHED"}
    mgr.local.process.kill()
    mgr.local.process.wait()
    assert bpy.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2) == {"FINISHED"}
    assert mgr.status()["state"] == "ready"


def test_restart_and_release_operators(blender, ext):
    bpy = blender
    assert bpy.ops.headcraft.restart_backend() == {"FINISHED"}
    pid = ext.runtime.STATE.backend.local.process.pid
    assert bpy.ops.headcraft.release_gpu() == {"FINISHED"}
    assert bpy.ops.headcraft.restart_backend() == {"FINISHED"}
    assert ext.runtime.STATE.backend.local.process.pid != pid
    assert bpy.ops.headcraft.stop_backend() == {"FINISHED"}
    assert ext.runtime.STATE.backend.status()["state"] == "stopped"


def test_cancel_applies_nothing(blender, ext):
    """A cancelled job reports 'cancelled' and its result callback never runs."""
    import threading
    applied = []
    job = ext.runtime.UIJob("Self-test", "diagnostics.selftest", {"seconds": 60}, None,
                            lambda r, a: applied.append(r))
    ext.runtime.STATE.jobs.append(job)
    threading.Thread(target=job._run, daemon=True).start()
    import time
    deadline = time.monotonic() + 60
    while job.fraction == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.state == "running"
    assert blender.ops.headcraft.cancel_job() == {"FINISHED"}
    ext.runtime.wait(job, timeout=10)
    assert job.state == "cancelled" and applied == [] and job not in ext.runtime.STATE.jobs
