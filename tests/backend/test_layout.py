"""UV layouts, baking, seam processing, sampling and map files (issue 4), on real model data."""
import numpy as np
import pytest
import torch
from PIL import Image

import fixtures.flame_files as ff
from headcraft_backend.head.dense import DenseRebuild, dense_template
from headcraft_backend.head.flame import load_flame
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.layout import formats, texels
from headcraft_backend.layout.unwrap import unwrap_layout
from headcraft_backend.layout.store import dense_uv, get_layout, list_layouts, save_custom_layout
from headcraft_backend.errors import UserError


@pytest.fixture(scope="module")
def data():
    return load_model_data({"model": "openhead"})


@pytest.fixture(scope="module")
def layout(data, tmp_path_factory):
    return get_layout(data, cache_dir=tmp_path_factory.mktemp("layouts"))


@pytest.fixture(scope="module")
def dense(data):
    return dense_template(data)


@pytest.fixture(scope="module")
def dense_mesh(data, dense, layout):
    """Dense vertices of the neutral head (metres), faces, and per-corner UVs of the layout."""
    v = DenseRebuild(dense, data.faces)(torch.from_numpy(data.v_template)[None])[0].numpy()
    return v.astype(np.float64), dense.faces.astype(np.int64), dense_uv(dense.corner_tri, dense.corner_bary, layout.uv)


@pytest.fixture(scope="module")
def ops1024(data, dense, dense_mesh):
    v, f, uv = dense_mesh
    return texels.map_operators(f, uv, len(v), 1024)


def signed_areas(uv):
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------
def test_headcraft_layout_charts_halves_and_no_flips(data, layout):
    uv = layout.uv.astype(np.float64)
    assert uv.shape == (len(data.faces), 3, 2) and np.isfinite(uv).all()
    assert (signed_areas(uv) > 0).all(), "flipped or degenerate UV triangles"
    assert layout.report["flipped"] == 0 and layout.report["outside_unit_square"] == 0
    assert texels.rasterize(uv, 1024, gutter=0).overlaps == 0, "charts overlap"
    group = np.array([layout.chart_names[c].split(".")[0] for c in layout.chart])
    assert set(group) == {"face", "rest", "eyeballs", "eye_sockets", "inner_mouth"}
    assert (uv[group == "face", :, 0] < 0.5).all() and (uv[group == "rest", :, 0] > 0.5).all()
    assert (uv >= 0).all() and (uv <= 1).all()
    # the face chart is upright: forehead above chin, and not mirrored (subject's left at +u...
    # seen from the front, the subject's left (+x) is on the viewer's right)
    face = np.flatnonzero(group == "face")
    corners_v = data.faces[face].ravel()
    p, q = data.v_template[corners_v], uv[face].reshape(-1, 2)
    assert np.corrcoef(p[:, 1], q[:, 1])[0, 1] > 0.9
    assert np.corrcoef(p[:, 0], q[:, 0])[0, 1] > 0.9
    rep = layout.report["charts"]
    assert rep["face"]["area_distortion"] < 0.2 and rep["rest"]["area_distortion"] < 0.35
    assert rep["face"]["mm_per_texel_1024"] < rep["rest"]["mm_per_texel_1024"]   # the face is favoured


def test_seams_along_the_face_border(data, layout):
    """Face-border vertices carry two UVs (one per half); interior face vertices one."""
    edges, pair = texels.seam_edges(data.faces.astype(np.int64), layout.uv.astype(np.float64))
    group = np.array([layout.chart_names[c].split(".")[0] for c in layout.chart])
    across = {tuple(sorted(g)) for g in group[pair]}
    assert ("face", "rest") in across
    u = edges[..., 0].mean(-1)       # mean u of each side's edge
    fr = (group[pair[:, 0]] == "face") & (group[pair[:, 1]] == "rest")
    assert (u[fr, 0] < 0.5).all() and (u[fr, 1] > 0.5).all()


