"""`headcraft-backend eval`: the Table 1 rows for a generator, a PCA baseline and the template."""
import subprocess
import sys

import numpy as np
import torch

from headcraft_backend.evaluate.generation import HELD_APART_SEED, reference_heads, table
from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.networks import Generator
from headcraft_backend.generate.pca import PCAModel
from headcraft_backend.head.registry import load_model_data


def test_table_rows_for_every_method(tmp_path):
    d = load_model_data({"model": "openhead"})
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=256,
                  channel_max=32)
    _, cfg = checkpoint.save(G, tmp_path / "g")
    maps = np.random.default_rng(0).normal(0, 0.3, (6, 64, 64, 3)).astype(np.float32)
    _, pca = PCAModel.fit(maps, 4).save(tmp_path / "pca")
    lines = []
    rows = table(d, {"ours": str(cfg), "pca": str(pca), "template": None}, n=3, n_points=500, device="cpu",
                 report=lines.append)
    assert list(rows) == ["ours", "pca", "template"]
    for r in rows.values():
        assert r["mmd"] > 0 and 1 / 3 <= r["cov"] <= 1 and 0 <= r["jsd"] <= 1 and r["num_reference"] == 3
    assert "MMD-CD" in lines[-1] and "template" in lines[-1]
    # the reference heads are the procedural truth: held apart from training seeds, deterministic
    a, b = reference_heads(d, 1), reference_heads(d, 1)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert HELD_APART_SEED >= 1_000_000


def test_eval_cli_names_a_missing_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "eval", "--checkpoint", str(tmp_path / "no.json"),
                        "--n-fit", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no.json: not found" in r.stderr and "Traceback" not in r.stderr
