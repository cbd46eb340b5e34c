"""Complete Head in Blender: a partial scan (Depth View) in, a whole detailed head out; the scan untouched."""
import numpy as np
import pytest

from backend_side import random_openhead
from recording_layout import draw


@pytest.fixture
def front_scan(blender, ext, tmp_path):
    """The front half of an OpenHead with a random identity, in millimetres: a single view's worth."""
    bpy = blender
    v, all_faces = random_openhead(tmp_path / "scan.npz")
    faces = all_faces[(v[all_faces][:, :, 2] > np.quantile(v[:, 2], 0.5)).all(1)]
    used = np.unique(faces)
    remap = np.zeros(len(v), np.int64)
    remap[used] = np.arange(len(used))
    me = ext.meshdata.new_mesh("Scan", ext.meshdata.model_to_blender(v[used]) * 1000.0, remap[faces])
    obj = bpy.data.objects.new("Scan", me)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _co(obj):
    return np.array([obj.matrix_world @ v.co for v in obj.data.vertices])


@pytest.mark.backend_bound
def test_complete_a_depth_view(blender, ext, front_scan):
    bpy = blender
    s = bpy.context.scene.headcraft
    s.fit.scan, s.fit.scan_kind = front_scan, "FULL"
    assert not bpy.ops.headcraft.complete_scan.poll()        # a full scan needs no completion
    s.fit.scan_kind = "DEPTH"
    calls = draw(ext.fit.panel.VIEW3D_PT_headcraft_fit, bpy.context, real=object())
    assert ("operator", "headcraft.complete_scan") in calls
    s.fit.preset, s.fit.steps, s.fit.units, s.fit.landmarks, s.fit.latent_steps = "PREVIEW", 20, "MM", "AUTO", 10
    before, n_objects = _co(front_scan), len(bpy.data.objects)
    assert bpy.ops.headcraft.complete_scan() == {"FINISHED"}
    np.testing.assert_array_equal(_co(front_scan), before)     # the scan is never modified
    done = bpy.data.objects["Scan Completed"]
    assert len(bpy.data.objects) == n_objects + 1 and done.users_collection[0] == front_scan.users_collection[0]
    assert len(done.data.vertices) > 100_000
    seen = np.zeros(len(done.data.vertices), bool)
    done.data.attributes["headcraft_visibility"].data.foreach_get("value", seen)
    assert 0.05 < seen.mean() < 0.7
    co = _co(done)
    from scipy.spatial import cKDTree
    d, _ = cKDTree(before).query(co[seen])
    assert np.median(d) < 3.0                                  # mm: the seen part lies on the scan
    # the back of the head is there: the completed head reaches far behind the half scan (Blender -Y is the face)
    assert co[:, 1].max() - before[:, 1].max() > 60.0
