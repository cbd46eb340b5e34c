"""Animation (issue 6): displacements carried by tangent frames, the rig and bake jobs."""
import numpy as np
import pytest
import torch

from headcraft_backend.animate.rig import carried, detail_coordinates
from headcraft_backend.compute import Compute
from headcraft_backend.head.dense import dense_template
from headcraft_backend.head.model import HeadModel
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.layout.maps import MappedHead, dense_base


class Model:                    # what the jobs read from a model: its data
    def __init__(self, data):
        self.data = data


@pytest.fixture(scope="module")
def setup():
    data = load_model_data({"model": "openhead"})
    ctx = Compute("cpu")
    dense = dense_template(data)
    hm = HeadModel(data)
    shape = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 20)).astype(np.float32))
    with torch.no_grad():
        coarse = hm.shaped(shape)[0].numpy()
    base = dense_base(ctx, MappedHead(Model(data), dense, None), coarse)
    # a detail field: 1 mm along the normal-ish direction plus a tangential swirl, varying fast
    rng = np.random.default_rng(1)
    disp = (rng.normal(size=base.shape) * 1e-3).astype(np.float32)
    arrays = {"base": base, "displacement": disp}
    return data, ctx, dense, hm, shape, coarse, base, disp, arrays


def test_neutral_frame_reproduces_the_static_head(setup):
    data, ctx, dense, _, _, coarse, base, disp, arrays = setup
    coords = detail_coordinates(ctx, Model(data), dense, arrays["base"], arrays["displacement"])
    out = carried(ctx, Model(data), dense, coarse[None], coords)[0]
    assert np.abs(out - (base + disp)).max() < 1e-6


def test_rotating_the_whole_head_rotates_the_displacements_exactly(setup):
    data, ctx, dense, _, _, coarse, base, disp, arrays = setup
    a = 0.7
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32) @ \
        np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]], np.float32)
    t = np.array([0.1, -0.2, 0.05], np.float32)
    coords = detail_coordinates(ctx, Model(data), dense, arrays["base"], arrays["displacement"])
    out = carried(ctx, Model(data), dense, (coarse @ R.T + t)[None], coords)[0]
    expected = (base + disp) @ R.T + t
    assert np.abs(out - expected).max() < 2e-6
    # the displacement itself rotated (not merely the base): compare with an unrotated detail
    assert np.abs((base @ R.T + t + disp) - expected).max() > 5e-4


def test_opening_the_jaw_carries_chin_details_with_the_jaw(setup):
    data, ctx, dense, hm, shape, _, base, disp, arrays = setup
    jaw = data.joint_names.index("jaw")
    pose = torch.zeros(1, len(data.joint_names), 3)
    pose[0, jaw, 0] = 0.35
    with torch.no_grad():
        opened = hm(shape, pose=pose).vertices[0].numpy()
    coords = detail_coordinates(ctx, Model(data), dense, arrays["base"], arrays["displacement"])
    out = carried(ctx, Model(data), dense, opened[None], coords)[0]
    new_base = dense_base(ctx, MappedHead(Model(data), dense, None), opened)
    moved = out - new_base                                  # the displacement after the jaw opened
    # dense vertices skinned only to the jaw (through all three corners of their coarse triangle)
    w = data.lbs_weights[data.faces[dense.vertex_tri]][:, :, jaw].min(1)
    chin = np.flatnonzero(w > 0.999)
    assert len(chin) > 500
    a = 0.35
    R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    err = np.linalg.norm(moved[chin] - disp[chin] @ R.T, axis=1)
    naive = np.linalg.norm(moved[chin] - disp[chin], axis=1)
    assert np.median(err) < 0.02 * np.median(naive), (np.median(err), np.median(naive))


def test_rig_job_keys_expressions_and_carries_weights(setup, conn):
    data, _, dense, _, _, coarse, base, disp, arrays = setup
    names = ["jawOpen", "mouthSmileLeft", "eyeBlinkRight"]
    j = conn.call("animate.rig", {"model": "openhead", "expr_names": names},
                  {"coarse_neutral": coarse, **arrays}, timeout=300)
    assert j.result["expr_names"] == names
    basis, deltas, w = j.arrays["basis"], j.arrays["expr_deltas"], j.arrays["lbs_weights"]
    assert np.abs(basis - (base + disp)).max() < 1e-6
    assert deltas.shape == (3, dense.num_vertices, 3) and w.shape == (dense.num_vertices, len(data.joint_names))
    assert np.allclose(w.sum(1), 1, atol=1e-5)
    # jawOpen moves the chin by centimetres, the smile the left mouth corner, the blink an eyelid
    mag = np.linalg.norm(deltas, axis=2).max(1)
    assert mag[0] > 0.005 and mag[1] > 0.001 and mag[2] > 0.001
    # the detail rides with the expression: the key is not just the coarse change rebuilt
    e = data.expr_names.index("jawOpen")
    head = MappedHead(Model(data), dense, None)
    plain = dense_base(Compute("cpu"), head, coarse + data.exprdirs[..., e]) - dense_base(Compute("cpu"), head, coarse)
    assert np.abs(deltas[0] - plain).max() > 1e-4


def test_bake_job_and_bad_input(setup, conn):
    data, _, dense, hm, shape, coarse, base, disp, arrays = setup
    frames = np.stack([coarse, coarse + 0.01, coarse * 1.01]).astype(np.float32)
    j = conn.call("animate.bake", {"model": "openhead"}, {"coarse_frames": frames, **arrays}, timeout=300)
    v = j.arrays["vertices"]
    assert v.shape == (3, dense.num_vertices, 3) and j.result["frames"] == 3
    assert np.abs(v[0] - (base + disp)).max() < 1e-6
    assert np.abs(v[1] - (base + disp + 0.01)).max() < 1e-5        # a translation moves everything
    for bad, msg in (({"coarse_frames": frames[:, :100]}, "frames,"),
                     ({"coarse_frames": np.full_like(frames, np.nan)}, "NaN"),
                     ({"coarse_frames": frames, "displacement": disp[:10]}, "displacement")):
        r = conn.submit("animate.bake", {"model": "openhead"}, {**arrays, **bad}).wait(120)
        assert r.state == "error" and msg in str(r.error), r.error
    r = conn.submit("animate.rig", {"model": "openhead", "expr_names": ["smileBig"]},
                    {"coarse_neutral": coarse, **arrays}).wait(120)
    assert r.state == "error" and "smileBig" in str(r.error)
