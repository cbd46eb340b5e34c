"""Generate panel (issue 5): a sample from a generator checkpoint on the active head."""
import numpy as np
import pytest

from backend_side import demo_model_resolution, tiny_checkpoint


def test_generate_with_the_demo_model_and_a_checkpoint(blender, ext, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    head = bpy.context.active_object
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.generate.seed, s.layout.uv_layout = "", 2, "headcraft"    # empty: the bundled demo model
    assert bpy.ops.headcraft.generate() == {"FINISHED"}
    demo = bpy.context.active_object
    assert demo.name == f"{head.name} Seed 2" and tuple(s.layout.map_image.size) == (demo_model_resolution(),) * 2
    assert np.abs(ext.layout.objects.detailed_arrays(demo)["displacement"]).max() > 0
    bpy.context.view_layer.objects.active = head
    cfg = tiny_checkpoint(tmp_path / "tiny", seed=0)
    s.generate.checkpoint, s.generate.seed, s.generate.psi, s.layout.uv_layout = str(cfg), 5, 0.6, "headcraft"
    assert bpy.ops.headcraft.generate() == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == f"{head.name} Seed 5" and obj["headcraft_seed"] == 5
    disp = ext.layout.objects.detailed_arrays(obj)["displacement"]
    assert np.abs(disp).max() > 0 and np.isfinite(disp).all()
    assert s.layout.map_image is not None and tuple(s.layout.map_image.size) == (64, 64)
    bpy.context.view_layer.objects.active = head
    s.generate.checkpoint = str(tmp_path / "missing.json")
    before = sorted(o.name for o in bpy.data.objects)
    with pytest.raises(RuntimeError, match="not found"):
        bpy.ops.headcraft.generate()
    assert sorted(o.name for o in bpy.data.objects) == before


def test_interpolate_caches_steps_and_the_factor_drives_them(blender, ext, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    cfg = tiny_checkpoint(tmp_path / "tiny", seed=1)
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.generate.seed, s.generate.to_seed, s.generate.interpolate_steps = str(cfg), 1, 2, 3
    s.layout.uv_layout = "headcraft"
    assert bpy.ops.headcraft.interpolate() == {"FINISHED"}
    obj = bpy.context.active_object
    keys = obj.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", "Step 00", "Step 01", "Step 02"]

    def evaluated():
        bpy.context.view_layer.update()
        deps = bpy.context.evaluated_depsgraph_get()
        me = obj.evaluated_get(deps).to_mesh()
        co = ext.meshdata.read_vertices(me).copy()
        obj.evaluated_get(deps).to_mesh_clear()
        return co

    co = lambda k: np.array([p.co for p in keys[k].points])  # noqa: E731
    for factor, want in ((0.0, co("Step 00")), (1.0, co("Step 02")),
                         (0.25, 0.5 * (co("Step 00") + co("Step 01")))):
        obj["headcraft_factor"] = factor
        obj.update_tag()
        np.testing.assert_allclose(evaluated(), want, atol=1e-5)
    assert not np.allclose(co("Step 00"), co("Step 02"))


def test_transfer_hair_and_fit_generator_to_a_detailed_head(blender, ext, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    head = bpy.context.active_object
    cfg = tiny_checkpoint(tmp_path / "tiny", seed=2)
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.generate.seed, s.generate.to_seed, s.generate.fit_steps = str(cfg), 1, 2, 20
    s.layout.uv_layout = "headcraft"
    assert bpy.ops.headcraft.transfer_hair() == {"FINISHED"}
    hair = bpy.context.active_object
    assert hair.name == f"{head.name} Face 1 Hair 2"
    assert bpy.ops.headcraft.fit_generator() == {"FINISHED"}          # on the detailed head just made
    fitted = bpy.context.active_object
    assert fitted.name == f"{hair.name} Generated" and fitted.get("headcraft_role") == "detailed"
    d = ext.layout.objects.detailed_arrays(fitted)["displacement"]
    assert np.isfinite(d).all() and np.abs(d).max() > 0


def test_published_setup_and_a_layout_the_generator_cannot_use(blender, ext, tmp_path):
    """Published HeadCraft sets the checkpoint and the layout 'published' and says what is still
    missing; generating in a layout whose halves do not hold face and scalp is refused unchanged."""
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    s = bpy.context.scene.headcraft
    ckpt = tmp_path / "headcraft.ckpt"
    ckpt.write_bytes(b"")
    assert bpy.ops.headcraft.use_published_model(filepath=str(ckpt)) == {"FINISHED"}
    assert s.generate.checkpoint == str(ckpt) and s.layout.uv_layout == "published"
    with pytest.raises(RuntimeError, match="ckpt"):
        bpy.ops.headcraft.use_published_model(filepath=str(tmp_path / "model.json"))
    s.generate.checkpoint, s.layout.uv_layout = "", "standard"
    before = sorted(o.name for o in bpy.data.objects)
    with pytest.raises(RuntimeError, match="left half"):
        bpy.ops.headcraft.generate()
    assert sorted(o.name for o in bpy.data.objects) == before


def test_interpolate_and_transfer_hair_between_two_detailed_heads(blender, ext, tmp_path):
    """Two detailed heads selected (the active one is the source): Interpolate Heads makes one
    object whose ends are the generator's versions of the two heads; Transfer Hair keeps the
    source's face and takes the driver's hair."""
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    head = bpy.context.active_object
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.layout.uv_layout, s.generate.fit_steps = "", "headcraft", 20
    made = []
    for seed in (1, 2):
        bpy.context.view_layer.objects.active = head
        s.generate.seed = seed
        assert bpy.ops.headcraft.generate() == {"FINISHED"}
        made.append(bpy.context.active_object)
    source, driver = made
    bpy.ops.object.select_all(action="DESELECT")
    assert not bpy.ops.headcraft.interpolate_heads.poll()
    source.select_set(True)
    driver.select_set(True)
    bpy.context.view_layer.objects.active = source
    s.generate.interpolate_steps = 3
    assert bpy.ops.headcraft.interpolate_heads() == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == f"{source.name} to {driver.name}" and "headcraft_factor" in obj
    assert [k.name for k in obj.data.shape_keys.key_blocks] == ["Basis", "Step 00", "Step 01", "Step 02"]
    bpy.ops.object.select_all(action="DESELECT")
    source.select_set(True)
    driver.select_set(True)
    bpy.context.view_layer.objects.active = source
    s.generate.hair_source = "MAP"
    assert bpy.ops.headcraft.transfer_hair_heads() == {"FINISHED"}
    out = bpy.context.active_object
    assert out.name == f"{source.name} Hair of {driver.name}" and out.get("headcraft_head") == head.name
    d = {o: ext.layout.objects.detailed_arrays(o)["displacement"] for o in (out, source, driver)}
    x = ext.layout.objects.detailed_arrays(out)["base"][:, 0]
    assert np.isfinite(d[out]).all()
    # the result differs from both: the face of one, the hair of the other
    assert not np.allclose(d[out], d[source], atol=1e-5) and not np.allclose(d[out], d[driver], atol=1e-5)
    assert x.shape[0] == d[out].shape[0]
