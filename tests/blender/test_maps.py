"""Layouts, baking and applying maps from Blender (issue 4), with the real bpy and backend."""
import numpy as np
import pytest

from headcraft_backend.layout import formats


def _add_head(bpy):
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=4, num_expr=2) == {"FINISHED"}
    head = bpy.context.active_object
    head.data.shape_keys.key_blocks["Shape000"].value = 1.5
    return head


def _smooth_map(size, seed=0):
    """A smooth map in HeadCraft units (object space, ~0.1 unit = 0.8 mm)."""
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(seed)
    k = rng.uniform(2, 6, (3, 2))
    return np.stack([0.1 * np.sin(2 * np.pi * (k[c, 0] * x + k[c, 1] * y)) for c in range(3)], -1).astype(np.float32)


def _snapshot(bpy):
    return sorted(o.name for o in bpy.data.objects), sorted(i.name for i in bpy.data.images)


def test_show_and_save_layouts(blender, ext, tmp_path):
    bpy = blender
    head = _add_head(bpy)
    s = bpy.context.scene.headcraft
    s.layout.uv_layout = "headcraft"
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    layer = head.data.uv_layers.active
    # active for editing; the render UV map stays the head's own unless asked for
    assert layer.name == "HeadCraft headcraft" and not layer.active_render
    assert head.data.uv_layers["UVMap"].active_render
    assert bpy.ops.headcraft.show_layout(use_for_render=True) == {"FINISHED"}
    layer = head.data.uv_layers.active
    assert layer.name == "HeadCraft headcraft" and layer.active_render
    uv = ext.layout.objects.read_uv_map(head)
    face = uv[:, :, 0] < 0.5
    assert 0.2 < face.mean() < 0.8 and (uv >= 0).all() and (uv <= 1).all()
    assert "headcraft" in s.layout.known_layouts and "standard" in s.layout.known_layouts
    # re-unwrap (here: shrink towards the corner) and save under a name; it comes back identical
    layer.uv.foreach_set("vector", (uv * 0.5).ravel())
    assert bpy.ops.headcraft.save_layout(name="half") == {"FINISHED"}
    assert s.layout.uv_layout == "half" and "half" in s.layout.known_layouts.split(",")
    s.layout.uv_layout = "standard"
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    s.layout.uv_layout = "half"
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    np.testing.assert_allclose(ext.layout.objects.read_uv_map(head), uv * 0.5, atol=1e-6)
    assert {"HeadCraft standard", "HeadCraft half", "HeadCraft headcraft"} <= set(head.data.uv_layers.keys())


def test_import_layout_from_obj_and_npy(blender, ext, tmp_path):
    """Import Layout: the file's bytes go to the backend, the layout becomes the chosen one and
    shows identical UVs; a file of another topology changes nothing and says why."""
    bpy = blender
    head = _add_head(bpy)
    s = bpy.context.scene.headcraft.layout
    s.uv_layout = "headcraft"
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    uv = ext.layout.objects.read_uv_map(head)
    faces = np.array([p.vertices[:] for p in head.data.polygons]) + 1
    corners = np.arange(1, 3 * len(faces) + 1).reshape(-1, 3)
    obj = tmp_path / "authors layout.obj"
    obj.write_text("".join(f"vt {u:.9g} {v:.9g}\n" for u, v in uv.reshape(-1, 2))
                   + "".join(f"f {a}/{x} {b}/{y} {c}/{z}\n" for (a, b, c), (x, y, z) in zip(faces, corners)))
    np.save(tmp_path / "mirrored.npy", np.stack([1 - uv[..., 0], uv[..., 1]], -1)[:, ::-1])
    assert bpy.ops.headcraft.import_layout(filepath=str(obj), name="published") == {"FINISHED"}
    assert s.uv_layout == "published" and "published" in s.known_layouts.split(",")
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    np.testing.assert_allclose(ext.layout.objects.read_uv_map(head), uv, atol=1e-6)
    assert bpy.ops.headcraft.import_layout(filepath=str(tmp_path / "mirrored.npy")) == {"FINISHED"}
    assert s.uv_layout == "mirrored"
    (tmp_path / "other.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/1\n")
    before = s.known_layouts
    with pytest.raises(RuntimeError, match="1 triangles"):
        bpy.ops.headcraft.import_layout(filepath=str(tmp_path / "other.obj"))
    assert s.uv_layout == "mirrored" and s.known_layouts == before


