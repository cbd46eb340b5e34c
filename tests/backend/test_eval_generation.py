"""`headcraft-backend eval`: the Table 1 rows for a generator, a PCA baseline and the template,
on whole heads and on the displacement part, with error bars and the nearest-training check."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from headcraft_backend.dataset.synth import scan_style
from headcraft_backend.evaluate import generation as E
from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.networks import Generator
from headcraft_backend.generate.pca import PCAModel
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.procedural.scans import make_scan, truth_on_template


@pytest.fixture(scope="module")
def data():
    return load_model_data({"model": "openhead"})


def test_table1_rows_for_every_method_and_its_cache(data, tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=256,
                  channel_max=32)
    _, cfg = checkpoint.save(G, tmp_path / "g")
    maps = np.random.default_rng(0).normal(0, 0.3, (6, 64, 64, 3)).astype(np.float32)
    _, pca = PCAModel.fit(maps, 4).save(tmp_path / "pca")
    lines = []
    t = E.table1(data, {"ours": str(cfg), "pca": str(pca), "template": None}, n=3, n_train=3, n_points=300,
                 resamples=50, device="cpu", cache=tmp_path / "cache", report=lines.append)
    for rows in (t.whole, t.part):
        assert list(rows) == ["ours", "pca", "template"]
        for r in rows.values():
            assert r["mmd"] > 0 and 1 / 3 <= r["cov"] <= 1 and 0 <= r["jsd"] <= 1 and r["num_reference"] == 3
            assert r["mmd_lo"] <= r["mmd"] <= r["mmd_hi"] and r["mmd_std"] >= 0
    # on the template the bare template row is one head three times: it covers one reference
    assert t.part["template"]["cov"] == pytest.approx(1 / 3)
    assert set(t.nearest) == {"ours", "pca", "template"} and t.nearest["ours"]["training"].shape == (3,)
    text = "\n".join(lines)
    assert "Displacement part" in text and "Whole heads" in text and "Nearest training head" in text and "±" in text
    # the procedural heads were cached (3 reference + 3 training) and a second run reads them back
    files = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 6
    first = E.procedural_clouds(data, [E.HELD_APART_SEED], "styles", 300, cache=tmp_path / "cache")
    fresh = E.procedural_clouds(data, [E.HELD_APART_SEED], "styles", 300, cache=False)
    np.testing.assert_array_equal(first.part[0], fresh.part[0])
    np.testing.assert_array_equal(first.whole[0], fresh.whole[0])


def test_population_heads_are_held_apart_and_deterministic(data):
    assert E.HELD_APART_SEED >= 1_000_000 > E.TRAINING_SEED
    a, b = (E.population_scan(data, E.HELD_APART_SEED + 4, "looks") for _ in range(2))
    np.testing.assert_array_equal(a.truth_vertices, b.truth_vertices)
    assert a.look and not E.population_scan(data, 4, "styles").look
    # the styles population is the bundled model's training set: synth --hair random
    for seed in (4, 13):
        assert E.population_scan(data, seed, "styles").hair == scan_style("random", seed)
    with pytest.raises(ValueError, match="population"):
        E.population_scan(data, 0, "nope")


def test_truth_on_template_keeps_the_displacement_and_drops_the_identity(data):
    kw = dict(similarity=False, junk=False, holes=0, noise_mm=0.0, color=False, scanner=False)
    bare = [make_scan(data, s, hair="none", detail=False, **kw) for s in (1, 2)]
    t0, t1 = (truth_on_template(data, s) for s in bare)
    assert np.abs(bare[0].truth_vertices - bare[1].truth_vertices).max() > 5e-3     # other identities...
    np.testing.assert_allclose(t0, t1, atol=1e-12)                                     # ...one template
    haired = make_scan(data, 1, hair="long", **kw)
    on = truth_on_template(data, haired)
    # offsets keep their lengths (turned, not scaled) and sit on the bare template
    np.testing.assert_allclose(np.linalg.norm(on - t0, axis=1),
                               np.linalg.norm(haired.truth_vertices - haired.truth_base_vertices, axis=1), atol=1e-9)
    assert np.linalg.norm(on - t0, axis=1).max() > 0.01
    # the scanner's visibility test does not change the truth
    seen = make_scan(data, 1, hair="long", **{**kw, "scanner": True})
    np.testing.assert_array_equal(seen.truth_vertices, haired.truth_vertices)
    assert haired.truth_observed.all() and not seen.truth_observed.all()


def test_eval_cli_names_a_missing_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "eval", "--checkpoint", str(tmp_path / "no.json"),
                        "--n-fit", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no.json: not found" in r.stderr and "Traceback" not in r.stderr
