"""Undo and redo keep every job's result (issue 15): results are applied by the pump, as the
GUI's timer applies them, never inside execute(); each result is its own undo step."""
import numpy as np
import pytest

from backend_side import tiny_checkpoint
from test_fit_scan import scan  # noqa: F401  (a fixture)


@pytest.fixture
def gui(blender, ext):
    """The GUI's flow: operators return at once, results arrive through runtime.pump()."""
    ext.runtime.STATE.wait_in_background = False
    blender.ops.ed.undo_push(message="test start")
    yield ext
    try:
        ext.runtime.wait_all(600)
    finally:
        ext.runtime.STATE.wait_in_background = True


def _names(bpy):
    return {o.name for o in bpy.data.objects}


def _job(bpy, ext, op, **kw) -> set:
    """Run a job operator as a click does; returns the objects its result added."""
    before = _names(bpy)
    assert op(**kw) == {"FINISHED"}
    assert ext.runtime.STATE.jobs, "the result must not be applied inside execute()"
    assert _names(bpy) == before
    ext.runtime.wait_all(900)
    return _names(bpy) - before


def _edit_elsewhere(bpy):
    """An unrelated edit with its own undo step, as a click on Add > Cube makes."""
    bpy.ops.mesh.primitive_cube_add("EXEC_DEFAULT", True, location=(5, 5, 5))
    return bpy.context.active_object.name


def _check_undo_redo(bpy, added: set, probe=lambda: None):
    """One undo removes exactly the result, redo restores it, and undoing a later edit keeps it."""
    with_result, value = _names(bpy), probe()
    bpy.ops.ed.undo()
    assert _names(bpy) == with_result - added
    bpy.ops.ed.redo()
    assert _names(bpy) == with_result and probe() == value
    cube = _edit_elsewhere(bpy)
    assert cube in _names(bpy)
    bpy.ops.ed.undo()
    assert _names(bpy) == with_result and probe() == value


def _add_head(bpy, ext, **kw):
    """The new head's name (Python references die with each undo: tests keep names)."""
    added = _job(bpy, ext, bpy.ops.headcraft.add_head, model="OPENHEAD", **kw)
    return next(n for n in added if bpy.data.objects[n].type == "MESH"), added


def test_head_family(blender, gui):
    bpy, ext = blender, gui
    name, added = _add_head(bpy, ext, num_shape=3, num_expr=5)
    assert bpy.data.objects[name].parent.name in added
    _check_undo_redo(bpy, added)
    # a later edit of the head is undone on its own; the head stays
    values = lambda: tuple(round(k.value, 6) for k in bpy.data.objects[name].data.shape_keys.key_blocks)  # noqa
    neutral = values()
    bpy.context.view_layer.objects.active = bpy.data.objects[name]
    assert bpy.ops.headcraft.randomize_expression("EXEC_DEFAULT", True, seed=3) == {"FINISHED"}
    assert values() != neutral
    bpy.ops.ed.undo()
    assert name in _names(bpy) and values() == neutral


def test_failure_and_cancel_leave_the_history(blender, gui, tmp_path):
    bpy, ext = blender, gui
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    cube = _edit_elsewhere(bpy)
    # a failing job (FLAME without its files) records no step: undo removes the cube
    old = prefs.flame_model_path
    prefs.flame_model_path = str(tmp_path / "missing.pkl")
    try:
        assert bpy.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2) == {"FINISHED"}
        ext.runtime.wait_all(120)
    finally:
        prefs.flame_model_path = old
    assert ext.runtime.STATE.messages[-1][0] == "ERROR"
    bpy.ops.ed.undo()
    assert cube not in _names(bpy)
    bpy.ops.ed.redo()
    # a cancelled job records no step either
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    assert bpy.ops.headcraft.cancel_job() == {"FINISHED"}
    ext.runtime.wait_all(120)
    assert _names(bpy) == {cube}
    bpy.ops.ed.undo()
    assert cube not in _names(bpy)


@pytest.mark.backend_bound      # a full fit; undo of results is tested on every Blender by the other families
def test_fit_family(blender, gui, scan):  # noqa: F811
    bpy, ext = blender, gui
    s = bpy.context.scene.headcraft
    s.fit.scan = scan
    s.fit.preset, s.fit.steps, s.fit.landmarks = "PREVIEW", 20, "AUTO"
    bpy.ops.ed.undo_push(message="scan")
    added = _job(bpy, ext, bpy.ops.headcraft.fit_scan)
    assert {"Scan Fit", "Scan Detailed"} <= added
    _check_undo_redo(bpy, added)
    assert "Scan" in _names(bpy)


def _map_pixels(bpy, name):
    img = bpy.data.images[name]
    px = np.empty(len(img.pixels), np.float32)
    img.pixels.foreach_get(px)
    return px


def test_maps_family(blender, gui, tmp_path):
    bpy, ext = blender, gui
    _add_head(bpy, ext, num_shape=2, num_expr=2)
    s = bpy.context.scene.headcraft
    y, x = np.mgrid[0:256, 0:256] / 256
    m = np.stack([0.1 * np.sin(2 * np.pi * (c + 2) * x) * np.cos(2 * np.pi * y) for c in range(3)], -1)
    np.save(tmp_path / "given.npy", m.astype(np.float32))
    s.layout.map_file, s.layout.uv_layout = str(tmp_path / "given.npy"), "headcraft"
    s.layout.space, s.layout.size = "OBJECT", "256"
    added = _job(bpy, ext, bpy.ops.headcraft.apply_map)
    assert len(added) == 1
    _check_undo_redo(bpy, added)
    detailed = next(iter(added))
    bpy.context.view_layer.objects.active = bpy.data.objects[detailed]
    s = bpy.context.scene.headcraft    # the old reference died with the undo (5.x crashes on it)
    s.layout.exr = s.layout.png16 = s.layout.npy = False
    images = {i.name for i in bpy.data.images}
    assert _job(bpy, ext, bpy.ops.headcraft.bake_map) == set()
    baked = ({i.name for i in bpy.data.images} - images).pop()
    pixels = _map_pixels(bpy, baked)
    bpy.ops.ed.undo()
    assert baked not in bpy.data.images
    bpy.ops.ed.redo()
    np.testing.assert_array_equal(_map_pixels(bpy, baked), pixels)


def test_generate_and_animate_families(blender, gui, tmp_path):
    bpy, ext = blender, gui
    head, _ = _add_head(bpy, ext, num_shape=2, num_expr=10)
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.generate.seed = tiny_checkpoint(tmp_path / "tiny", seed=0), 4
    s.layout.uv_layout = "headcraft"
    added = _job(bpy, ext, bpy.ops.headcraft.generate)
    assert added == {f"{head} Seed 4"}
    _check_undo_redo(bpy, added)
    bpy.context.view_layer.objects.active = bpy.data.objects[f"{head} Seed 4"]
    added = _job(bpy, ext, bpy.ops.headcraft.build_rig)
    assert added == {f"{head} Seed 4 Animated"}
    _check_undo_redo(bpy, added)
