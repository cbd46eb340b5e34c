"""Imported layouts (issue 19): OBJ and .npy files of a model's topology, refused mismatches,
the generator/layout check, and a published-format checkpoint sampling onto an imported layout."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import fixtures.flame_files as ff
from headcraft_backend.errors import UserError
from headcraft_backend.generate.networks import Discriminator, Generator
from headcraft_backend.generate.sample import check_layout
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.layout import texels
from headcraft_backend.layout.store import get_layout, halves, import_layout, list_layouts
from test_generate import write_published


def cli(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "headcraft_backend", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def data():
    return load_model_data({"model": "openhead"})


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """The headcraft layout written by the `layout` command (an OBJ with per-corner UVs)."""
    d = tmp_path_factory.mktemp("exported")
    r = cli(d, "layout", "--out", ".")
    assert r.returncode == 0, r.stderr
    return d / "openhead_headcraft.obj", get_layout(data, "headcraft")


def test_obj_round_trip_gives_identical_texels(data, exported, tmp_path):
    obj, built = exported
    imp = import_layout(data, "round trip", obj.read_bytes(), "obj", cache_dir=tmp_path)
    np.testing.assert_allclose(imp.uv, built.uv, atol=1e-7)
    for size in (256, 1024):
        a, b = texels.rasterize(built.uv, size), texels.rasterize(imp.uv, size)
        assert np.array_equal(a.texel, b.texel) and np.array_equal(a.face, b.face)
    assert imp.report["flipped"] == 0 and imp.report["overlap_texels_512"] == 0
    assert imp.report["outside_unit_square"] == 0
    assert {n.split(".")[0] for n in imp.chart_names} >= {"face", "rest"}
    assert "round trip" in list_layouts(data, tmp_path)
    np.testing.assert_array_equal(get_layout(data, "round trip", tmp_path).uv, imp.uv)


def test_obj_faces_may_start_at_another_corner(data, exported, tmp_path):
    """A program that writes each triangle from another corner (same orientation) is matched."""
    obj, built = exported
    lines = obj.read_text().splitlines()
    f_lines = [i for i, line in enumerate(lines) if line.startswith("f ")]
    for i in f_lines[::3]:
        a, b, c = lines[i].split()[1:]
        lines[i] = f"f {b} {c} {a}"
    imp = import_layout(data, "rotated", "\n".join(lines).encode(), "obj", cache_dir=tmp_path)
    np.testing.assert_allclose(imp.uv, built.uv, atol=1e-7)


def test_npy_round_trip(data, tmp_path):
    built = get_layout(data, "headcraft")
    path = tmp_path / "uv.npy"
    np.save(path, built.uv.astype(np.float64))
    imp = import_layout(data, "from array", path.read_bytes(), "npy", cache_dir=tmp_path)
    np.testing.assert_array_equal(imp.uv, built.uv)


def test_mismatches_are_refused_with_a_message(data, exported, tmp_path):
    obj, built = exported
    text = obj.read_text()
    lines = text.splitlines()
    i = [k for k, line in enumerate(lines) if line.startswith("f ")][42]
    v = [c.split("/") for c in lines[i].split()[1:]]
    lines[i] = f"f {v[1][0]}/{v[0][1]} {v[0][0]}/{v[1][1]} {v[2][0]}/{v[2][1]}"     # another triangle
    cases = [("\n".join(lines).encode(), "obj", "triangle 42"),
             ("\n".join(line for line in text.splitlines()[:-1]).encode(), "obj", f"{len(data.faces) - 1} triangles"),
             (b"v 0 0 0\nf 1 1 1\n", "obj", "texture coordinate"),
             (b"garbage", "npy", "not a readable .npy"),
             (b"\x00" * 10, "png", "layout format")]
    np.save(tmp_path / "short.npy", built.uv[:-5])
    cases.append(((tmp_path / "short.npy").read_bytes(), "npy", f"({len(data.faces)}, 3, 2)"))
    for content, fmt, what in cases:
        with pytest.raises(UserError, match=what.replace("(", r"\(").replace(")", r"\)")):
            import_layout(data, "bad", content, fmt, cache_dir=tmp_path)
    with pytest.raises(UserError, match="letters"):
        import_layout(data, "../evil", obj.read_bytes(), "obj", cache_dir=tmp_path)
    assert list_layouts(data, tmp_path) == ["headcraft", "standard"]       # nothing half-saved


def test_report_counts_flips_overlaps_and_uvs_outside_the_square(data, tmp_path):
    uv = get_layout(data, "headcraft").uv.copy()
    uv[:10] = uv[:10, ::-1]             # ten triangles turned over
    uv[10:20] += 2.0                    # ten outside the unit square
    uv[20:200] = uv[200:380]            # 180 on top of others
    rep = import_layout(data, "messy", _npy(uv), "npy",
                        cache_dir=tmp_path).report
    assert rep["flipped"] >= 10 and rep["outside_unit_square"] == 10 and rep["overlap_texels_512"] > 0


def _npy(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_seams_along_the_face_border_of_an_imported_layout(data, exported, tmp_path):
    """Seam processing on an imported layout whose seam runs along the face border: a map whose
    face and scalp charts disagree is joined across the border after processing."""
    from headcraft_backend.head.dense import dense_template
    from headcraft_backend.layout.store import dense_uv
    obj, _ = exported
    imp = import_layout(data, "border", obj.read_bytes(), "obj", cache_dir=tmp_path)
    dense = dense_template(data)
    uv = dense_uv(dense.corner_tri, dense.corner_bary, imp.uv)
    ops = texels.map_operators(dense.faces, uv, dense.num_vertices, 256)
    chart = texels.chart_labels(dense.faces, uv)
    m = np.zeros((256 * 256, 3), np.float32)
    m[ops.raster.texel] = np.where(chart[ops.raster.face] == chart[ops.raster.face][0], 1.0, -1.0)[:, None]
    pts = ops.seam_samples
    jump = lambda mm: np.abs(texels.bilinear_matrix(pts[:, 0], 256) @ mm.reshape(-1, 3)  # noqa: E731
                             - texels.bilinear_matrix(pts[:, 1], 256) @ mm.reshape(-1, 3)).max(1)
    m = m.reshape(256, 256, 3)
    before, after = jump(m), jump(ops.processed(m))
    assert before.max() > 1.5 and np.percentile(after, 99) < 0.1 * before.max()


def test_generators_refuse_a_layout_without_face_and_scalp_halves(data):
    face, rest = halves(data, get_layout(data, "headcraft"))
    assert face == pytest.approx(1.0) and rest == pytest.approx(1.0)
    with pytest.raises(UserError, match="left half"):
        check_layout(data, get_layout(data, "standard"))
    torch.manual_seed(0)
    three = Generator(z_dim=16, w_dim=16, w_num_layers=2, img_resolution=32, img_channels=3, channel_base=128,
                      channel_max=16)
    with pytest.raises(UserError, match="3-channel"):
        check_layout(data, get_layout(data, "headcraft"), three)


def test_published_checkpoint_samples_onto_the_imported_layout(tmp_path):
    """FLAME + the authors' layout imported as 'published' + a published-format .ckpt: the CLI
    picks the layout, checks it, and writes a detailed head; without the layout it says how."""
    flame_dir = tmp_path / "flame"
    ff.write_flame_files(flame_dir, "2020")
    env = {**__import__("os").environ, "HEADCRAFT_DATA": str(tmp_path / "data"),
           "HEADCRAFT_CACHE": str(tmp_path / "cache")}
    torch.manual_seed(3)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=4, img_resolution=64, img_channels=6, channel_base=256,
                  channel_max=32)
    ckpt, _, _ = write_published(tmp_path, G, Discriminator(64, 6, 256, 32))
    flame = ("--model", "flame", "--flame-dir", str(flame_dir))
    r = cli(tmp_path, "generate", str(ckpt), *flame, "--out", "g", env=env)
    assert r.returncode == 2 and "no layout named 'published'" in r.stderr and "Traceback" not in r.stderr
    r = cli(tmp_path, "generate", str(ckpt), "--out", "g", env=env)
    assert r.returncode == 2 and "--model flame" in r.stderr
    # the authors' layout: here the headcraft layout of the FLAME files, exported and imported
    r = cli(tmp_path, "layout", *flame, "--out", "lay", env=env)
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "import-layout", "lay/flame_headcraft.obj", *flame, "--name", "published", env=env)
    assert r.returncode == 0 and "saved as layout 'published'" in r.stdout and "0 flipped" in r.stdout, r.stderr
    r = cli(tmp_path, "generate", str(ckpt), *flame, "--seeds", "0", "--out", "g", "--device", "cpu", env=env)
    assert r.returncode == 0 and "layout published" in r.stdout, r.stderr
    verts = [line for line in (tmp_path / "g" / "seed0000.obj").read_text().splitlines() if line.startswith("v ")]
    assert len(verts) > 5023
    r = cli(tmp_path, "generate", str(ckpt), *flame, "--layout", "standard", "--out", "g", env=env)
    assert r.returncode == 2 and "left half" in r.stderr
    r = cli(tmp_path, "import-layout", str(flame_dir / "head_template.obj"), "--name", "x", env=env)
    assert r.returncode == 2 and "not a layout of openhead" in r.stderr and "Traceback" not in r.stderr


def test_import_job_over_the_wire_then_maps_in_that_layout(conn, exported):
    """The job Blender's Import Layout sends (the file's bytes): the new name is listed, then a
    map job in that layout works; a broken file gets a message and lists nothing new."""
    obj, _ = exported
    j = conn.submit("layout.import", {"model": "openhead", "name": "wire import", "format": "obj",
                                      "source": obj.name}, {"file": np.frombuffer(obj.read_bytes(), np.uint8)}).wait(300)
    assert j.state == "done", j.error
    assert "wire import" in j.result["layouts"] and j.result["report"]["flipped"] == 0
    j = conn.submit("layout.get", {"model": "openhead", "layout": "wire import"}).wait(300)
    assert j.state == "done" and j.arrays["uv"].shape[1:] == (3, 2)
    j = conn.submit("map.apply", {"model": "openhead", "layout": "wire import"},
                    {"map": np.zeros((64, 64, 3), np.float32)}).wait(300)
    assert j.state == "done", j.error
    j = conn.submit("layout.import", {"model": "openhead", "name": "broken", "source": "x.obj"},
                    {"file": np.frombuffer(b"v 0 0 0\n", np.uint8)}).wait(300)
    assert j.state == "error" and "x.obj" in str(j.error)
    j = conn.submit("layout.get", {"model": "openhead"}).wait(300)
    assert "broken" not in j.result["layouts"]
