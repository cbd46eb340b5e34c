"""Images HeadCraft makes survive saving and reopening the .blend (issue 15): packed by
default, or file-backed in the maps folder; materials keep using them."""
import numpy as np
import pytest

from backend_side import tiny_checkpoint
from test_maps import _detailed_with_scan


def _pixels(img):
    px = np.empty(len(img.pixels), np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(img.size[1], img.size[0], -1)[..., :3]


def test_unsaved_file_writes_to_the_user_folder(blender, ext, tmp_path, monkeypatch):
    """'//' folders of an unsaved file mean the extension's user folder, never the working
    directory (which may be read-only, or anywhere)."""
    bpy = blender
    monkeypatch.chdir(tmp_path)
    assert not bpy.data.filepath
    head, detailed, scan = _detailed_with_scan(bpy, ext, tmp_path)
    s = bpy.context.scene.headcraft
    s.layout.folder, s.layout.exr, s.layout.storage = "//headcraft_maps/", True, "FILE"
    bpy.context.view_layer.objects.active = detailed
    assert bpy.ops.headcraft.bake_map() == {"FINISHED"}
    folder = ext.runtime.user_dir() / "maps" / "headcraft_maps"
    written = sorted(p.suffix for p in folder.iterdir())
    assert ".exr" in written and not (tmp_path / "headcraft_maps").exists()
    assert bpy.path.abspath(s.layout.map_image.filepath).startswith(str(folder))


@pytest.mark.parametrize("storage", ["PACK", "FILE"])
def test_images_survive_save_and_reopen(blender, ext, tmp_path, storage):
    bpy = blender
    s = bpy.context.scene.headcraft
    head, detailed, scan = _detailed_with_scan(bpy, ext, tmp_path)
    s.layout.storage, s.layout.folder = storage, str(tmp_path / "maps")
    s.layout.exr = s.layout.png16 = s.layout.npy = False
    head_name = head.name
    # Bake Scan Color: colours from the scan's colour attribute
    co = ext.meshdata.read_vertices(scan.data)
    rgb = (co - co.min(0)) / np.ptp(co, 0)
    col = scan.data.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
    col.data.foreach_set("color_srgb", np.concatenate([rgb, np.ones((len(rgb), 1))], 1).astype(np.float32).ravel())
    scan.data.color_attributes.active_color = col
    bpy.context.view_layer.objects.active = detailed
    assert bpy.ops.headcraft.bake_colour() == {"FINISHED"}
    # Generate (a map image), Bake Map of the generated head, Convert Map of that bake
    bpy.context.view_layer.objects.active = head
    s.generate.checkpoint, s.generate.seed = tiny_checkpoint(tmp_path / "tiny", seed=0), 6
    s.layout.uv_layout = "headcraft"
    assert bpy.ops.headcraft.generate() == {"FINISHED"}
    generated = bpy.context.active_object
    generated_map = s.layout.map_image.name
    s.layout.size = "256"
    assert bpy.ops.headcraft.bake_map() == {"FINISHED"}
    baked = s.layout.map_image.name
    s.layout.uv_layout = "standard"
    assert bpy.ops.headcraft.convert_map() == {"FINISHED"}
    converted = s.layout.map_image.name
    # a Displacement Material on the low-res head using the baked map
    s.layout.uv_layout = "headcraft"
    s.layout.map_image = bpy.data.images[baked]
    bpy.context.view_layer.objects.active = head
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    assert bpy.ops.headcraft.add_displacement_material() == {"FINISHED"}
    colour = f"{detailed.name} headcraft color"
    names = [generated_map, baked, converted, colour]
    assert len(set(names)) == 4 and generated.name != head_name
    before = {n: _pixels(bpy.data.images[n]) for n in names}
    for n in (generated_map, baked, converted):
        assert np.abs(before[n]).max() > 1e-3, f"{n} should hold a non-zero map"
    materials = {m.name: sorted(n.image.name for n in m.node_tree.nodes if n.type == "TEX_IMAGE" and n.image)
                 for m in bpy.data.materials if m.get("headcraft_material")}
    assert sorted(sum(materials.values(), [])) == sorted([baked, colour])

    path = tmp_path / "session.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))

    for n in names:
        img = bpy.data.images[n]
        if storage == "PACK":
            assert img.packed_file is not None, n
        else:
            assert img.packed_file is None and (tmp_path / "maps").is_dir(), n
            assert bpy.path.abspath(img.filepath).startswith(str(tmp_path / "maps")), img.filepath
        np.testing.assert_array_equal(_pixels(img), before[n], err_msg=n)
    after = {m.name: sorted(n.image.name for n in m.node_tree.nodes if n.type == "TEX_IMAGE" and n.image)
             for m in bpy.data.materials if m.get("headcraft_material")}
    assert after == materials
    assert bpy.context.scene.headcraft.layout.map_image.name == baked


def test_roles_keep_the_values_saved_files_hold(blender, ext):
    """Objects in saved .blend files carry these role strings: they never change."""
    Role = ext.roles.Role
    assert {r.name: r.value for r in Role} == {
        "HEAD": "head", "RIG": "rig", "DETAILED": "detailed", "LANDMARKS": "landmarks",
        "ANIMATED": "animated", "BAKED": "baked"}
    obj = blender.data.objects.new("Marked", None)
    ext.roles.set_role(obj, Role.RIG)
    assert obj["headcraft_role"] == "rig" and ext.roles.role_of(obj) is Role.RIG
    obj["headcraft_role"] = "not a role"
    assert ext.roles.role_of(obj) is None and ext.roles.has_role(obj)


def test_each_test_starts_from_a_factory_fresh_file(blender, ext, fresh_start):
    """What the `ext` fixture does before every test puts back data, scene settings, the
    extension's preferences and the sidebar's messages."""
    bpy = blender
    scene = bpy.context.scene
    settings = (scene.frame_end, scene.render.engine, scene.render.resolution_x, scene.headcraft.generate.seed,
                scene.headcraft.layout.uv_layout)
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    python, flame = prefs.python_path, prefs.flame_model_path
    mesh = bpy.data.meshes.new("Leftover")
    scene.collection.objects.link(bpy.data.objects.new("Leftover", mesh))
    bpy.data.images.new("Leftover", 4, 4)
    bpy.data.materials.new("Leftover")
    bpy.data.actions.new("Leftover")
    bpy.data.texts.new("Leftover")
    scene.frame_end, scene.render.engine, scene.render.resolution_x = 17, "CYCLES", 123
    scene.headcraft.generate.seed, scene.headcraft.layout.uv_layout = 5, "standard"
    prefs.python_path, prefs.flame_model_path = "/elsewhere/python", "/elsewhere/generic_model.pkl"
    ext.runtime.notify("left over")

    fresh_start()
    for kind in ("objects", "meshes", "images", "materials", "actions", "texts", "worlds", "collections"):
        assert not len(getattr(bpy.data, kind)), kind
    scene = bpy.context.scene
    assert (scene.frame_end, scene.render.engine, scene.render.resolution_x, scene.headcraft.generate.seed,
            scene.headcraft.layout.uv_layout) == settings
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    assert (prefs.python_path, prefs.flame_model_path) == (python, flame)
    assert not ext.runtime.STATE.messages


# Settings as a file saved before the per-capability groups holds them (flat names; an enum as
# its item's index in the old order), and where each must arrive.
OLD_FLAT = {"model": 1, "num_shape": 12, "random_identity": False, "fit_preset": 1, "fit_landmarks": 1,
            "fit_partial": 2, "fit_units": 9, "fit_steps": 300, "fit_custom_weights": True, "fit_w1_edge": 2.5,
            "fit_wc_jaw_side": 0.25, "map_layout": "standard", "map_layouts": "headcraft,standard",
            "map_size": 3, "map_space": 1, "map_storage": 1, "map_exr": False, "map_png16": 1,
            "gen_checkpoint": "//gen.json", "gen_seed": 42, "gen_psi": 0.5, "gen_noise": 1, "gen_mix_from": 4,
            "interp_seed_b": 7, "interp_steps": 5, "fit_latent_steps": 200, "anim_scene_range": False,
            "anim_frame_end": 90, "render_engine": 2, "render_resolution": [640, 480], "render_contact_count": 6,
            "render_folder": "//frames/"}
NEW_VALUES = {("head", "model"): "FLAME", ("head", "num_shape"): 12, ("head", "random_identity"): False,
              ("fit", "preset"): "PREVIEW", ("fit", "landmarks"): "HAND", ("fit", "scan_kind"): "SPARSE",
              ("fit", "units"): "AUTO",      # index 9 is past the old items: dropped, the default stays
              ("fit", "steps"): 300, ("fit", "custom_weights"): True, ("fit", "stage1_edge"): 2.5,
              ("fit", "coarse_jaw_side"): 0.25, ("layout", "uv_layout"): "standard",
              ("layout", "known_layouts"): "headcraft,standard", ("layout", "size"): "2048",
              ("layout", "space"): "TANGENT", ("layout", "storage"): "FILE", ("layout", "exr"): False,
              ("layout", "png16"): True, ("generate", "checkpoint"): "//gen.json", ("generate", "seed"): 42,
              ("generate", "psi"): 0.5, ("generate", "noise"): "RANDOM", ("generate", "mix_from"): 4,
              ("generate", "to_seed"): 7, ("generate", "interpolate_steps"): 5, ("generate", "fit_steps"): 200,
              ("animate", "scene_range"): False, ("animate", "frame_end"): 90, ("animate", "engine"): "WORKBENCH",
              ("animate", "resolution"): (640, 480), ("animate", "sheet_frames"): 6,
              ("animate", "output_folder"): "//frames/"}


def _settings(scene):
    return {(g, n): tuple(getattr(getattr(scene.headcraft, g), n)) if n == "resolution"
            else getattr(getattr(scene.headcraft, g), n) for g, n in NEW_VALUES}


def test_files_with_the_old_flat_settings_keep_them(blender, ext, tmp_path):
    """A .blend saved by the version with one flat settings group: on loading, every value
    moves into its capability's group and the old names are deleted."""
    bpy = blender
    scene = bpy.context.scene
    scan = bpy.data.objects.new("Old Scan", bpy.data.meshes.new("Old Scan"))
    scene.collection.objects.link(scan)
    img = bpy.data.images.new("Old Map", 8, 8, float_buffer=True)
    img.use_fake_user = True
    old = scene.headcraft               # the registered group keeps unknown names as ID properties
    for name, value in {**OLD_FLAT, "fit_scan": scan, "map_image": img}.items():
        old[name] = value
    assert old["fit_preset"] == 1 and old["fit_scan"] == scan and old.fit.preset == "PAPER"
    blender5 = hasattr(scene, "bl_system_properties_get")
    if blender5:     # Blender 5 keeps a copy of an older file's add-on data among the custom properties
        scene["headcraft"] = {"gen_seed": 3, "map_size": 0}
    path = tmp_path / "old.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_factory_startup=True, use_empty=True)

    bpy.ops.wm.open_mainfile(filepath=str(path))          # load_post moves them
    scene = bpy.context.scene
    got = _settings(scene)
    for key, want in NEW_VALUES.items():
        assert got[key] == (pytest.approx(want) if isinstance(want, float) else want), key
    assert scene.headcraft.fit.scan.name == "Old Scan" and scene.headcraft.layout.map_image.name == "Old Map"
    assert not set(ext.old_settings.RENAMED) & set(scene.headcraft.keys()), "old names left behind"
    if blender5:
        assert "headcraft" not in scene.keys()            # the copy held only old names: gone
    # saved again, nothing comes back
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert _settings(bpy.context.scene) == got
    assert not set(ext.old_settings.RENAMED) & set(bpy.context.scene.headcraft.keys())


def test_the_open_file_is_migrated_when_the_extension_is_enabled(blender, ext):
    """register() runs the same move for the file already open (as enabling the extension does)."""
    bpy = blender
    scene = bpy.context.scene
    scene.headcraft["gen_seed"], scene.headcraft["map_space"] = 11, 1
    assert ext.old_settings.migrate(scene) == ["gen_seed", "map_space"]
    assert (scene.headcraft.generate.seed, scene.headcraft.layout.space) == (11, "TANGENT")
    assert "gen_seed" not in scene.headcraft.keys() and ext.old_settings.migrate(scene) == []
    assert ext.old_settings.on_load in bpy.app.handlers.load_post


def test_every_old_name_has_a_place(blender, ext):
    """Each old flat name maps to a registered setting (enum items included), and every
    setting the groups hold had an old name: nothing of an old file is lost."""
    groups = blender.context.scene.headcraft
    old = ext.old_settings
    targets = set(old.RENAMED.values())
    for name, (group, new) in old.RENAMED.items():
        rna = getattr(groups, group).bl_rna.properties
        assert new in rna, name
        if name in old.OLD_ENUM_ITEMS:
            assert set(old.OLD_ENUM_ITEMS[name]) <= set(rna[new].enum_items.keys()), name
    for group in ("head", "fit", "layout", "generate", "animate"):
        for prop in getattr(groups, group).bl_rna.properties:
            if prop.identifier not in ("rna_type", "name") and (group, prop.identifier) not in old.ADDED:
                assert (group, prop.identifier) in targets, (group, prop.identifier)
