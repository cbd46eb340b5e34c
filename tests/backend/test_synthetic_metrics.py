"""Procedural scans with ground truth (procedural/scans.py) and the error figures (fit/metrics.py)."""
import numpy as np
import pytest

from headcraft_backend.fit import metrics as M
from headcraft_backend.procedural import scans as S
from headcraft_backend.head.registry import load_model_data


@pytest.fixture(scope="module")
def data():
    return load_model_data({"model": "openhead"})


@pytest.fixture(scope="module")
def short(data):
    return S.make_scan(data, 11, hair="short", n_points=5000)


@pytest.fixture(scope="module")
def long_(data):
    return S.make_scan(data, 12, hair="long", holes=5)


def _boundary_edges(faces):
    f = np.asarray(faces, np.int64)
    a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
    n = int(f.max()) + 1
    _, c = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)
    return int((c == 1).sum())


def _area(v, f):
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()


def _mask(idx, n):
    m = np.zeros(n, bool)
    m[idx] = True
    return m


# ------------------------------------------------------------------------------------------------
# Synthetic scans
# ------------------------------------------------------------------------------------------------
def test_deterministic_from_seed(data, short):
    again = S.make_scan(data, 11, hair="short", n_points=5000)
    for name in ("vertices", "faces", "colors", "points", "truth_vertices", "truth_faces",
                 "scan_truth_index", "truth_observed", "shape", "expr", "pose", "rotation"):
        np.testing.assert_array_equal(getattr(again, name), getattr(short, name), err_msg=name)
    assert again.scale == short.scale and again.expression_keys == short.expression_keys
    other = S.make_scan(data, 99, hair="short")
    assert not np.array_equal(other.shape, short.shape)


def test_scan_contents_and_sizes(data, short):
    s = short
    assert s.vertices.dtype == np.float64 and s.faces.dtype == np.int32
    assert 80_000 < len(s.vertices) < 250_000 and len(s.truth_vertices) > 100_000
    assert s.colors.shape == (len(s.vertices), 3) and s.colors.dtype == np.uint8
    assert s.points.shape == (5000, 3) and np.allclose(np.linalg.norm(s.point_normals, axis=1), 1)
    assert s.shape.shape == (data.num_shape,) and s.expr.shape == (data.num_expr,)
    assert s.pose.shape == (len(data.joint_names), 3)
    assert 2 <= len(s.expression_keys) <= 5 and "tongueOut" not in s.expression_keys
    assert all(0 <= v <= 0.6 for v in s.expression_keys.values())
    assert set(s.truth_regions) == set(data.regions)
    # The truth is the model head refined: same coarse head, posed with the recorded coefficients.
    import torch
    from headcraft_backend.head.model import HeadModel
    with torch.no_grad():
        ref = HeadModel(data)(shape=torch.from_numpy(s.shape)[None], expr=torch.from_numpy(s.expr)[None],
                              pose=torch.from_numpy(s.pose)[None]).vertices[0].numpy()
    np.testing.assert_allclose(s.model_vertices, ref, atol=1e-6)


def test_similarity_recorded(data, short):
    s = short
    unit = [u for u in S.UNITS if 0.9 * u <= s.scale <= 1.1 * u]
    assert len(unit) == 1
    R = s.rotation
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) > 0
    np.testing.assert_allclose(s.similarity_matrix()[:3, :3], s.scale * R)
    # Clean face vertices of the scan, mapped back, lie on the truth surface within the noise.
    idx = s.scan_truth_index
    face = _mask(s.truth_regions["face"], len(s.truth_vertices))
    sel = np.flatnonzero((idx >= 0) & face[np.maximum(idx, 0)])
    back = s.to_model(s.vertices[sel])
    d_mm = M.surface_distances(back, s.truth_vertices, s.truth_faces) * 1000
    assert np.median(d_mm) < 0.2 and np.percentile(d_mm, 95) < 0.5     # noise_mm = 0.2
    np.testing.assert_allclose(s.to_scan(back), s.vertices[sel], rtol=0, atol=1e-9 * s.scale)
    # Without noise the scan vertices ARE truth vertices; units vary with the seed.
    exact = S.make_scan(data, 3, hair="none", noise_mm=0.0, holes=0, junk=False, color=False)
    j = exact.scan_truth_index
    np.testing.assert_allclose(exact.to_model(exact.vertices), exact.truth_vertices[j], atol=1e-9)
    # The similarity's distribution: every unit occurs, rotations stay within 25 degrees.
    rng = np.random.default_rng(0)
    draws = [S._sample_similarity(rng) for _ in range(200)]
    units = {u for sc, _, _ in draws for u in S.UNITS if 0.9 * u <= sc <= 1.1 * u}
    assert units == set(S.UNITS)
    angles = np.degrees([np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)) for _, R, _ in draws])
    assert angles.max() < 45 and angles.mean() > 10
    fixed = S.make_scan(data, 3, hair="none", scale=1000.0, holes=0, junk=False, color=False)
    assert fixed.scale == 1000.0 and fixed.mm_per_scan_unit == 1.0
    plain = S.make_scan(data, 3, hair="none", similarity=False, holes=0, junk=False, color=False)
    assert plain.scale == 1.0 and np.array_equal(plain.rotation, np.eye(3))