def test_layout_is_cached_and_rebuilt_identically(data, layout, tmp_path):
    again = get_layout(data, cache_dir=tmp_path)
    np.testing.assert_allclose(again.uv, layout.uv, atol=1e-6)
    assert (again.chart == layout.chart).all() and list_layouts(data, tmp_path) == ["headcraft", "standard"]


def test_flame_layout_on_a_closed_sphere_head(tmp_path):
    """The FLAME fixture is a closed sphere with scattered regions: pieces are split into discs."""
    files = ff.write_flame_files(tmp_path, "2020")
    flame = load_flame(files.model, files.masks, files.obj)
    lay = unwrap_layout(flame)
    assert lay.report["flipped"] == 0 and lay.report["outside_unit_square"] == 0
    assert texels.rasterize(lay.uv, 1024, gutter=0).overlaps == 0


def test_dense_uvs_follow_the_coarse_layout(data, dense):
    np.testing.assert_allclose(dense_uv(dense.corner_tri, dense.corner_bary, data.uv), dense.uv, atol=1e-6)


def test_custom_layouts_saved_listed_and_checked(data, tmp_path):
    std = get_layout(data, "standard")
    saved = save_custom_layout(data, "my unwrap", std.uv * 0.5, cache_dir=tmp_path)
    e1, e2 = std.uv[:, 1] - std.uv[:, 0], std.uv[:, 2] - std.uv[:, 0]
    flipped = int(((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) <= 0).sum())
    assert saved.report["flipped"] == flipped      # halving the UVs turns no triangle over
    assert "my unwrap" in list_layouts(data, tmp_path)
    np.testing.assert_allclose(get_layout(data, "my unwrap", tmp_path).uv, std.uv * 0.5)
    for name, uv, what in (("headcraft", std.uv, "not"), ("../x", std.uv, "letters"),
                           ("ok", std.uv[:-1], "triangles"), ("ok", std.uv * np.nan, "NaN")):
        with pytest.raises(UserError, match=what):
            save_custom_layout(data, name, uv, cache_dir=tmp_path)
    with pytest.raises(UserError, match="no layout named"):
        get_layout(data, "missing", tmp_path)


# ------------------------------------------------------------------------------------------------
# Rasterise, bake, sample
# ------------------------------------------------------------------------------------------------
def _loop_raster(uv, size):
    """Straightforward per-triangle, per-texel loop: the reference for the vectorised one."""
    hits = {}
    for f, tri in enumerate(uv):
        p = texels.texel_coords(tri, size)
        for y in range(size):
            for x in range(size):
                b = texels._barycentric(p[None], np.array([[x, y]], float))[0]
                if (b >= -1e-7).all() and (y * size + x) not in hits:
                    hits[y * size + x] = (f, b)
    return hits


def test_rasterize_matches_a_per_texel_loop():
    rng = np.random.default_rng(1)
    uv = rng.uniform(0.05, 0.95, (6, 3, 2))
    r = texels.rasterize(uv, 24, gutter=0)
    ref = _loop_raster(uv, 24)
    assert set(r.texel.tolist()) == set(ref)
    for t, f, b in zip(r.texel, r.face, r.bary):
        if ref[t][0] == f:
            np.testing.assert_allclose(b, ref[t][1], atol=1e-5)


def test_bake_then_apply_reproduces_vertex_values(dense_mesh, ops1024):
    v, f, uv = dense_mesh
    const = np.tile(np.array([[1.5, -2.0, 0.25]], np.float32), (len(v), 1))
    m, mask = texels.bake(ops1024.raster, f, const)
    np.testing.assert_allclose(ops1024.apply(m), const, atol=1e-5)
    # a smooth displacement field (HeadCraft units, 1 unit amplitude, 10 cm wavelength): the
    # interpolation error measured here is what docs/USER_GUIDE.md states
    field = np.sin(v * 2 * np.pi / 0.1).astype(np.float32)
    m, _ = texels.bake(ops1024.raster, f, field)
    err = np.abs(ops1024.apply(m) - field).max(1)
    assert np.median(err) < 2e-3 and np.percentile(err, 99) < 0.03, (np.median(err), np.percentile(err, 99))


