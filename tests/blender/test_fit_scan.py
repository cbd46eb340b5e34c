"""Fit Scan in Blender: a scan object in, fitted and detailed heads out; the scan untouched."""
import json

import numpy as np
import pytest

from backend_side import random_openhead, run
from recording_layout import draw


@pytest.fixture
def scan(blender, ext, tmp_path):
    """An OpenHead with a random identity, in millimetres, rotated: what an import gives."""
    bpy = blender
    v, faces = random_openhead(tmp_path / "scan.npz")
    me = ext.meshdata.new_mesh("Scan", ext.meshdata.model_to_blender(v) * 1000.0, faces)
    obj = bpy.data.objects.new("Scan", me)
    bpy.context.scene.collection.objects.link(obj)
    obj.rotation_euler = (0.0, 0.0, 0.2)
    obj.location = (100.0, 0.0, 50.0)
    bpy.context.view_layer.update()
    return obj


def _co(obj):
    return np.array([obj.matrix_world @ v.co for v in obj.data.vertices])


def _surface_samples(obj, n=300_000, seed=0):
    """Points spread over a mesh's triangles (world space), for distances to its surface."""
    co = _co(obj)
    tri = np.array([p.vertices[:] for p in obj.data.polygons])
    rng = np.random.default_rng(seed)
    t = co[tri[rng.integers(0, len(tri), n)]]
    w = rng.dirichlet([1, 1, 1], n)[:, :, None]
    return (t * w).sum(1)


def test_detect_edit_and_fit(blender, ext, scan):
    bpy = blender
    s = bpy.context.scene.headcraft
    s.fit.scan = scan
    s.fit.preset, s.fit.steps, s.fit.landmarks = "PREVIEW", 40, "AUTO"
    before = _co(scan)
    assert bpy.ops.headcraft.detect_landmarks() == {"FINISHED"}
    lmk = bpy.data.objects["Scan Landmarks"]
    assert len(lmk.data.vertices) >= 90
    # landmarks lie on the scan surface (mm)
    from scipy.spatial import cKDTree
    d, _ = cKDTree(_co(scan)).query(_co(lmk))
    assert np.median(d) < 3.0
    # the directions the face was found with go to Fit Scan (no second search)
    found = ext.fit.operators.found_directions(scan)
    assert set(found) == {"up", "forward"} and all(len(v) == 3 for v in found.values())
    s.fit.landmarks = "HAND"
    calls = draw(ext.fit.panel.VIEW3D_PT_headcraft_fit, bpy.context, real=object())
    assert ("operator", "headcraft.fit_scan") in calls
    assert bpy.ops.headcraft.fit_scan() == {"FINISHED"}
    np.testing.assert_array_equal(_co(scan), before)           # the scan is never modified
    detailed = bpy.data.objects["Scan Detailed"]
    fitted = bpy.data.objects["Scan Fit"]
    # beside the scan (its collection), not in a collection of HeadCraft's own
    assert detailed.users_collection[0] == fitted.users_collection[0] == scan.users_collection[0]
    assert fitted.parent.type == "ARMATURE"
    assert len(detailed.data.vertices) > 100_000
    for name in ("headcraft_displacement", "headcraft_error_mm", "HeadCraft Error"):
        assert name in detailed.data.attributes
    report = json.loads(detailed["headcraft_fit_report"])
    assert report["face"]["result_to_scan_median"] < 2.0     # mm, a 40-step preview
    # both heads overlay the scan (in mm, rotated, moved): fitted low-res vertices near it
    deps = bpy.context.evaluated_depsgraph_get()
    ev = fitted.evaluated_get(deps)
    fit_co = np.array([fitted.matrix_world @ v.co for v in ev.data.vertices])
    d, _ = cKDTree(_co(scan)).query(fit_co)
    assert np.median(d) < 2.0
    d, _ = cKDTree(_surface_samples(scan)).query(_co(detailed))
    assert np.median(d) < 1.0
    calls = draw(ext.fit.panel.VIEW3D_PT_headcraft_fit, bpy.context, real=object())
    assert any(c[0] == "label" and c[1].startswith("face:") for c in calls)


def test_fit_without_scan_or_with_broken_scan(blender, ext):
    bpy = blender
    s = bpy.context.scene.headcraft
    s.fit.scan = None
    assert not bpy.ops.headcraft.fit_scan.poll()
    me = bpy.data.meshes.new("Tiny")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Tiny", me)
    bpy.context.scene.collection.objects.link(obj)
    s.fit.scan, s.fit.landmarks = obj, "AUTO"
    n = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="usable points"):
        bpy.ops.headcraft.fit_scan()
    assert len(bpy.data.objects) == n


