"""Landmarks a user already has (issue 16): the file formats, and `fit --landmarks --units`."""
import json

import numpy as np
import pytest

from headcraft_backend.fit.landmark_file import IBUG68, NAMED, read_landmark_file
from headcraft_backend.errors import UserError


def test_json_csv_names_and_68_points(tmp_path):
    pts = {str(i): [float(i), 2.0 * i, -1.0] for i in (33, 133, 362, 263, 4, 61, 291)}
    (tmp_path / "mp.json").write_text(json.dumps({"scheme": "mediapipe", "points": pts}))
    got = read_landmark_file(tmp_path / "mp.json")
    assert set(got) == {33, 133, 362, 263, 4, 61, 291}
    np.testing.assert_array_equal(got[133], [133.0, 266.0, -1.0])
    # 68-point ids map to the same MediaPipe points; unused ones (the jaw line) are dropped
    ib = {str(k): [float(k), 0.0, 0.0] for k in list(IBUG68)[:8] + [0, 5, 16]}
    (tmp_path / "ib.json").write_text(json.dumps({"scheme": "ibug68", "points": ib}))
    got = read_landmark_file(tmp_path / "ib.json")
    assert set(got) == {IBUG68[k] for k in list(IBUG68)[:8]}
    assert got[IBUG68[36]][0] == 36.0
    # CSV with a header, names and numbers mixed, comments
    lines = ["id,x,y,z", "# eyes"] + [f"{n}, {i}, 0, 0" for i, n in enumerate(list(NAMED)[:6])] + ["61 1 2 3"]
    (tmp_path / "lm.csv").write_text("\n".join(lines))
    got = read_landmark_file(tmp_path / "lm.csv")
    assert set(got) == {NAMED[n] for n in list(NAMED)[:6]} | {61}
    np.testing.assert_array_equal(got[61], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("text, suffix, message", [
    ('{"points": {"33": [0, 0, 0]}}', ".json", "at least 6"),
    ('{"scheme": "dlib", "points": {}}', ".json", "scheme must be"),
    ('{"points": [1, 2]}', ".json", "expected"),
    ("not json", ".json", "not valid JSON"),
    ("999, 0, 0, 0", ".csv", "0-477"),
    ("nose, 0, 0, 0", ".csv", "unknown landmark name"),
    ("33, 0, 0", ".csv", "line 1"),
    ('{"points": {"33": [0, "abc", 0]}}', ".json", "three numbers"),
    ('{"points": {"33": [0, NaN, 0]}}', ".json", "not finite"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, text, suffix, message):
    f = tmp_path / f"lm{suffix}"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        read_landmark_file(f)


def test_fit_with_a_landmark_file_and_pinned_units(tmp_path, capsys):
    """A head in millimetres, its landmarks from a file: the CLI fits without detection and the
    scale is the one the user pinned."""
    import torch
    from headcraft_backend import cli
    from headcraft_backend.fit.landmarks import SURFACE_LANDMARKS, model_landmark_embedding
    from headcraft_backend.head.model import HeadModel
    from headcraft_backend.head.registry import load_model_data
    data = load_model_data({"model": "openhead"})
    rng = np.random.default_rng(1)
    with torch.no_grad():
        v = HeadModel(data)(shape=torch.tensor(rng.standard_normal((1, 10)) * 0.5,
                                               dtype=torch.float32)).vertices[0].numpy()
    v_mm = v * 1000.0
    lines = [f"v {a} {b} {c}" for a, b, c in v_mm] + [f"f {a} {b} {c}" for a, b, c in data.faces + 1]
    (tmp_path / "head.obj").write_text("\n".join(lines))
    idx, tri, bary = model_landmark_embedding(data)
    pts = (v_mm[data.faces[tri]] * bary[:, :, None]).sum(1)
    keep = np.isin(idx, SURFACE_LANDMARKS)
    (tmp_path / "head.json").write_text(json.dumps(
        {"scheme": "mediapipe", "points": {str(i): p.tolist() for i, p in zip(idx[keep], pts[keep])}}))
    code = cli.main(["fit", str(tmp_path / "head.obj"), "--landmarks", str(tmp_path / "head.json"),
                     "--units", "mm", "--preset", "preview", "--steps", "2", "--device", "cpu",
                     "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "head_report.json").read_text())
    assert report["landmarks_used"] == int(keep.sum())
    assert report["landmark_rmse_mm"] < 3.0
    with np.load(tmp_path / "out" / "head_fit.npz") as z:
        assert float(z["scale"]) == pytest.approx(1000.0, rel=1e-6)
    # a file with too few points: one line, exit 2, nothing written
    (tmp_path / "few.json").write_text(json.dumps({"points": {"33": [0, 0, 0]}}))
    assert cli.main(["fit", str(tmp_path / "head.obj"), "--landmarks", str(tmp_path / "few.json"),
                     "--out", str(tmp_path / "out2")]) == 2
    assert "at least 6" in capsys.readouterr().err and not (tmp_path / "out2").exists()