def test_seam_processing_joins_the_two_sides(dense_mesh, ops1024):
    """A map whose charts disagree (as a generated map may): after processing, both sides of
    every seam sample to nearly the same value."""
    v, f, uv = dense_mesh
    chart = texels.chart_labels(f, uv)
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 1, (chart.max() + 1, 3)).astype(np.float32)
    raster = ops1024.raster
    m = np.zeros((1024 * 1024, 3), np.float32)
    m[raster.texel] = offset[chart[raster.face]]
    m = m.reshape(1024, 1024, 3)
    pts = ops1024.seam_samples            # (P, side, 2)
    jump = lambda mm: np.abs(texels.bilinear_matrix(pts[:, 0], 1024) @ mm.reshape(-1, 3)  # noqa: E731
                             - texels.bilinear_matrix(pts[:, 1], 1024) @ mm.reshape(-1, 3)).max(1)
    before, after = jump(m), jump(ops1024.processed(m))
    assert np.median(before) > 0.3
    assert np.median(after) < 0.02 * np.median(before) and np.percentile(after, 99) < 0.1 * np.median(before)
    # away from seams the map is untouched
    far = texels.map_operators(f, uv, len(v), 1024, raster, seams=False).processed(m)
    same = np.isclose(far, ops1024.processed(m)).all(-1)
    assert same.mean() > 0.8


def test_apply_gives_seam_vertices_one_value(dense_mesh, ops1024):
    v, f, uv = dense_mesh
    rng = np.random.default_rng(2)
    out = ops1024.apply(rng.normal(size=(1024, 1024, 3)).astype(np.float32))
    assert out.shape == (len(v), 3) and np.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def test_map_files_roundtrip_and_published_decoding(tmp_path):
    rng = np.random.default_rng(0)
    m = (rng.standard_normal((32, 32, 3)) * 6).astype(np.float32)
    m[0, 0] = [25.0, -25.0, 19.99999]
    exr = formats.read(formats.write(m, tmp_path, "d", "exr")[0])
    np.testing.assert_allclose(exr, m, atol=1e-5)
    np.testing.assert_array_equal(formats.read(formats.write(m, tmp_path, "d", "npy")[0]), m)
    pngs = formats.write(m, tmp_path, "d", "png16")
    assert [p.name for p in pngs] == [f"d_-20_to_20_ch{c}.png" for c in range(3)]
    back = formats.read(pngs[1])
    clipped = np.clip(m, -20, 20)
    assert np.abs(back - clipped).max() <= formats.PNG_STEP + 1e-6
    # the published decoding formula, applied to what the file holds
    for c, p in enumerate(pngs):
        code = np.array(Image.open(p)).astype(np.float64)
        assert Image.open(p).mode == "I;16"
        np.testing.assert_allclose(code / 65536 * 40 - 20, back[..., c], atol=1e-6)
        assert (code / 65536 * 40 - 20 <= clipped[..., c] + 1e-6).all()   # floor, never rounds up


def test_unreadable_map_files_are_refused(tmp_path):
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    np.save(tmp_path / "nan.npy", np.full((4, 4, 3), np.nan, np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((4, 8, 3), np.float32))
    for name, what in (("junk.exr", "not a readable"), ("nan.npy", "NaN"), ("flat.npy", "square"),
                       ("none_-20_to_20_ch0.png", "not a readable")):
        with pytest.raises(ValueError, match=what):
            formats.read(tmp_path / name)


# ------------------------------------------------------------------------------------------------
# Jobs, over the real backend process
# ------------------------------------------------------------------------------------------------
def _detail(v, seed=0):
    """A smooth displacement field in metres (~1 mm amplitude, 3 cm wavelength)."""
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 2 * np.pi / 0.03, (3, 3))
    return (1e-3 * np.sin(v @ k)).astype(np.float32)