@pytest.mark.parametrize("which", ["short", "long"])
def test_hair_only_on_scalp(which, short, long_):
    s = short if which == "short" else long_
    face = s.truth_regions["face"]
    scalp = s.truth_regions["scalp"]
    assert np.all(s.truth_hair_mm[face] == 0)
    # Face: the clean head plus sub-millimetre skin detail only.
    off = np.linalg.norm(s.truth_vertices[face] - s.truth_base_vertices[face], axis=1) * 1000
    assert off.max() < 1.0 and 0.05 < np.sqrt((off ** 2).mean()) < 0.4
    d_face = M.surface_distances(s.truth_vertices[face], s.model_vertices, s.model_faces) * 1000
    assert np.percentile(d_face, 99) < 1.0 and d_face.max() < 2.0
    d_scalp = M.surface_distances(s.truth_vertices[scalp], s.model_vertices, s.model_faces) * 1000
    assert np.median(d_scalp) > (4.0 if which == "short" else 7.0)
    if which == "long":     # long hair reaches 20+ mm and covers the back of the neck
        assert s.truth_hair_mm.max() > 20
        neck = s.truth_regions["neck"]
        back = neck[s.truth_base_vertices[neck, 2] < s.truth_base_vertices[neck, 2].mean() - 0.02]
        assert np.median(s.truth_hair_mm[back]) > 5
    else:
        assert 3 < np.median(s.truth_hair_mm[scalp]) < 12


def test_no_hair_and_other_styles(data):
    bald = S.make_scan(data, 13, hair="none", holes=0, junk=False, color=False)
    assert np.all(bald.truth_hair_mm == 0)
    beard = S.make_scan(data, 13, hair="beard", holes=0, junk=False, color=False)
    assert beard.truth_hair_mm[beard.truth_regions["face"]].max() > 1.5
    with pytest.raises(ValueError, match="hair style"):
        S.make_scan(data, 13, hair="mohawk")


def test_holes_and_face_kept(data, long_):
    s = long_
    clean = S.make_scan(data, 12, hair="long", holes=0, junk=False, color=False)
    holed = S.make_scan(data, 12, hair="long", holes=5, junk=False, color=False)
    assert _boundary_edges(holed.faces) > _boundary_edges(clean.faces) > _boundary_edges(s.truth_faces)
    assert clean.truth_observed.sum() > holed.truth_observed.sum()
    # The face keeps most of its area; hidden parts (mouth interior) are not scanned.
    for sc in (holed, s):
        face = _mask(sc.truth_regions["face"], len(sc.truth_vertices))
        tf = sc.truth_faces[face[sc.truth_faces].all(1)]
        kept = tf[sc.truth_observed[tf].all(1)]
        assert _area(sc.truth_vertices, kept) > 0.8 * _area(sc.truth_vertices, tf)
    assert s.truth_observed[s.truth_regions["inner_mouth"]].mean() < 0.3
    assert s.truth_observed[s.truth_regions["scalp"]].mean() > 0.8


def test_junk_components(data, short):
    s = short
    junk = s.scan_truth_index < 0
    assert junk.sum() > 500
    # Floating fragments lie well away from the head; the stub hangs below it.
    back = s.to_model(s.vertices[junk])
    head = s.truth_vertices
    far = np.linalg.norm(back - head.mean(0), axis=1) > 0.12
    assert far.sum() > 50 and (back[:, 1] < head[:, 1].min() - 0.02).sum() > 100
    none = S.make_scan(data, 11, hair="short", junk=False, color=False)
    assert (none.scan_truth_index >= 0).all()
    stub_only = S.make_scan(data, 11, hair="short", junk=False, shoulders=True, color=False)
    assert (stub_only.scan_truth_index < 0).sum() > 500


