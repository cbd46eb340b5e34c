"""Fit Scan on a real scan (issue 16): the Demosthenes bust (CC BY 4.0, ryanfb) fitted with the
default settings: no folded-over or newly crossing face triangles, few on the scalp, and
the detailed head much closer to the scan than the fitted one where it moves."""
import numpy as np
import pytest

from headcraft_backend.evaluate.real_scans import quality
from headcraft_backend.fit.metrics import surface_distances
from headcraft_backend.fit.pipeline import FitOptions, fit_scan
from headcraft_backend.fit.scan import load_scan_file
from headcraft_backend.fit.subdivision import dense_template
from headcraft_backend.head.model import HeadModel
from headcraft_backend.head.registry import load_model_data


@pytest.fixture(scope="module")
def fitted(demosthenes):
    data = load_model_data({"model": "openhead"})
    dense = dense_template(data)
    scan = load_scan_file(demosthenes)
    options = FitOptions(preset="preview")
    res = fit_scan(HeadModel(data), dense, scan, options)
    sim = res.coarse.similarity
    points = sim.inverse(scan.sample_points(options.num_points, options.seed).astype(np.float64))
    scan_v = sim.inverse(np.asarray(scan.vertices, np.float64))
    detailed = quality(res.base, res.final, dense.faces, dense.regions, scan_v, scan.faces, points)
    to_scan = surface_distances(res.base, scan_v, scan.faces) * 1000.0
    fitted = {name: float(np.median(to_scan[np.asarray(dense.regions[name])])) for name in ("face", "scalp")}
    return detailed, fitted


def test_real_scan_fit_does_not_fold_the_face(fitted):
    detailed, _ = fitted
    face, scalp = detailed["face"], detailed["scalp"]
    assert face["folded"] == 0 and face["new_self_intersections"] == 0, face
    # Stage 1 still turns some hair triangles over at the ears (issue 16, open; the old default
    # left 825 folded on this scalp), and the preview preset's 4x steps cross a few (paper: 0).
    assert scalp["folded"] < 300 and scalp["new_self_intersections"] <= 10, scalp


def test_real_scan_detail_beats_the_fitted_head(fitted):
    detailed, base = fitted
    for region in ("face", "scalp"):
        assert detailed[region]["result_to_scan_median"] < 0.5 * base[region], (region, base[region])
    assert detailed["face"]["result_to_scan_median"] <= 0.5
    assert detailed["scalp"]["result_to_scan_median"] <= 1.0
