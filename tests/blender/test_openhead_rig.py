"""OpenHead in Blender: the rig and keys deform exactly as the backend's model does."""
import numpy as np
import pytest

from recording_layout import draw


def evaluated(bpy, obj):
    bpy.context.view_layer.update()
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    co = np.empty(len(ev.data.vertices) * 3, np.float32)
    ev.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def backend_eval(ext, **kw):
    pose = kw.pop("pose", np.zeros((5, 3), np.float32))
    job = ext.runtime.STATE.backend.connection().call("head.vertices", dict(model="openhead", **kw),
                                                {"pose": pose.astype(np.float32)}, timeout=60)
    return ext.meshdata.model_to_blender(job.arrays["vertices"]), ext.meshdata.model_to_blender(job.arrays["joints"])


@pytest.fixture
def head(blender, ext):
    assert blender.ops.headcraft.add_head(model="OPENHEAD", num_shape=50, num_expr=52) == {"FINISHED"}
    return blender.context.active_object


def chin(head):
    jaw = head.vertex_groups["jaw"].index
    w = np.array([next((g.weight for g in v.groups if g.group == jaw), 0.0) for v in head.data.vertices])
    co = np.array([v.co for v in head.data.vertices])
    cand = np.flatnonzero(w > 0.99)
    return cand[np.argmin(co[cand, 2] + 0.5 * co[cand, 1])]  # low and forward


def test_openhead_structure(blender, head):
    me = head.data
    assert (len(me.vertices), len(me.polygons)) == (4570, 9084)
    names = [k.name for k in me.shape_keys.key_blocks]
    assert names[1] == "Shape000" and "Shape049" in names and "jawOpen" in names and "eyeBlinkLeft" in names
    assert len(names) == 1 + 50 + 52
    assert me.uv_layers.active is not None
    for region in ("face", "scalp", "neck", "ears", "eyeballs", "eye_region", "nose", "lips", "inner_mouth"):
        assert f"region_{region}" in head.vertex_groups
    assert head["headcraft_model"] == "openhead" and head["headcraft_num_expr"] == 52


def test_jaw_bone_matches_backend_lbs_and_opens_mouth(blender, ext, head):
    rig = head.parent
    rest = evaluated(blender, head)
    rig.pose.bones["jaw"].rotation_euler = (0.3, 0.0, 0.0)
    posed = evaluated(blender, head)
    pose = np.zeros((5, 3), np.float32)
    pose[2, 0] = 0.3
    ref, _ = backend_eval(ext, pose=pose)
    assert np.abs(posed - ref).max() < 1e-4
    c = chin(head)
    assert posed[c, 2] - rest[c, 2] < -0.005  # chin down by more than 5 mm
    rig.pose.bones["jaw"].rotation_euler = (0.0, 0.0, 0.0)


def test_jaw_open_key_moves_chin_down(blender, ext, head):
    rest = evaluated(blender, head)
    head.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    opened = evaluated(blender, head)
    c = chin(head)
    assert opened[c, 2] - rest[c, 2] < -0.003
    expr = np.zeros(52)
    expr[list(head["headcraft_expr_names"]).index("jawOpen")] = 1.0
    ref, _ = backend_eval(ext, expr=expr.tolist())
    assert np.abs(opened - ref).max() < 1e-5


def test_randomized_identity_moves_joints_with_it(blender, ext, head):
    assert blender.ops.headcraft.randomize_identity(seed=3) == {"FINISHED"}
    keys = head.data.shape_keys.key_blocks
    shape = [keys[f"Shape{i:03d}"].value for i in range(50)]
    assert np.abs(shape).max() > 0.1
    verts, joints = backend_eval(ext, shape=shape)
    assert np.abs(evaluated(blender, head) - verts).max() < 1e-4
    bones = head.parent.data.bones
    for j, name in enumerate(["global", "neck", "jaw", "eye.L", "eye.R"]):
        np.testing.assert_allclose(np.array(bones[name].head_local), joints[j], atol=1e-5)
    # and a jaw rotation on the new identity still matches the backend (pivot moved with it)
    head.parent.pose.bones["jaw"].rotation_euler = (0.25, 0.0, 0.0)
    pose = np.zeros((5, 3), np.float32)
    pose[2, 0] = 0.25
    ref, _ = backend_eval(ext, shape=shape, pose=pose)
    assert np.abs(evaluated(blender, head) - ref).max() < 1e-4
    assert blender.ops.headcraft.reset_head() == {"FINISHED"}
    assert all(k.value == 0 for k in keys)
    np.testing.assert_allclose(np.array(bones["jaw"].head_local), backend_eval(ext)[1][2], atol=1e-5)


def test_randomize_expression_and_head_panel(blender, ext, head):
    assert blender.ops.headcraft.randomize_expression(seed=1) == {"FINISHED"}
    values = [head.data.shape_keys.key_blocks[n].value for n in head["headcraft_expr_names"]]
    assert sum(v > 0 for v in values) == 6 and max(values) <= 0.8
    calls = draw(ext.head.panel.VIEW3D_PT_headcraft_head, blender.context, real=object())
    assert ("operator", "headcraft.randomize_identity") in calls
    blender.context.view_layer.objects.active = head.parent  # the rig selects its head too
    calls = draw(ext.head.panel.VIEW3D_PT_headcraft_head, blender.context, real=object())
    assert ("operator", "headcraft.reset_head") in calls


def test_rig_can_be_keyframed(blender, head):
    bpy = blender
    jaw = head.parent.pose.bones["jaw"]
    scene = bpy.context.scene
    jaw.rotation_euler = (0.0, 0.0, 0.0)
    jaw.keyframe_insert("rotation_euler", frame=1)
    jaw.rotation_euler = (0.35, 0.0, 0.0)
    jaw.keyframe_insert("rotation_euler", frame=11)
    scene.frame_set(1)
    closed = evaluated(bpy, head)
    scene.frame_set(11)
    opened = evaluated(bpy, head)
    c = chin(head)
    assert opened[c, 2] < closed[c, 2] - 0.005
    head.parent.animation_data_clear()
    scene.frame_set(1)


def test_panel_flags_rig_out_of_date_after_manual_identity_edit(blender, ext, head):
    panel = ext.head.panel.VIEW3D_PT_headcraft_head
    stale = ("label", "Identity edited: press Fit Rig to Identity")
    assert stale not in draw(panel, blender.context, real=object())
    head.data.shape_keys.key_blocks["Shape000"].value = 2.0
    assert stale in draw(panel, blender.context, real=object())
    assert blender.ops.headcraft.sync_rig() == {"FINISHED"}
    assert stale not in draw(panel, blender.context, real=object())
    _, joints = backend_eval(ext, shape=[2.0])
    np.testing.assert_allclose(np.array(head.parent.data.bones["neck"].head_local), joints[1], atol=1e-5)


def test_flame_hint_when_unconfigured(blender, ext):
    settings = blender.context.scene.headcraft.head
    prefs = blender.context.preferences.addons[ext.__name__].preferences
    prefs.flame_model_path = ""
    settings.model = "FLAME"
    calls = draw(ext.head.panel.VIEW3D_PT_headcraft_head, blender.context, real=object())
    settings.model = "OPENHEAD"
    assert ("label", "Set the FLAME files in the preferences") in calls
