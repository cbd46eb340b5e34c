"""Workflows on detailed heads (issue 19): interpolation between two fitted heads and hair
transfer from a driver head to a source head, over the wire with the bundled demo generator."""
import numpy as np
import pytest

from headcraft_backend.head.dense import dense_template
from headcraft_backend.head.registry import load_model_data

MM = 1000.0


@pytest.fixture(scope="module")
def heads(conn_module):
    """Two detailed heads of different identities: demo-generator samples (seeds 1 and 2) on the
    template and on a 4 % larger head, as Fit Scan would hand them over (dense base + displacement)."""
    data = load_model_data({"model": "openhead"})
    out = []
    for seed, scale in ((1, 1.0), (2, 1.04)):
        j = conn_module.submit("generate.sample", {"model": "openhead", "seed": seed},
                               {"coarse_vertices": (data.v_template * scale).astype(np.float32)}).wait(600)
        assert j.state == "done", j.error
        out.append({"base": j.arrays["base"], "displacement": j.arrays["displacement"]})
    regions = dense_template(data).regions
    return out, regions


@pytest.fixture(scope="module")
def conn_module(backend_process):
    c = backend_process.connect()
    yield c
    c.close()


def _err_mm(d, ref, idx):
    return float(np.median(np.linalg.norm(d[idx] - ref[idx], axis=1)) * MM)


def _arrays(a, b, names):
    return {f"base_{names[0]}": a["base"], f"displacement_{names[0]}": a["displacement"],
            f"base_{names[1]}": b["base"], f"displacement_{names[1]}": b["displacement"]}


def _inner(regions, name, other):
    """A region's vertices minus those near the other region (the seam blend band)."""
    return np.setdiff1d(regions[name], regions[other])


def test_transfer_hair_between_detailed_heads(conn, heads):
    (a, b), regions = heads
    face, scalp = _inner(regions, "face", "scalp"), _inner(regions, "scalp", "face")
    assert _err_mm(a["displacement"], b["displacement"], scalp) > 0.5      # the two hairs differ
    j = conn.submit("generate.transfer_hair", {"model": "openhead", "hair_source": "map"},
                    _arrays(a, b, ("face", "hair"))).wait(600)
    assert j.state == "done", j.error
    np.testing.assert_allclose(j.arrays["base"], a["base"], atol=1e-6)          # on the source's head
    d = j.arrays["displacement"]
    assert _err_mm(d, a["displacement"], face) < 0.1 * _err_mm(d, b["displacement"], face)
    assert _err_mm(d, b["displacement"], scalp) < 0.1 * _err_mm(d, a["displacement"], scalp)
    # the paper's way: the driver's hair from its latent fit
    j = conn.submit("generate.transfer_hair", {"model": "openhead", "hair_source": "generator", "fit_steps": 60,
                                               "lpips": False}, _arrays(a, b, ("face", "hair"))).wait(900)
    assert j.state == "done", j.error
    d = j.arrays["displacement"]
    assert _err_mm(d, a["displacement"], face) < 0.1 * _err_mm(d, b["displacement"], face)
    assert _err_mm(d, b["displacement"], scalp) < _err_mm(d, a["displacement"], scalp)


def test_interpolate_between_two_fitted_heads(conn, heads):
    (a, b), regions = heads
    steps = 3
    j = conn.submit("generate.interpolate_heads", {"model": "openhead", "steps": steps, "fit_steps": 60,
                                                   "lpips": False}, _arrays(a, b, ("a", "b"))).wait(900)
    assert j.state == "done", j.error
    out = j.arrays
    np.testing.assert_allclose(out["base_0"], a["base"], atol=1e-6)
    np.testing.assert_allclose(out["base_2"], b["base"], atol=1e-6)
    np.testing.assert_allclose(out["base_1"], 0.5 * (a["base"] + b["base"]), atol=1e-6)
    assert out["ws_a"].shape == out["ws_b"].shape and out["ws_a"].shape[0] == 1
    head = np.arange(len(a["base"]))
    ends = [(out["displacement_0"], a, b), (out["displacement_2"], b, a)]
    for d, near, far in ends:    # each end is the generator's version of its own head
        assert _err_mm(d, near["displacement"], head) < _err_mm(d, far["displacement"], head)
    mid = out["displacement_1"]
    assert 0.2 < _err_mm(mid, out["displacement_0"], head) / _err_mm(out["displacement_2"], out["displacement_0"], head) < 0.8


def test_wrong_heads_are_refused(conn, heads):
    (a, b), _ = heads
    bad = _arrays(a, b, ("a", "b"))
    bad["base_b"] = bad["base_b"][:-1]
    j = conn.submit("generate.interpolate_heads", {"model": "openhead", "steps": 3}, bad).wait(300)
    assert j.state == "error" and "base_b" in str(j.error)
    j = conn.submit("generate.transfer_hair", {"model": "openhead", "layout": "standard", "hair_source": "map"},
                    _arrays(a, b, ("face", "hair"))).wait(300)
    assert j.state == "error" and "left half" in str(j.error)


def test_cli_interpolate_between_maps_and_transfer_hair(tmp_path, heads):
    """`interpolate --from-map A --to-map B` and `transfer-hair` on two heads' baked maps."""
    import subprocess
    import sys
    from headcraft_backend.layout import formats
    (a, b), regions = heads
    run = lambda *args: subprocess.run([sys.executable, "-m", "headcraft_backend", *args], cwd=tmp_path,  # noqa: E731
                                       capture_output=True, text=True, timeout=900)
    for name, h in (("a", a), ("b", b)):
        np.savez(tmp_path / f"{name}_fit.npz", base=h["base"], displacement=h["displacement"])
        r = run("bake", f"{name}_fit.npz", "--size", "512", "--format", "exr", "--out", "maps", "--device", "cpu")
        assert r.returncode == 0, r.stderr
    r = run("interpolate", "", "--from-map", "maps/a_object.exr", "--to-map", "maps/b_object.exr", "--steps", "3",
            "--fit-steps", "30", "--out", "interp", "--device", "cpu")
    assert r.returncode == 0 and "fitted styles" in r.stdout, r.stderr
    assert sorted(p.name for p in (tmp_path / "interp").glob("*.obj")) == [f"step{i:03d}.obj" for i in range(3)]
    r = run("transfer-hair", "--face-map", "maps/a_object.exr", "--hair-map", "maps/b_object.exr", "--out", "th",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    m, ma, mb = (formats.read(tmp_path / p) for p in ("th/transferred.exr", "maps/a_object.exr", "maps/b_object.exr"))
    np.testing.assert_array_equal(m[:, :256], ma[:, :256])
    np.testing.assert_array_equal(m[:, 256:], mb[:, 256:])
    r = run("interpolate", "", "--from-map", "maps/a_object.exr", "--out", "x")
    assert r.returncode == 2 and "--to-map" in r.stderr and "Traceback" not in r.stderr