@pytest.mark.parametrize("space", ["object", "tangent"])
def test_bake_then_apply_jobs_reproduce_the_detail(conn, data, space):
    lay = conn.call("layout.get", {"model": "openhead"}, timeout=120)
    assert lay.state == "done", lay.error
    assert lay.arrays["uv"].shape == (len(data.faces), 3, 2) and lay.result["report"]["flipped"] == 0
    coarse = data.v_template.astype(np.float32)
    # the dense base of the neutral head, from an apply with a zero map
    zero = conn.call("map.apply", {"model": "openhead", "space": space},
                     {"map": np.zeros((256, 256, 3), np.float32), "coarse_vertices": coarse}, timeout=300)
    assert zero.state == "done", zero.error
    base = zero.arrays["base"]
    np.testing.assert_array_equal(zero.arrays["displacement"], 0)
    detail = _detail(base)
    baked = conn.call("map.bake", {"model": "openhead", "size": 1024, "space": space, "formats": ["exr", "png16"]},
                      {"base": base, "displacement": detail}, timeout=300)
    assert baked.state == "done", baked.error
    m = baked.arrays["map"]
    assert m.shape == (1024, 1024, 3) and baked.arrays["mask"].any()
    assert sorted(baked.result["files"])[0].endswith(".exr") and len(baked.result["files"]) == 4
    # the EXR bytes decode to the map exactly
    files = {f"file__{n}": baked.arrays[f"file__{n}"] for n in baked.result["files"] if n.endswith(".exr")}
    back = conn.call("map.apply", {"model": "openhead", "space": space}, {**files, "coarse_vertices": coarse},
                     timeout=300)
    assert back.state == "done", back.error
    err = np.linalg.norm(back.arrays["displacement"] - detail, axis=1) * 1000      # mm
    amp = np.linalg.norm(detail, axis=1).mean() * 1000
    assert np.median(err) < 0.02 * amp and np.percentile(err, 95) < 0.1 * amp, (np.median(err), amp)
    np.testing.assert_allclose(back.arrays["final"], back.arrays["base"] + back.arrays["displacement"], atol=1e-6)


def test_bad_bake_and_apply_requests_get_clear_errors(conn, data):
    n = len(data.v_template)
    cases = [
        ("map.bake", {"size": 32}, {}, "parameter 'size': 32 is not an integer from 64 to 8192"),
        ("map.bake", {"space": "world"}, {}, "space"),
        ("map.bake", {"formats": ["tiff"]}, {}, "format"),
        ("map.bake", {}, {"base": np.zeros((5, 3), np.float32), "displacement": np.zeros((5, 3), np.float32)}, "shape"),
        ("map.apply", {}, {"map": np.full((64, 64, 3), np.nan, np.float32)}, "finite"),
        ("map.apply", {}, {"file__x.exr": np.frombuffer(b"junk", np.uint8)}, "not a readable"),
        ("map.apply", {}, {"map": np.zeros((64, 64, 3), np.float32),
                           "coarse_vertices": np.zeros((n - 1, 3), np.float32)}, "shape"),
        ("layout.get", {"layout": "nope"}, {}, "no layout named"),
    ]
    for kind, params, arrays, what in cases:
        j = conn.submit(kind, {"model": "openhead", **params}, arrays).wait(300)
        assert j.state == "error" and what in str(j.error), (kind, params, j.error)


