"""Fit Scan on a real scan (issue 16): the Demosthenes bust (CC BY 4.0, ryanfb) fitted with the
default settings: no folded-over or newly crossing triangles on face, scalp and ears, and
the detailed head much closer to the scan than the fitted one where it moves."""
import numpy as np
import pytest

from headcraft_backend.evaluate.real_scans import quality
from headcraft_backend.fit.metrics import self_intersecting_pairs, surface_distances
from headcraft_backend.fit.pipeline import FitOptions, fit_scan
from headcraft_backend.fit.scan import load_scan_file
from headcraft_backend.head.dense import dense_template
from headcraft_backend.head.model import HeadModel
from headcraft_backend.head.registry import load_model_data


@pytest.fixture(scope="module")
def fitted(demosthenes):
    data = load_model_data({"model": "openhead"})
    dense = dense_template(data)
    scan = load_scan_file(demosthenes)
    options = FitOptions(preset="preview")      # the paper preset gives the same 0s (eval-real)
    res = fit_scan(HeadModel(data), dense, scan, options)
    sim = res.coarse.similarity
    points = sim.inverse(scan.sample_points(options.num_points, options.seed).astype(np.float64))
    scan_v = sim.inverse(np.asarray(scan.vertices, np.float64))
    detailed = quality(res.base, res.final, dense.faces, dense.regions, scan_v, scan.faces, points)
    to_scan = surface_distances(res.base, scan_v, scan.faces) * 1000.0
    fitted = {name: float(np.median(to_scan[np.asarray(dense.regions[name])])) for name in ("face", "scalp")}
    eyes = np.zeros(len(res.final), bool)      # lids against the eyeballs: the regions' figures leave these out
    eyes[np.r_[dense.regions["face"], dense.regions["eyeballs"]]] = True
    detailed["lids_eyeballs"] = {"folded": 0, "new_self_intersections": max(0, len(
        self_intersecting_pairs(res.final, dense.faces, eyes, within=True)) - len(
        self_intersecting_pairs(res.base, dense.faces, eyes, within=True)))}
    return detailed, fitted


def test_real_scan_fit_folds_and_crosses_nothing(fitted):
    detailed, _ = fitted
    for region in ("face", "scalp", "ears", "lids_eyeballs"):
        r = detailed[region]
        assert r["folded"] == 0 and r["new_self_intersections"] == 0, (region, r)


def test_real_scan_detail_beats_the_fitted_head(fitted):
    detailed, base = fitted
    for region in ("face", "scalp"):
        assert detailed[region]["result_to_scan_median"] < 0.5 * base[region], (region, base[region])
    assert detailed["face"]["result_to_scan_median"] <= 0.5
    assert detailed["scalp"]["result_to_scan_median"] <= 1.0
