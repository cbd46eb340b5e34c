"""Fit-quality figures for real scans (issue 16): folded triangles, turned normals, distances,
the picture, and the CLI's refusal of an empty folder."""
import numpy as np
import trimesh

from headcraft_backend.evaluate.real_scans import format_rows, quality, render_sheet


def test_quality_counts_a_fold_and_measures_distances():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    base, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    regions = {"face": np.arange(len(base))}
    same = quality(base, base.copy(), faces, regions, base, faces, base)["face"]
    assert same["folded"] == 0 and same["new_self_intersections"] == 0
    assert same["result_to_scan_median"] < 1e-6 and same["normal_turned"] == 0.0
    # slide one vertex past its neighbour: triangles of its ring turn over
    final = base.copy()
    j = faces[np.flatnonzero((faces == 0).any(1))[0]]
    j = j[j != 0][0]
    final[0] = base[0] + 1.8 * (base[j] - base[0])
    worse = quality(base, final, faces, regions, base, faces, base)["face"]
    assert worse["folded"] >= 1 and worse["result_to_scan_p95"] < 1.0
    text = format_rows([{"scan": "ball.obj", "seconds": 1.0, "regions": {"face": worse}}])
    assert "ball.obj" in text and str(worse["folded"]) in text


def test_picture_has_four_tiles_in_two_rows():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    img = render_sheet(v, f, v, v, f, np.zeros(len(v)), size=64)
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    assert (img[:, 128:192] != img[0, 0]).any()     # the detailed head is drawn


def test_empty_folder_is_refused(tmp_path, capsys):
    from headcraft_backend import cli
    assert cli.main(["eval-real", str(tmp_path)]) == 2
    assert "no scan files" in capsys.readouterr().err