def test_cli_layout_bake_apply(tmp_path, dense_mesh):
    import subprocess
    import sys
    v, f, _ = dense_mesh
    detail = _detail(v)
    np.savez(tmp_path / "scan_fit.npz", base=v.astype(np.float32), displacement=detail)
    run = lambda *a: subprocess.run([sys.executable, "-m", "headcraft_backend", *a], cwd=tmp_path,  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    r = run("layout", "--out", "lay")
    assert r.returncode == 0, r.stderr
    obj = (tmp_path / "lay" / "openhead_headcraft.obj").read_text()
    assert obj.count("\nvt ") + obj.startswith("vt ") == 3 * obj.count("\nf ")
    r = run("bake", "scan_fit.npz", "--size", "512", "--format", "exr", "png16", "--out", "maps", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == ["scan_object.exr"] + [f"scan_object_-20_to_20_ch{c}.png" for c in range(3)]
    for m in ("maps/scan_object.exr", "maps/scan_object_-20_to_20_ch1.png"):
        r = run("apply", m, "--out", "head.obj", "--device", "cpu")
        assert r.returncode == 0, r.stderr
        verts = np.array([line.split()[1:] for line in (tmp_path / "head.obj").read_text().splitlines()
                          if line.startswith("v ")], float)
        err = np.linalg.norm(verts - (v + detail), axis=1)
        assert len(verts) == len(v) and np.median(err) < 1e-4, np.median(err)      # metres
    r = run("convert", "maps/scan_object.exr", "--source", "headcraft", "--target", "standard", "--format", "npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "maps" / "scan_object_standard.npy").shape == (512, 512, 3)
    r = run("bake", "missing.npz")
    assert r.returncode == 2 and "not a fit file" in r.stderr and "Traceback" not in r.stderr
    r = run("apply", "nothing.exr")
    assert r.returncode == 2 and "not a readable" in r.stderr and "Traceback" not in r.stderr


def test_convert_between_layouts_matches_a_direct_bake(conn, dense_mesh):
    from scipy.ndimage import binary_erosion
    v, f, _ = dense_mesh
    detail = _detail(v, seed=3)
    maps = {}
    for lay in ("standard", "headcraft"):
        j = conn.call("map.bake", {"model": "openhead", "layout": lay, "size": 1024},
                      {"base": v.astype(np.float32), "displacement": detail}, timeout=300)
        maps[lay] = (j.arrays["map"], j.arrays["mask"].astype(bool))
    c = conn.call("map.convert", {"model": "openhead", "source": "standard", "target": "headcraft",
                                  "formats": ["npy"]}, {"map": maps["standard"][0]}, timeout=300)
    got = c.arrays["map"]
    inner = binary_erosion(maps["headcraft"][1], iterations=3)
    err = np.linalg.norm(got - maps["headcraft"][0], axis=-1)[inner]
    amp = np.linalg.norm(maps["headcraft"][0], axis=-1)[inner].mean()
    assert np.median(err) < 0.05 * amp and np.percentile(err, 90) < 0.3 * amp, (np.median(err), amp)
    assert c.result["files"] == ["openhead_headcraft_object_1024.npy"]
    bad = conn.submit("map.convert", {"model": "openhead", "space": "tangent"}, {"map": got}).wait(60)
    assert bad.state == "error" and "bake a tangent-space map" in str(bad.error)


def test_colour_bake_from_vertex_colours_and_from_a_texture(conn, data, dense, dense_mesh):
    v, f, uv = dense_mesh
    col = ((v - v.min(0)) / np.ptp(v, 0)).astype(np.float32)     # colour = position in the box
    base = {"final": v.astype(np.float32), "scan_vertices": v.astype(np.float32), "scan_faces": f.astype(np.int32)}
    j = conn.call("map.bake_colour", {"model": "openhead", "size": 256}, {**base, "scan_colors": col}, timeout=600)
    raster = texels.rasterize(uv, 256)
    want, covered = texels.bake(raster, f, col)
    err = np.abs(j.arrays["map"] - want)[covered].max(-1)
    assert np.median(err) < 1e-3 and np.percentile(err, 99) < 0.02, np.percentile(err, 99)
    assert j.result["files"] and j.arrays[f"file__{j.result['files'][0]}"][:8].tobytes() == b"\x89PNG\r\n\x1a\n"
    # 8-bit colours (as a PLY scan has them) are the same colours, not clipped to white
    j8 = conn.call("map.bake_colour", {"model": "openhead", "size": 256},
                   {**base, "scan_colors": np.round(col * 255).astype(np.uint8)}, timeout=600)
    assert np.abs(j8.arrays["map"] - j.arrays["map"])[covered].max() < 0.01
    # a texture through the scan's own (standard) UVs: the colour is that UV, so the bake must
    # reproduce the standard layout's coordinates at every texel of the headcraft layout
    su = dense.uv.astype(np.float64)
    yy, xx = np.mgrid[0:512, 0:512]
    tex = np.stack([(xx + 0.5) / 512, 1 - (yy + 0.5) / 512, np.full(xx.shape, 0.5)], -1).astype(np.float32)
    j = conn.call("map.bake_colour", {"model": "openhead", "size": 256},
                  {**base, "scan_uv": su.astype(np.float32), "texture": tex}, timeout=600)
    want, _ = texels.bake(raster, f, np.concatenate([su, np.full((*su.shape[:2], 1), 0.5)], -1))
    inner = covered & (np.abs(j.arrays["map"] - want).max(-1) < 0.05)
    assert inner[covered].mean() > 0.97        # all but texels whose nearest point jumps a seam
    bad = conn.submit("map.bake_colour", {"model": "openhead", "size": 256}, base).wait(60)
    assert bad.state == "error" and "no colours" in str(bad.error)


def test_visibility_mask_of_a_partial_fit_is_baked(conn, dense_mesh):
    v, f, uv = dense_mesh
    seen = np.zeros(len(v), bool)           # say the face was seen: vertices of the left half
    seen[f[(uv[..., 0] < 0.5).all(1) & (uv[..., 1] > 0.22).all(1)]] = True
    j = conn.call("map.bake", {"model": "openhead", "size": 256},
                  {"base": v.astype(np.float32), "displacement": np.zeros_like(v, np.float32),
                   "visibility": seen.astype(np.uint8)}, timeout=300)
    vm, covered = j.arrays["visibility_map"], j.arrays["mask"].astype(bool)
    assert vm.shape == (256, 256)
    assert vm[:190, :128][covered[:190, :128]].mean() > 0.97 and vm[:, 128:][covered[:, 128:]].mean() < 0.03


def test_obj_writer_with_and_without_uvs(tmp_path):
    import trimesh
    from headcraft_backend.cli import _write_obj
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    uv = np.random.default_rng(0).uniform(size=(2, 3, 2))
    _write_obj(tmp_path / "a.obj", v, f)
    _write_obj(tmp_path / "b.obj", v, f, uv)
    a = trimesh.load(tmp_path / "a.obj", process=False)
    np.testing.assert_allclose(a.vertices, v)
    np.testing.assert_array_equal(a.faces, f)
    lines = (tmp_path / "b.obj").read_text().splitlines()
    vt = np.array([line.split()[1:] for line in lines if line.startswith("vt ")], float)
    np.testing.assert_allclose(vt, uv.reshape(-1, 2), atol=1e-6)
    assert [line for line in lines if line.startswith("f ")] == ["f 1/1 2/2 3/3", "f 2/4 4/5 3/6"]


def test_operator_cache_keeps_the_newest_few():
    from types import SimpleNamespace
    from headcraft_backend.layout.maps import cached
    ctx = SimpleNamespace(cache={("head_model", 1): "model"})
    built = []
    for k in [1, 2, 3, 1, 4, 5]:
        cached(ctx, ("raster", k), lambda k=k: built.append(k) or k)
    assert built == [1, 2, 3, 4, 5]                      # 1 was reused while cached
    assert [k for k in ctx.cache if k[0] == "raster"] == [("raster", 1), ("raster", 4), ("raster", 5)]
    assert ctx.cache[("head_model", 1)] == "model"       # other kinds untouched
