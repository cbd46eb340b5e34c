"""Generation metrics (MMD-CD, COV, JSD with PointFlow's definitions) on small real meshes."""
import numpy as np
import pytest

from headcraft_backend.evaluate import shape_metrics as M


def ellipsoid(axes, n_side=40, centre=(0.0, 0.0, 0.0)):
    """A UV ellipsoid with semi-axes `axes` (metres) and its triangles."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n_side, endpoint=False),
                       np.linspace(0.05, np.pi - 0.05, n_side), indexing="xy")
    unit = np.stack([np.sin(v) * np.cos(u), np.sin(v) * np.sin(u), np.cos(v)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_side - 1), np.arange(n_side), indexing="ij")
    a = i * n_side + j
    b = i * n_side + (j + 1) % n_side
    c, d = a + n_side, b + n_side
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return unit * np.asarray(axes) + np.asarray(centre), faces


@pytest.fixture(scope="module")
def reference():
    """Five head-sized ellipsoids whose semi-axes differ by 6 to 10 mm from one to the next."""
    return [ellipsoid((0.07 + 0.01 * k, 0.095 - 0.006 * k, 0.10 + 0.008 * k)) for k in range(5)]


def brute_chamfer(a, b):
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return d.min(1).mean() + d.min(0).mean()


# --- sampling ----------------------------------------------------------------------------------
def test_sampling_is_uniform_by_area():
    # Two separate triangles with areas 1 : 3 (x < 2 and x > 2).
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [3, 0, 0], [6, 0, 0], [3, 2, 0]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    p = M.sample_points(v, f, 40_000, np.random.default_rng(1))
    assert p.shape == (40_000, 3)
    small = p[:, 0] < 2
    assert small.mean() == pytest.approx(0.25, abs=0.01)
    # Uniform inside each triangle: the mean is the centroid and no point leaves its triangle.
    np.testing.assert_allclose(p[small].mean(0), v[:3].mean(0), atol=0.01)
    np.testing.assert_allclose(p[~small].mean(0), v[3:].mean(0), atol=0.02)
    x, y = p[small, 0], p[small, 1]
    assert np.all(x >= -1e-12) and np.all(y >= -1e-12) and np.all(x + y / 2 <= 1 + 1e-12)


def test_sampling_is_deterministic_from_the_seed():
    v, f = ellipsoid((0.08, 0.09, 0.1), 20)
    a = M.sample_points(v, f, 500, np.random.default_rng(7))
    b = M.sample_points(v, f, 500, np.random.default_rng(7))
    c = M.sample_points(v, f, 500, 7)
    d = M.sample_points(v, f, 500, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.allclose(a, d)


def test_sampling_ignores_zero_area_triangles_and_rejects_empty_meshes():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], float)
    p = M.sample_points(v, [[0, 1, 2], [3, 3, 3], [0, 1, 1]], 2000, 0)
    assert np.all(p[:, 2] == 0)
    with pytest.raises(ValueError):
        M.sample_points(v, [[3, 3, 3]], 10, 0)


# --- chamfer -----------------------------------------------------------------------------------
def test_chamfer_by_hand():
    a = np.array([[0.0, 0, 0], [1, 0, 0]])
    assert M.chamfer(a, a) == 0
    assert M.chamfer(a, a + [0, 0.5, 0]) == pytest.approx(2 * 0.25)      # every match 0.5 away
    b = np.array([[1.0, 0, 0], [3, 0, 0]])
    one = a[:1]
    assert M.chamfer(one, b) == pytest.approx(1 + (1 + 9) / 2)           # squared, per-side means
    assert M.chamfer(b, one) == M.chamfer(one, b)
    with pytest.raises(ValueError):
        M.chamfer(a, [[np.nan, 0, 0]])


def test_chamfer_matches_brute_force_and_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(200, 3)) + 0.3
    assert M.chamfer(a, b) == pytest.approx(brute_chamfer(a, b), rel=1e-10)
    assert M.chamfer(a, b) == pytest.approx(M.chamfer(b, a), rel=1e-12)


def test_pairwise_chamfer_matches_chamfer():
    rng = np.random.default_rng(1)
    gen = [rng.normal(size=(n, 3)) * s for n, s in ((100, 1), (250, 2), (80, 0.5))]
    ref = [rng.normal(size=(n, 3)) + o for n, o in ((120, 0), (90, 1))]
    D = M.pairwise_chamfer(gen, ref)
    assert D.shape == (3, 2)
    expected = [[brute_chamfer(g, r) for r in ref] for g in gen]
    np.testing.assert_allclose(D, expected, rtol=1e-10)


# --- MMD / COV on matrices ---------------------------------------------------------------------
def test_mmd_and_cov_by_hand():
    D = np.array([[1.0, 5.0, 9.0],
                  [2.0, 0.5, 7.0],
                  [3.0, 4.0, 6.0]])       # rows: generated, columns: reference
    assert M.mmd(D) == pytest.approx((1 + 0.5 + 6) / 3)
    assert M.cov(D) == pytest.approx(2 / 3)           # nearest references per row: 0, 1, 1
    assert M.cov(np.array([[1.0, 2.0], [0.5, 3.0]])) == 0.5


# --- JSD ---------------------------------------------------------------------------------------
def test_jsd_bounds():
    rng = np.random.default_rng(2)
    a = rng.random((5000, 3))
    assert M.jsd(a, a) == 0
    assert M.jsd(a, a + 10) == pytest.approx(1.0)     # disjoint supports: log2(2)
    for _ in range(5):
        p, q = rng.random((2000, 3)), rng.random((2000, 3)) ** 2
        assert 0 < M.jsd(p, q) < 1
    assert M.jsd(p, q) == pytest.approx(M.jsd(q, p))


def test_jsd_by_hand_on_two_bins():
    # A 2^3 grid over the cube [0, 1]^3: P puts all mass on one corner, Q half on each of two.
    p = np.array([[0.0, 0, 0], [1, 1, 1]])[:1].repeat(4, 0)
    q = np.array([[0.0, 0, 0], [1, 1, 1]]).repeat(2, 0)
    # M = (3/4, 1/4): H(M) - (H(P) + H(Q)) / 2 = H(3/4, 1/4) - 1/2.
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert M.jsd(p, q, resolution=2) == pytest.approx(h - 0.5)


# --- whole sets --------------------------------------------------------------------------------
def test_identical_sets(reference):
    r = M.evaluate_sets(reference, reference, n_points=4000, seed=0)
    assert r["cov"] == 1.0
    assert r["num_generated"] == r["num_reference"] == 5
    # MMD is sampling noise only: well below the CD between neighbouring references.
    gap = M.chamfer(M.sample_points(*reference[0], 4000, 0), M.sample_points(*reference[1], 4000, 1))
    assert 0 < r["mmd"] < gap / 3
    # JSD too: ~0.08 with 20K points per side on a 28^3 grid, and it shrinks with more points.
    assert 0 < r["jsd"] < 0.15
    a, b = (M.sample_points(*reference[0], 200_000, s) for s in (0, 1))
    assert M.jsd(a, b) < 0.01


def test_collapsed_generator_covers_one_reference(reference):
    r = M.evaluate_sets([reference[2]] * 5, reference, n_points=4000, seed=0)
    assert r["cov"] == pytest.approx(1 / 5)


def test_shifted_and_scaled_sets_score_worse(reference):
    same = M.evaluate_sets(reference, reference, n_points=4000, seed=0)
    shifted = M.evaluate_sets([(v + [0, 0, 0.02], f) for v, f in reference], reference, 4000, 0)
    scaled = M.evaluate_sets([(v * 1.2, f) for v, f in reference], reference, 4000, 0)
    for worse in (shifted, scaled):
        assert worse["mmd"] > 3 * same["mmd"]
        assert worse["jsd"] > 3 * same["jsd"]
        assert 0 <= worse["jsd"] <= 1


def test_reference_samples_do_not_depend_on_the_generated_set(reference):
    a = M.evaluate_sets(reference, reference, n_points=1000, seed=3)
    b = M.evaluate_sets(reference, reference, n_points=1000, seed=3)
    assert a == b
    # Adding a generated mesh leaves the reference clouds alone: the first MMD column terms agree.
    c = M.evaluate_sets(reference + [reference[0]], reference, n_points=1000, seed=3)
    assert c["num_generated"] == 6 and c["mmd"] <= a["mmd"]


def test_format_table():
    rows = {"HeadCraft": {"mmd": 1.234e-6, "cov": 0.5, "jsd": 0.0123},
            "Baseline": {"mmd": 10.5e-6, "cov": 0.25, "jsd": 0.2}}
    table = M.format_table(rows)
    lines = table.splitlines()
    assert "MMD-CD (mm^2)" in lines[0] and "COV (%)" in lines[0] and "JSD" in lines[0]
    assert lines[2].split() == ["HeadCraft", "1.234", "50.0", "0.0123"]
    assert lines[3].split() == ["Baseline", "10.500", "25.0", "0.2000"]


# --- error bars and the nearest-training check -------------------------------------------------
@pytest.fixture(scope="module")
def many():
    """Twelve ellipsoids, semi-axes 4 mm apart from one to the next, as 800-point clouds."""
    meshes = [ellipsoid((0.07 + 0.004 * k, 0.09 - 0.002 * k, 0.10 + 0.003 * (k % 4)), 24) for k in range(12)]
    return [M.sample_points(v, f, 800, k) for k, (v, f) in enumerate(meshes)]


def test_identical_clouds_give_zero_mmd_full_coverage_and_a_tight_interval(many):
    r = M.evaluate_clouds(many, many, resamples=200, seed=0)
    assert r["mmd"] == 0.0 and r["cov"] == 1.0 and r["jsd"] == pytest.approx(0.0, abs=1e-12)
    assert r["mmd_std"] == 0.0 and r["cov_lo"] == r["cov_hi"] == 1.0
    assert r["num_generated"] == r["num_reference"] == 12 and r["n_points"] == 800


def test_bootstrap_interval_holds_the_value_and_a_shifted_set_is_worse(many):
    half = M.evaluate_clouds(many[::2], many[1::2], resamples=300, seed=1)
    shifted = M.evaluate_clouds([c + [0.0, 0.0, 0.03] for c in many[::2]], many[1::2], resamples=300, seed=1)
    for r in (half, shifted):
        for k in ("mmd", "cov", "jsd"):
            assert r[f"{k}_lo"] <= r[k] <= r[f"{k}_hi"], (k, r)
            assert r[f"{k}_std"] >= 0
    assert shifted["mmd"] > 3 * half["mmd"] and shifted["jsd"] > half["jsd"]
    # MMD's error bars do not overlap: the metric separates these sets
    assert shifted["mmd_lo"] > half["mmd_hi"]
    # the bootstrap is reproducible from its seed and spreads with the references' spread
    again = M.evaluate_clouds(many[::2], many[1::2], resamples=300, seed=1)
    assert again == half


def test_bootstrap_by_hand():
    D = np.array([[1.0, 5.0, 9.0], [2.0, 1.0, 9.0]])     # reference 2 is nobody's nearest
    b = M.bootstrap(D, n=2000, seed=0)
    # per reference: min distance (1, 1, 9), matched (1, 1, 0); means 11/3 and 2/3
    assert M.mmd(D) == pytest.approx(11 / 3) and M.cov(D) == pytest.approx(2 / 3)
    assert b["mmd_std"] == pytest.approx(np.std([1, 1, 9]) / np.sqrt(3), rel=0.1)
    assert b["cov_lo"] <= 2 / 3 <= b["cov_hi"] and 0 <= b["cov_lo"] and b["cov_hi"] <= 1
    with pytest.raises(ValueError):
        M.bootstrap(D, n=1)


def test_nearest_training_tells_copies_from_new_shapes(many):
    train = many[:8]
    copies = M.nearest_training([c + 1e-5 for c in train[:3]], train)
    assert copies["copies"] == 1.0 and np.all(copies["generated"] < 1e-9)
    np.testing.assert_array_equal(copies["nearest"], [0, 1, 2])
    new = M.nearest_training(many[8:], train)
    assert new["copies"] == 0.0 and new["generated"].shape == (4,) and new["training"].shape == (8,)
    assert np.all(new["generated"] > 0) and np.all(np.isfinite(new["training"]))
    text = M.format_nearest(new)
    assert "median" in text and "0 %" in text.splitlines()[-1]
    with pytest.raises(ValueError):
        M.nearest_training(many[:2], many[:1])


def test_format_table_with_error_bars():
    rows = {"ours": {"mmd": 2e-6, "mmd_std": 0.5e-6, "mmd_lo": 1e-6, "mmd_hi": 3e-6, "cov": 0.5, "jsd": 0.1}}
    line = M.format_table(rows).splitlines()[2]
    assert "2.000 ± 0.500 [1.000, 3.000]" in line and "50.0" in line