def test_apply_bake_and_material(blender, ext, tmp_path):
    bpy = blender
    head = _add_head(bpy)
    s = bpy.context.scene.headcraft
    s.layout.uv_layout, s.layout.space = "headcraft", "OBJECT"
    m = _smooth_map(512)
    exr = formats.write(m, tmp_path, "given", "exr")[0]
    s.layout.map_file = str(exr)
    assert bpy.ops.headcraft.apply_map() == {"FINISHED"}
    detailed = bpy.context.active_object
    assert detailed.get("headcraft_role") == "detailed" and detailed.name == f"{head.name} Detailed"
    assert detailed.data.uv_layers[0].name == "HeadCraft headcraft"
    disp = ext.layout.objects.detailed_arrays(detailed)["displacement"] * 120     # HeadCraft units
    assert np.abs(disp).max() > 0.05 and np.abs(disp).max() < 0.11
    # bake it back: the image holds the map where the layout has charts
    s.layout.map_file = ""
    s.layout.size, s.layout.exr, s.layout.png16 = "512", True, True
    s.layout.folder = str(tmp_path / "out")
    assert bpy.ops.headcraft.bake_map() == {"FINISHED"}
    img = s.layout.map_image
    assert img is not None and img.colorspace_settings.name == "Non-Color" and tuple(img.size) == (512, 512)
    got = ext.layout.objects.image_map(img)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 4 and any(n.endswith(".exr") for n in written)
    from_file = formats.read(tmp_path / "out" / next(n for n in written if n.endswith(".exr")))
    np.testing.assert_allclose(from_file, got, atol=1e-6)      # the file and the image agree
    # inside the charts, beyond the seam blend band (10 texels), the baked map is the applied one
    from scipy.ndimage import binary_erosion
    inner = binary_erosion(got.any(-1), iterations=12)
    err = np.abs(got - m)[inner].max(-1)
    assert inner.mean() > 0.1 and np.median(err) < 2e-3 and np.percentile(err, 95) < 0.02, np.percentile(err, 95)
    # the baked map converted into the standard layout becomes a new image
    s.layout.uv_layout = "standard"
    assert bpy.ops.headcraft.convert_map() == {"FINISHED"}
    conv = s.layout.map_image
    assert conv.name == f"{img.name} -> standard" and conv["headcraft_layout"] == "standard"
    assert ext.layout.objects.image_map(conv).any()
    s.layout.map_image = img
    # a Cycles material on the low-res head that displaces it by the map
    bpy.context.view_layer.objects.active = head
    s.layout.uv_layout = "headcraft"
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    assert bpy.ops.headcraft.add_displacement_material() == {"FINISHED"}
    mat = head.data.materials[0]
    disp_node = next(n for n in mat.node_tree.nodes if n.type == "VECTOR_DISPLACEMENT")
    assert disp_node.space == "OBJECT" and abs(disp_node.inputs["Scale"].default_value - 1 / 120) < 1e-9
    tex = next(n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE")
    assert tex.image == img and any(md.type == "SUBSURF" for md in head.modifiers)


def test_bad_maps_change_nothing(blender, ext, tmp_path):
    bpy = blender
    _add_head(bpy)
    s = bpy.context.scene.headcraft
    (tmp_path / "junk.exr").write_bytes(b"not an exr at all")
    for path, what in ((tmp_path / "junk.exr", "not a readable"), (tmp_path / "missing.exr", "cannot read")):
        s.layout.map_file = str(path)
        before = _snapshot(bpy)
        with pytest.raises(RuntimeError, match=what):
            bpy.ops.headcraft.apply_map()
        assert _snapshot(bpy) == before
    # baking needs a detailed head; the material needs an image
    s.layout.map_file, s.layout.map_image = "", None
    assert not bpy.ops.headcraft.bake_map.poll()
    with pytest.raises(RuntimeError, match="map image"):
        bpy.ops.headcraft.add_displacement_material()


def _detailed_with_scan(bpy, ext, tmp_path):
    """A detailed head (Apply Map with a zero map) and a 'scan' that is a copy of it, moved like
    the detailed head, for colour transfer."""
    head = _add_head(bpy)
    s = bpy.context.scene.headcraft
    s.layout.map_file = str(formats.write(np.zeros((256, 256, 3), np.float32), tmp_path, "zero", "exr")[0])
    assert bpy.ops.headcraft.apply_map() == {"FINISHED"}
    detailed = bpy.context.active_object
    scan = detailed.copy()
    scan.data = detailed.data.copy()
    scan.name = "Scan"
    for key in ("headcraft_role", "headcraft_head", "headcraft_map"):
        scan.pop(key, None)
    bpy.context.scene.collection.objects.link(scan)
    detailed["headcraft_scan"] = scan.name
    s.layout.map_file, s.layout.size, s.layout.folder = "", "256", str(tmp_path / "out")
    return head, detailed, scan


def test_bake_scan_colour_from_attribute_and_texture(blender, ext, tmp_path):
    bpy = blender
    head, detailed, scan = _detailed_with_scan(bpy, ext, tmp_path)
    co = ext.meshdata.read_vertices(scan.data)
    rgb = (co - co.min(0)) / np.ptp(co, 0)
    col = scan.data.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([rgb, np.ones((len(rgb), 1))], 1).astype(np.float32)
    col.data.foreach_set("color_srgb", rgba.ravel())
    scan.data.color_attributes.active_color = col
    bpy.context.view_layer.objects.active = detailed
    assert bpy.ops.headcraft.bake_colour() == {"FINISHED"}
    img = bpy.data.images[f"{detailed.name} headcraft color"]
    px = np.array(img.pixels[:]).reshape(256, 256, 4)[::-1, :, :3]
    assert px.max() > 0.9 and (px > 0).any(-1).mean() > 0.2
    mat = detailed.data.materials[0]
    assert mat.name == f"{detailed.name} HeadCraft Color"
    assert any(n.type == "TEX_IMAGE" and n.image == img for n in mat.node_tree.nodes)
    assert "HeadCraft headcraft" in detailed.data.uv_layers
    assert (tmp_path / "out").is_dir() and any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())
    # the same colours through an image texture on the scan's UVs
    scan.data.color_attributes.remove(col)
    tex = bpy.data.images.new("ScanTex", 64, 64)
    tex.pixels.foreach_set(np.tile([0.2, 0.6, 0.4, 1.0], 64 * 64).astype(np.float32))
    m = bpy.data.materials.new("ScanMat")
    m.use_nodes = True
    node = m.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = tex
    scan.data.materials.append(m)
    assert bpy.ops.headcraft.bake_colour() == {"FINISHED"}
    px = np.array(img.pixels[:]).reshape(256, 256, 4)[::-1, :, :3]
    covered = px.any(-1)
    np.testing.assert_allclose(px[covered].mean(0), [0.2, 0.6, 0.4], atol=0.01)