def test_units_and_weights_reach_the_request(blender, ext):
    """The panel's units and weights become the request's settings; defaults are the backend's."""
    bpy = blender
    ops = ext.fit.operators
    scene = bpy.context.scene
    s = scene.headcraft
    s.fit.steps, s.fit.units, s.fit.custom_weights = 0, "AUTO", False      # whatever earlier tests set
    backend = run("""
import dataclasses
from headcraft_backend.fit.coarse import CoarseSettings
from headcraft_backend.fit.register import preset
paper = preset("paper")
result = {"stage1": dataclasses.asdict(paper.stage1), "stage2": dataclasses.asdict(paper.stage2),
          "coarse": dataclasses.asdict(CoarseSettings())}
""")
    for prop, section, field, default, _ in ops.WEIGHTS:
        assert getattr(s.fit, prop) == pytest.approx(backend[section][field]), prop
    assert ops.fit_settings(scene) == {}                    # estimate the scale, preset weights
    s.fit.units = "MM"
    assert ops.fit_settings(scene) == {"coarse": {"scale": 1000.0}}
    s.fit.units, scene.unit_settings.scale_length = "SCENE", 0.01    # 1 Blender unit = 1 cm
    assert ops.fit_settings(scene)["coarse"]["scale"] == pytest.approx(100.0)
    s.fit.custom_weights, s.fit.stage1_edge, s.fit.steps = True, 8e5, 30
    out = ops.fit_settings(scene)
    assert out["stage1"]["w_edge"] == 8e5 and out["stage1"]["steps"] == out["stage2"]["steps"] == 30
    assert out["coarse"]["w_shape"] == pytest.approx(1e-3)
    w_edge, scale = run("""
from headcraft_backend.fit.jobs import options_from_params
opts = options_from_params(params)                          # the backend takes every key
result = [opts.registration.stage1.w_edge, opts.coarse.scale]
""", params=out)
    assert w_edge == 8e5 and scale == pytest.approx(100.0)
    calls = draw(ext.fit.panel.VIEW3D_PT_headcraft_fit_weights, bpy.context, real=object())
    assert sum(c[0] == "prop" for c in calls) == len(ops.WEIGHTS)
    s.fit.steps, s.fit.units, s.fit.custom_weights, scene.unit_settings.scale_length = 0, "AUTO", False, 1.0


def test_scan_colours_reach_the_request_from_a_texture_or_an_attribute(blender, ext):
    """The landmark renders get the scan's look: its image texture (sampled at the UVs, as an
    imported photogrammetry scan has it) or its colour attribute, in display sRGB."""
    bpy = blender
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], [[0.1, 0.1], [0.9, 0.9], [0.1, 0.9]]], np.float32)
    obj = bpy.data.objects.new("Textured", ext.meshdata.new_mesh("Textured", verts, faces, uv))
    bpy.context.scene.collection.objects.link(obj)
    assert "colors" not in ext.fit.objects.scan_arrays(obj)
    tex = bpy.data.images.new("ScanTex", 4, 4)
    px = np.zeros((4, 4, 4), np.float32)
    px[..., 3] = 1
    px[:2, :, 0] = 1.0            # bottom half red, top half blue (rows from the bottom)
    px[2:, :, 2] = 1.0
    tex.pixels.foreach_set(px.ravel())
    mat = bpy.data.materials.new("ScanMat")
    mat.use_nodes = True
    mat.node_tree.nodes.new("ShaderNodeTexImage").image = tex
    obj.data.materials.append(mat)
    colours = ext.fit.objects.scan_arrays(obj)["colors"]
    np.testing.assert_allclose(colours[[0, 1]], [[1, 0, 0]] * 2, atol=1e-6)   # v = 0.1
    np.testing.assert_allclose(colours[[2, 3]], [[0, 0, 1]] * 2, atol=1e-6)   # v = 0.9
    col = obj.data.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
    col.data.foreach_set("color_srgb", np.tile([0.2, 0.6, 0.4, 1.0], 4).astype(np.float32))
    obj.data.color_attributes.active_color = col
    np.testing.assert_allclose(ext.fit.objects.scan_arrays(obj)["colors"], [[0.2, 0.6, 0.4]] * 4, atol=1e-4)