def test_partial_view_and_sparse_subset(short):
    s = short
    pv = S.partial_view(s, 1, view_dir=(0.0, 0.0, 1.0))
    assert len(pv.points) > 10_000
    np.testing.assert_allclose(pv.view_dir, s.rotation @ [0, 0, 1.0], atol=1e-12)
    assert (pv.normals @ pv.view_dir > 0).all()
    on = pv.truth_index >= 0
    assert on.mean() > 0.4
    seen = pv.truth_index[on]
    # A front view sees the face, not the back of the head.
    z = s.truth_base_vertices[seen, 2]
    assert np.median(z) > s.truth_base_vertices[:, 2].mean()
    d_mm = M.surface_distances(s.to_model(pv.points[on]), s.truth_vertices, s.truth_faces) * 1000
    assert np.median(d_mm) < 0.3
    pv2 = S.partial_view(s, 1, view_dir=(0.0, 0.0, 1.0))
    np.testing.assert_array_equal(pv.points, pv2.points)
    rnd = S.partial_view(s, 4)
    assert rnd.view_dir_model[2] > 0.2 and len(rnd.points) > 5000
    sub, idx = S.sparse_subset(pv.points, 500, seed=3, return_index=True)
    assert sub.shape == (500, 3) and len(np.unique(idx)) == 500
    np.testing.assert_array_equal(sub, S.sparse_subset(pv.points, 500, seed=3))
    assert len(S.sparse_subset(pv.points[:10], 500)) == 10


def test_pca_models_get_gaussian_expressions(data):
    import copy
    fake = copy.copy(data)
    fake.name = "flame"
    fake.expr_names = [f"Exp{i:03d}" for i in range(data.num_expr)]
    shape, expr, pose, keys = S._sample_coefficients(fake, np.random.default_rng(0))
    assert keys == {} and np.count_nonzero(expr) == min(50, data.num_expr)
    assert 0.2 < expr[:50].std() < 0.9 and np.all(expr[50:] == 0)
    assert abs(pose[2, 0]) < 0.13 and np.all(pose[0] == 0)


# ------------------------------------------------------------------------------------------------
# Distances
# ------------------------------------------------------------------------------------------------
def _reference_distance(p, v, f):
    """Independent brute force: projection onto each plane if inside, else the nearest edge."""
    best = np.full(len(p), np.inf)
    for a, b, c in v[f]:
        n = np.cross(b - a, c - a)
        n = n / np.linalg.norm(n)
        h = (p - a) @ n
        q = p - h[:, None] * n
        inside = np.ones(len(p), bool)
        for x, y in ((a, b), (b, c), (c, a)):
            inside &= np.cross(y - x, q - x) @ n >= 0
        d = np.where(inside, np.abs(h), np.inf)
        for x, y in ((a, b), (b, c), (c, a)):
            t = np.clip((p - x) @ (y - x) / ((y - x) @ (y - x)), 0, 1)
            d = np.minimum(d, np.linalg.norm(p - (x + t[:, None] * (y - x)), axis=1))
        best = np.minimum(best, d)
    return best


def test_surface_distances_simple_cases():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2]])
    pts = np.array([[0.2, 0.2, 0.5],      # above the interior: the height
                    [0.5, -0.3, 0.4],     # beside edge 0-1: distance to the edge
                    [-0.3, -0.4, 0.0],    # beyond vertex 0
                    [1.5, 0.0, -1.0],     # beyond vertex 1
                    [0.75, 0.75, 0.0]])   # beyond the hypotenuse, in plane
    d, tri, cp = M.surface_distances(pts, v, f, return_closest=True)
    np.testing.assert_allclose(d, [0.5, 0.5, 0.5, np.sqrt(0.25 + 1), np.sqrt(2) * 0.25], atol=1e-12)
    np.testing.assert_allclose(cp[1], [0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cp[2], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cp[4], [0.5, 0.5, 0], atol=1e-12)
    assert (tri == 0).all()
    # Degenerate triangle (a segment) still works.
    dd = M.surface_distances([[0.5, 1.0, 0.0]], np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), f)
    np.testing.assert_allclose(dd, [1.0])