def test_colour_bake_without_colours_or_scan_changes_nothing(blender, ext, tmp_path):
    bpy = blender
    head, detailed, scan = _detailed_with_scan(bpy, ext, tmp_path)
    bpy.context.view_layer.objects.active = detailed
    before = _snapshot(bpy)
    with pytest.raises(RuntimeError, match="no colors"):
        bpy.ops.headcraft.bake_colour()
    detailed["headcraft_scan"] = "Gone"
    with pytest.raises(RuntimeError, match="not in this file"):
        bpy.ops.headcraft.bake_colour()
    assert _snapshot(bpy) == before and not detailed.data.materials


def test_displacement_material_moves_the_render(blender, ext):
    """Cycles (CPU, 64^2, true displacement): an object-space map of +6 units (5 cm) along the
    model's up axis lifts the head's silhouette by ~4 rows of 12.5 mm."""
    bpy = blender
    head = _add_head(bpy)
    assert bpy.ops.headcraft.show_layout() == {"FINISHED"}
    m = np.zeros((128, 128, 3), np.float32)
    m[..., 1] = 6.0
    img = ext.layout.objects.map_image("Lift", m)
    img["headcraft_space"], img["headcraft_layout"] = "object", "headcraft"
    sc = bpy.context.scene
    sc.headcraft.layout.map_image = img
    sc.render.engine, sc.cycles.samples, sc.cycles.device = "CYCLES", 1, "CPU"
    sc.render.resolution_x = sc.render.resolution_y = 64
    sc.render.film_transparent = True
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    cam.data.type, cam.data.ortho_scale = "ORTHO", 0.8
    c = ext.meshdata.read_vertices(head.data).mean(0)
    cam.location, cam.rotation_euler = (c[0], -1.0, c[2]), (np.pi / 2, 0, 0)

    def silhouette_rows():
        bpy.ops.render.render()
        res = bpy.data.images["Render Result"]
        path = str(__import__("tempfile").mkdtemp()) + "/r.png"
        sc.render.image_settings.color_mode = "RGBA"
        res.save_render(path)
        a = np.array(bpy.data.images.load(path).pixels[:]).reshape(64, 64, 4)[..., 3]
        rows = np.nonzero(a.max(1) > 0.5)[0]         # bottom-up
        return rows.min(), rows.max()

    lo0, hi0 = silhouette_rows()
    assert bpy.ops.headcraft.add_displacement_material() == {"FINISHED"}
    head.modifiers["HeadCraft Subdivision"].render_levels = 1
    lo1, hi1 = silhouette_rows()
    assert 3 <= lo1 - lo0 <= 5 and 3 <= hi1 - hi0 <= 5, (lo0, hi0, lo1, hi1)
