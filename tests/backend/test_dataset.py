"""Data sets (issue 7): `synth` writes procedural scans with ground truth deterministically;
`register-dataset` registers a folder on a local two-worker Ray cluster, reports failing scans
without stopping, and skips finished scans when run again."""
import json
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from headcraft_backend.cli import main
from headcraft_backend.dataset.register import RegisterOptions, orientation_hints, outputs, plan
from headcraft_backend.dataset.synth import read_truth
from headcraft_backend.fit.scan import load_scan_file
from headcraft_backend.procedural.scans import HAIRSTYLES
from headcraft_backend.generate.train import MapFolder
from headcraft_backend.layout import formats

SYNTH = ["--n", "2", "--seed", "0", "--colour", "--views", "1", "--sparse", "200"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    assert main(["synth", *SYNTH, "--out", str(d)]) == 0
    return d


def files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def test_synth_is_deterministic_and_readable(scans, tmp_path):
    again = tmp_path / "again"
    assert main(["synth", *SYNTH, "--out", str(again)]) == 0
    assert files(scans) == files(again)
    for rel in files(scans):
        if rel.suffix == ".npz":
            a, b = np.load(scans / rel), np.load(again / rel)
            assert a.files == b.files
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{rel}: {k}")
        else:
            assert (scans / rel).read_bytes() == (again / rel).read_bytes(), rel

    manifest = json.loads((scans / "manifest.json").read_text())
    assert [e["seed"] for e in manifest["scans"]] == [0, 1]
    assert [e["hair"] for e in manifest["scans"]] == list(HAIRSTYLES[:2])     # 'random' cycles the styles
    for e in manifest["scans"]:
        scan = load_scan_file(scans / e["file"])
        assert scan.is_mesh and len(scan.vertices) > 50_000 and scan.colors is not None
        truth = read_truth(scans / e["truth"])
        assert truth["seed"] == e["seed"] and truth["hair"] == e["hair"]
        for key in ("truth_vertices", "truth_faces", "shape", "expr", "pose", "rotation", "similarity_matrix"):
            assert key in truth, key
        assert {"face", "scalp"} <= set(truth["truth_regions"])
        # The manifest's up/forward are the head's axes in the scan frame; the views have them too.
        np.testing.assert_allclose(e["up"], truth["rotation"][:, 1], atol=1e-12)
        view_hints = orientation_hints(scans / "views")[Path(e["views"][0]).name]
        assert view_hints == (tuple(e["up"]), tuple(e["forward"]))
        view = load_scan_file(scans / e["views"][0])
        sparse = load_scan_file(scans / e["sparse"][0])
        assert not view.is_mesh and len(view.vertices) == len(truth["view0_truth_index"])
        assert len(sparse.vertices) == 200
        np.testing.assert_allclose(sparse.vertices, view.vertices[truth["view0_sparse_index"]])


def test_synth_obj_alias_upright(tmp_path):
    out = tmp_path / "obj"
    assert main(["synth", "--n", "1", "--seed", "5", "--hair", "shoulder-length", "--max-rotation", "0",
                 "--holes", "0", "--format", "obj", "--colour", "--out", str(out)]) == 0
    entry = json.loads((out / "manifest.json").read_text())["scans"][0]
    assert entry["hair"] == "long" and entry["file"] == "scan_000005.obj"
    # a longer run over the same folder keeps the finished scan and adds the next
    written = (out / entry["file"]).stat().st_mtime_ns
    assert main(["synth", "--n", "2", "--seed", "5", "--hair", "shoulder-length", "--max-rotation", "0",
                 "--holes", "0", "--format", "obj", "--colour", "--out", str(out)]) == 0
    assert (out / entry["file"]).stat().st_mtime_ns == written
    assert [e["seed"] for e in json.loads((out / "manifest.json").read_text())["scans"]] == [5, 6]
    np.testing.assert_allclose(read_truth(out / entry["truth"])["rotation"], np.eye(3))
    scan = load_scan_file(out / entry["file"])
    assert scan.is_mesh and scan.colors is not None


@pytest.mark.parametrize("argv", [
    ["synth", "--hair", "mohawk"],
    ["synth", "--sparse", "100"],                     # sparse clouds come from views
    ["synth", "--n", "0"],
    ["register-dataset", "/nonexistent/scans"],
    ["register-dataset", ".", "--size", "8"],
    ["register-dataset", ".", "--up", "0", "0", "1", "--forward", "0", "0", "2"],
])
def test_bad_arguments_exit_2(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headcraft-backend ") and "Traceback" not in err


@pytest.fixture
def ray_env(monkeypatch):
    """Ray's session files in a short temporary folder (its socket paths have a length limit),
    and the cluster's token in the environment instead of ~/.ray."""
    tmp = tempfile.mkdtemp(prefix="hcray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    yield
    shutil.rmtree(tmp, ignore_errors=True)


def test_register_dataset_on_ray(scans, tmp_path, ray_env, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in scans.iterdir():                       # the scans, the manifest (orientation hints)
        if p.is_file():
            shutil.copy(p, folder / p.name)
    (folder / "broken.ply").write_bytes(b"ply\nformat nonsense\n")
    out = tmp_path / "maps"
    argv = ["register-dataset", str(folder), "--out", str(out), "--workers", "2", "--steps", "2",
            "--size", "64", "--format", "png16", "--space", "object", "tangent"]
    assert main(argv) == 1                          # one scan failed
    report = capsys.readouterr()
    assert "failed 1" in report.out and "broken.ply" in report.out and "Traceback" not in report.out + report.err
    errors = json.loads((out / "errors.json").read_text())
    assert [e["scan"] for e in errors] == ["broken.ply"] and "cannot read" in errors[0]["error"]

    ds = MapFolder(out, 64)                         # OUT is a training folder of object-space maps
    assert [p.name for p in ds.files] == ["scan_000000_-20_to_20_ch0.png", "scan_000001_-20_to_20_ch0.png"]
    assert ds[0].shape == (6, 64, 64)
    for stem in ("scan_000000", "scan_000001"):
        for maps_dir in (out, out / "tangent"):
            m = formats.read(maps_dir / f"{stem}_-20_to_20_ch0.png")
            assert m.shape == (64, 64, 3) and np.abs(m).max() > 0
        fit = json.loads((out / "fits" / f"{stem}.json").read_text())
        assert fit["landmarks_used"] >= 6 and len(fit["shape"]) > 0
    assert not list(out.rglob("*.part"))

    assert main(argv) == 1                          # again: both finished scans are skipped
    assert "registered 0, failed 1, skipped 2" in capsys.readouterr().out
    assert main([*argv, "--size", "128"]) == 2      # other settings would mix maps in one folder
    assert "other settings (size 64, now 128)" in capsys.readouterr().err

    # A scan missing any of its files (a killed run) is registered again.
    options = RegisterOptions(size=64, fmt="png16", spaces=("object", "tangent"))
    outputs(out, "scan_000001", options)[-1].unlink()
    todo, skipped = plan(folder, out, options)
    assert [t.stem for t in todo] == ["broken", "scan_000001"] and skipped == ["scan_000000.ply"]


def test_register_dataset_reads_a_scans_landmark_file(scans, tmp_path, capsys):
    """--landmarks FOLDER: <stem>.json is read for that scan (a file with too few points fails
    that scan with the file's reason, before any detection); a missing folder is refused."""
    from headcraft_backend.dataset.register import Task, landmark_file, register_scan
    marks = tmp_path / "landmarks"
    marks.mkdir()
    (marks / "scan_000000.json").write_text(json.dumps({"points": {"33": [0, 0, 0], "263": [1, 0, 0]}}))
    options = RegisterOptions(steps=1, landmarks=str(marks))
    result = register_scan(Task(str(scans / "scan_000000.ply"), "scan_000000", None, None), tmp_path / "out", options)
    assert result["status"] == "failed" and "at least 6" in result["error"]
    assert landmark_file(str(marks), "scan_000001") is None          # no file: detect them
    assert main(["register-dataset", str(scans), "--landmarks", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_synth_varied_looks(tmp_path, capsys):
    out = tmp_path / "varied"
    assert main(["synth", "--n", "2", "--seed", "3", "--hair", "varied", "--headwear", "turban", "--holes", "0",
                 "--out", str(out)]) == 0
    entries = json.loads((out / "manifest.json").read_text())["scans"]
    for e in entries:
        assert e["look"]["headwear"] == "turban" and e["hair"] == e["look"]["hair"]
        truth = read_truth(out / e["truth"])
        assert truth["look"]["headwear"] == "turban" and len(truth["truth_regions"]["headwear"]) > 5000
        assert truth["truth_hair_mm"].max() > 90          # 10-20 cm above the crown
    assert entries[0]["look"] != entries[1]["look"]
    # --headwear only goes with --hair varied.
    assert main(["synth", "--n", "1", "--hair", "short", "--headwear", "cap", "--out", str(tmp_path / "x")]) == 2
    assert "--headwear" in capsys.readouterr().err
