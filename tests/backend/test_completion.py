"""Completion of partial scans: depth back-projection, refused inputs, the PCA baseline's masked
fit, and the whole pipeline on a procedural depth view with ground truth."""
import numpy as np
import pytest

from headcraft_backend.errors import UserError
from headcraft_backend.fit.depth import Intrinsics, back_project, read_depth_file

K = Intrinsics(200.0, 220.0, 79.5, 59.5)      # a 160 x 120 image, principal point at its centre


def _rays(shape, k):
    v, u = np.mgrid[:shape[0], :shape[1]]
    return (u - k.cx) / k.fx, (v - k.cy) / k.fy


def test_back_projection_of_a_plane_and_a_sphere():
    depth = np.full((120, 160), 2.0)
    pts = back_project(depth, K)
    assert pts.shape == (160 * 120, 3) and np.allclose(pts[:, 2], 2.0)
    # the image's corners lie on the rays through the corner pixels' centres
    assert np.allclose(pts[0], [-79.5 * 2 / 200, -59.5 * 2 / 220, 2.0])
    assert np.allclose(pts[-1], [79.5 * 2 / 200, 59.5 * 2 / 220, 2.0])
    # a unit sphere 3 units ahead: the z-depth where each pixel's ray meets it
    x, y = _rays((120, 160), K)
    a = x * x + y * y + 1
    disc = 9 - a * 8                   # |t (x, y, 1) - (0, 0, 3)|^2 = 1, solved for t (= z)
    hit = disc > 0
    depth = np.where(hit, (3 - np.sqrt(np.where(hit, disc, 0))) / a, 0.0)
    pts = back_project(depth, K)
    assert len(pts) == hit.sum() > 1000
    np.testing.assert_allclose(np.linalg.norm(pts - [0, 0, 3], axis=1), 1.0, atol=1e-9)
    assert pts[:, 2].max() < 3.0        # only the near half is seen


@pytest.mark.parametrize("depth, k, message", [
    (np.where(np.eye(120, 160) > 0, np.nan, 1.0), K, "NaN or infinite"),
    (np.zeros((120, 160)), K, "no measured pixel"),
    (-np.ones((120, 160)), K, "negative"),
    (np.ones((120, 160)), Intrinsics(-200, 220, 79.5, 59.5), "focal lengths must be positive"),
    (np.ones((120, 160)), Intrinsics(200, 220, 400, 300), "outside the 160x120 depth image"),
    (np.ones(5), K, "(H, W)"),
])
def test_bad_depth_images_are_refused_with_a_message(depth, k, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        back_project(depth, k)


def test_depth_files_and_intrinsics_text(tmp_path):
    from PIL import Image
    codes = np.zeros((4, 6), np.uint16)
    codes[1:3, 2:4] = 1500
    Image.fromarray(codes).save(tmp_path / "d.png")
    depth = read_depth_file(tmp_path / "d.png", scale=0.001)
    assert depth.shape == (4, 6) and depth.max() == pytest.approx(1.5) and (depth > 0).sum() == 4
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="16-bit"):
        read_depth_file(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="fx,fy,cx,cy"):
        Intrinsics.parse("500,500,320")
    assert Intrinsics.parse("500, 510,320,240") == Intrinsics(500, 510, 320, 240)


def test_complete_command_reports_bad_input_in_one_line(tmp_path, capsys):
    from headcraft_backend.cli import main
    bad = np.ones((120, 160), np.float32)
    bad[5, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["complete", "--depth", str(tmp_path / "nan.npy"), "--intrinsics", "200,220,79.5,59.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("headcraft-backend complete:") and "1 NaN" in err and "\n" not in err
    assert main(["complete", "--depth", str(tmp_path / "nan.npy")]) == 2
    assert "--intrinsics" in capsys.readouterr().err


def test_the_job_refuses_a_depth_image_without_intrinsics_or_with_nan():
    from headcraft_backend.compute import Compute
    from headcraft_backend.service.server import load_all
    complete = load_all()["generate.complete"]
    with pytest.raises(UserError, match="intrinsics"):
        complete(Compute("cpu"), {}, {"depth": np.ones((120, 160), np.float32)})
    depth = np.ones((120, 160), np.float32)
    depth[0, 0] = np.inf
    with pytest.raises(UserError, match="NaN or infinite"):
        complete(Compute("cpu"), {"intrinsics": [200, 220, 79.5, 59.5]}, {"depth": depth})
    with pytest.raises(UserError, match="no scan was sent"):
        complete(Compute("cpu"), {}, {})


def test_pca_masked_fit_fills_the_hidden_half():
    from headcraft_backend.generate.pca import PCAModel
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(4, 16 * 16 * 3))
    maps = (rng.normal(size=(40, 4)) * [4, 3, 2, 1]) @ basis
    model = PCAModel.fit(maps.reshape(40, 16, 16, 3), 4)
    truth = ((np.array([1.5, -2.0, 1.0, 0.5]) @ basis).reshape(16, 16, 3)).astype(np.float32)
    mask = np.zeros((16, 16), np.float32)
    mask[:, :8] = 1
    got = model.fit_masked(truth, mask, noise=1e-3)
    hidden = np.abs(got[:, 8:] - truth[:, 8:]).mean()
    assert hidden < 0.01 * np.abs(truth[:, 8:] - model.mean[:, 8:]).mean()


def test_completion_of_a_front_depth_view_beats_the_template_on_the_unseen_part():
    """The whole path of `complete --depth` on a procedural head with ground truth (few steps):
    the completed head is nearer the true unseen surface (the back of the head, the hair) than
    the fitted template alone."""
    from headcraft_backend.compute import Compute
    from headcraft_backend.evaluate.completion import format_table, unseen_errors
    from headcraft_backend.fit.pipeline import fit_options
    from headcraft_backend.generate.checkpoint import DEMO_MODEL
    from headcraft_backend.generate.complete import completion_options
    from headcraft_backend.generate.fit_latent import LatentFitSettings
    from headcraft_backend.head.registry import load_model_data
    fit = fit_options("preview", partial=True, num_points=50_000, stage1={"steps": 30}, stage2={"steps": 30},
                      coarse={"scale": 1.0, "rounds": 10, "iterations": 10})
    options = completion_options(fit, LatentFitSettings(steps_z=100, steps_delta=100, steps_noise=0))
    rows = unseen_errors(load_model_data({"model": "openhead"}), str(DEMO_MODEL), None, options, n=1,
                         device="cpu", report=lambda *a: None)
    completed, template = (np.median(rows[k][0]) for k in ("completed (HeadCraft)", "template, no displacement"))
    assert completed < template, format_table(rows)
    assert "completed (HeadCraft)" in format_table(rows)
