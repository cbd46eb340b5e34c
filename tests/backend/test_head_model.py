"""The shared head model: blendshapes, LBS, joints, landmarks; batched and differentiable."""
import numpy as np
import pytest
import torch

from headcraft_backend.errors import HeadModelError
from headcraft_backend.head.data import HeadModelData
from headcraft_backend.head.lbs import axis_angle_to_matrix
from headcraft_backend.head.model import HeadModel


def tiny_model(posedirs=False, seed=0) -> HeadModelData:
    """A 40-vertex head: lower half skinned to the jaw, top to the neck joint."""
    rng = np.random.default_rng(seed)
    V = 40
    v = rng.normal(size=(V, 3)).astype(np.float32) * 0.05
    faces = np.array([[i, (i + 1) % V, (i + 2) % V] for i in range(V)], np.int32)
    w = np.zeros((V, 5), np.float32)
    w[v[:, 1] < 0, 2] = 1     # jaw
    w[v[:, 1] >= 0, 1] = 1    # neck
    J = np.zeros((5, V), np.float32)
    for j in range(5):
        J[j, rng.choice(V, 4, replace=False)] = 0.25
    return HeadModelData(
        name="tiny", version="0", v_template=v, faces=faces, uv=rng.random((V, 3, 2), np.float32),
        shapedirs=rng.normal(size=(V, 3, 6)).astype(np.float32) * 0.01,
        exprdirs=rng.normal(size=(V, 3, 4)).astype(np.float32) * 0.01,
        expr_names=[f"e{i}" for i in range(4)], J_regressor=J, lbs_weights=w,
        regions={"face": np.arange(10, dtype=np.int32)},
        posedirs=rng.normal(size=(36, V * 3)).astype(np.float32) * 1e-3 if posedirs else None,
        landmark_faces=np.array([0, 5], np.int32), landmark_bary=np.array([[1, 0, 0], [0.2, 0.3, 0.5]], np.float32),
    ).validate()


def test_rodrigues_matches_known_rotation():
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, np.pi / 2], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(R[0].numpy(), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(R[1].numpy(), np.eye(3), atol=1e-7)


def test_zero_pose_is_blendshapes_only():
    m = HeadModel(tiny_model())
    shape, expr = torch.randn(3, 6), torch.randn(3, 4)
    out = m(shape=shape, expr=expr)
    ref = m.v_template + torch.einsum("bk,vck->bvc", shape, m.shapedirs) + torch.einsum("bk,vck->bvc", expr, m.exprdirs)
    torch.testing.assert_close(out.vertices, ref)
    assert out.vertices.shape == (3, 40, 3)


def test_global_rotation_rotates_everything_about_the_root():
    m = HeadModel(tiny_model(posedirs=False))
    pose = torch.zeros(1, 5, 3)
    pose[0, 0] = torch.tensor([0.3, -0.2, 0.5])
    out = m(pose=pose)
    R = axis_angle_to_matrix(pose[0, 0])
    root = m.rest_joints()[0, 0]
    expected = (m.v_template - root) @ R.T + root
    torch.testing.assert_close(out.vertices[0], expected, atol=1e-6, rtol=0)


def test_jaw_rotation_moves_only_jaw_vertices_and_follows_parent():
    d = tiny_model()
    m = HeadModel(d)
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.4
    moved = (m(pose=pose).vertices[0] - m.v_template).norm(dim=1) > 1e-7
    assert torch.equal(moved, torch.from_numpy(d.lbs_weights[:, 2] > 0))


def test_pose_correctives_apply_only_when_posed():
    m = HeadModel(tiny_model(posedirs=True))
    zero = m(pose=torch.zeros(1, 5, 3)).vertices
    torch.testing.assert_close(zero[0], m.v_template)
    pose = torch.zeros(1, 5, 3)
    pose[0, 0, 1] = 0.3  # global rotation only: no corrective (features use joints 1..4)
    R = axis_angle_to_matrix(pose[0, 0])
    root = m.rest_joints()[0, 0]
    torch.testing.assert_close(m(pose=pose).vertices[0], (m.v_template - root) @ R.T + root, atol=1e-6, rtol=0)


def test_gradients_and_landmarks():
    m = HeadModel(tiny_model(posedirs=True))
    shape = torch.zeros(2, 6, requires_grad=True)
    pose = torch.full((2, 5, 3), 0.1, requires_grad=True)
    out = m(shape=shape, pose=pose, transl=torch.ones(2, 3))
    out.landmarks.sum().backward()
    assert shape.grad.abs().sum() > 0 and pose.grad.abs().sum() > 0
    v = out.vertices[0].detach()
    np.testing.assert_allclose(out.landmarks[0, 0].detach(), v[0], atol=1e-6)  # bary (1,0,0) on face 0


def test_short_coefficient_vectors_pad_with_zero():
    m = HeadModel(tiny_model())
    a = m(shape=torch.tensor([[1.0, 2.0]])).vertices
    b = m(shape=torch.tensor([[1.0, 2.0, 0, 0, 0, 0]])).vertices
    torch.testing.assert_close(a, b)


def test_npz_roundtrip_and_validation(tmp_path):
    d = tiny_model(posedirs=True)
    d.save_npz(tmp_path / "m.npz")
    e = HeadModelData.load_npz(tmp_path / "m.npz")
    np.testing.assert_array_equal(e.posedirs, d.posedirs)
    assert e.regions.keys() == d.regions.keys() and e.expr_names == d.expr_names
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(HeadModelError, match="bad.npz"):
        HeadModelData.load_npz(tmp_path / "bad.npz")
    d.v_template[0, 0] = np.nan
    with pytest.raises(HeadModelError, match="NaN"):
        d.validate("x")


def test_landmark_faces_without_barycentrics_are_refused(tmp_path):
    """A file with landmark triangles but no barycentrics: HeadModelError, not AttributeError."""
    d = tiny_model()
    d.save_npz(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    arrays["landmark_faces"] = np.arange(3, dtype=np.int32)
    arrays.pop("landmark_bary", None)
    np.savez(tmp_path / "half.npz", **arrays)
    with pytest.raises(HeadModelError, match="landmark_faces without landmark_bary"):
        HeadModelData.load_npz(tmp_path / "half.npz")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_cuda_matches_cpu():
    d = tiny_model(posedirs=True)
    cpu, gpu = HeadModel(d), HeadModel(d).cuda()
    pose = torch.randn(4, 5, 3) * 0.2
    torch.testing.assert_close(gpu(pose=pose.cuda()).vertices.cpu(), cpu(pose=pose).vertices, atol=1e-5, rtol=0)


def test_rotation_gradient_is_exact_at_zero():
    r = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_matrix(r)
    R[0, 1].backward()  # d R01 / d rz = -1 at zero rotation
    np.testing.assert_allclose(r.grad.numpy(), [0, 0, -1], atol=1e-12)
    big = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (big,))