def test_surface_distances_match_brute_force():
    rng = np.random.default_rng(0)
    # A bumpy, irregular mesh: a jittered grid sheet with mixed triangle sizes, folded.
    n = 14
    gx, gy = np.meshgrid(np.linspace(0, 1, n) ** 1.7, np.linspace(0, 1, n))
    v = np.stack([gx.ravel(), gy.ravel(), 0.2 * np.sin(4 * gx.ravel()) * gy.ravel()], 1)
    v += rng.normal(0, 0.01, v.shape)
    q = np.arange(n * n).reshape(n, n)
    a, b, c, d4 = q[:-1, :-1].ravel(), q[:-1, 1:].ravel(), q[1:, 1:].ravel(), q[1:, :-1].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d4], 1)])
    pts = np.concatenate([rng.uniform(-0.2, 1.2, (600, 3)), v[rng.choice(len(v), 100)] +
                          rng.normal(0, 1e-3, (100, 3)), rng.normal(0, 5, (50, 3))])
    d, tri, cp = M.surface_distances(pts, v, f, return_closest=True)
    np.testing.assert_allclose(d, _reference_distance(pts, v, f), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(cp - pts, axis=1), d, atol=1e-12)


def test_fit_report_zero_on_identical_and_offset(short):
    s = short
    rep = M.fit_report(s.truth_vertices, s.truth_faces, s.truth_regions, s.truth_vertices, s.truth_faces,
                       s.truth_regions, mm_per_unit=1000.0)
    for side in ("scan_to_result", "result_to_scan"):
        assert rep["head"][side]["p95"] < 1e-9 and rep["head"][side]["n"] > 0
        for name in s.truth_regions:
            assert rep["regions"][name][side]["median"] < 1e-9
    table = M.format_table(rep)
    assert "face" in table and "head" in table and "p95" in table
    # A sphere against one 1 mm larger: every distance ~1 mm, in HeadCraft units too.
    v, f = S._icosphere(4)
    v = v * 0.1
    regions = {"all": np.arange(len(v))}
    rep = M.fit_report(v * 1.01, f, regions, v, f, regions, mm_per_unit=1000.0)
    for side in ("scan_to_result", "result_to_scan"):
        assert 0.95 < rep["regions"]["all"][side]["median"] < 1.01
    from headcraft_backend.units import MM_PER_UNIT, to_units
    rep_u = M.fit_report(to_units(v * 1.01), f, regions, to_units(v), f, regions, mm_per_unit=MM_PER_UNIT)
    assert abs(rep_u["head"]["scan_to_result"]["median"] - rep["head"]["scan_to_result"]["median"]) < 1e-9


# ------------------------------------------------------------------------------------------------
# Self-intersections
# ------------------------------------------------------------------------------------------------
def test_self_intersections_simple():
    v, f = S._icosphere(3)
    assert M.count_self_intersections(v, f) == 0
    two_v = np.concatenate([v, v + [0.9, 0.13, 0.07]])
    two_f = np.concatenate([f, f + len(v)])
    assert M.count_self_intersections(two_v, two_f) > 20
    apart = np.concatenate([v, v + [2.5, 0, 0]])
    assert M.count_self_intersections(apart, two_f) == 0
    # Region filter: only pairs touching the region count.
    assert M.count_self_intersections(two_v, two_f, np.arange(len(v))) > 0
    assert M.count_self_intersections(two_v, two_f, np.arange(len(v)), within=True) == 0
    # Duplicated vertices (split seams) are welded: a split sphere is still clean.
    split_v = np.concatenate([v, v])
    split_f = f.copy()
    split_f[::2] += len(v)
    assert M.count_self_intersections(split_v, split_f) == 0


def test_self_intersections_on_the_head(short):
    s = short
    face = s.truth_regions["face"]
    assert M.count_self_intersections(s.truth_base_vertices, s.truth_faces, face, within=True) == 0
    assert M.count_self_intersections(s.truth_vertices, s.truth_faces, face, within=True) == 0
    # Push the right half of the face through the left half.
    pushed = s.truth_vertices.copy()
    right = face[pushed[face, 0] > 0.005]
    pushed[right, 0] -= 0.008
    assert M.count_self_intersections(pushed, s.truth_faces, face, within=True) > 50
