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
    assert head.users_collection[0].name == "HeadCraft"
    assert tuple(keep.location) == (1, 2, 3) and keep.users_collection[0] == bpy.context.scene.collection
    # the Blender mesh is FLAME's template converted Y-up -> Z-up
    co = np.empty(5023 * 3, np.float32)
    head.data.vertices.foreach_get("co", co)
    v = flame_dir.arrays["v_template"]
    np.testing.assert_allclose(co.reshape(-1, 3), np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1), atol=1e-6)
