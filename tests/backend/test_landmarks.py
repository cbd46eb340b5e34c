"""Offscreen renderer, MediaPipe landmarks lifted to scans, OpenHead's landmark embedding."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from headcraft_backend.fit import landmarks as L
from headcraft_backend.fit.render import camera_for_head, render_mesh, vertex_normals
from headcraft_backend.raster import Camera, rasterize
from headcraft_backend.head.data import HeadModelData
from headcraft_backend.head.model import HeadModel
from headcraft_backend.head.registry import load_model_data
from headcraft_backend.errors import UserError

ASSET = (Path(__file__).resolve().parents[2] / "backend" / "src" / "headcraft_backend" / "assets"
         / "openhead-1-landmarks.npz")


def look_down_minus_z(W=256, H=256, **kw):
    """A camera on +Z looking towards -Z, image right = +X, image up = +Y."""
    R = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    return Camera(R, kw.pop("position", (0, 0, 5)), W, H, **kw)


# -- renderer --------------------------------------------------------------------------------
@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_sphere_silhouette_and_lifting(projection):
    s = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    v, f = s.vertices, s.faces
    W = 200
    if projection == "orthographic":
        cam = look_down_minus_z(W, W, projection="orthographic", scale=80.0)
        r_px = 80.0
    else:
        cam = look_down_minus_z(W, W, projection="perspective", focal=400.0)
        r_px = 400.0 * np.tan(np.arcsin(1 / 5))        # the sphere's silhouette radius
    r = render_mesh(v, f, cam)
    assert r.image.shape == (W, W, 3) and r.image.dtype == np.uint8
    rows, cols = np.mgrid[0:W, 0:W]
    dist = np.hypot(cols + 0.5 - W / 2, rows + 0.5 - W / 2)
    mask = r.mask
    # inside / outside the analytic silhouette, away from a 1-pixel band (tessellation + sampling)
    assert mask[dist < r_px - 1].all()
    assert not mask[dist > r_px + 0.5].any()
    assert (r.image[~mask] == 0).all() and (r.image[dist < r_px - 2].mean(-1) > 40).all()
    # Lambert with a headlight: the centre (normal towards the camera) is the brightest
    assert r.image[W // 2, W // 2, 0] >= r.image[mask, 0].max() - 2
    # lifting: pixel -> (triangle, barycentrics) -> 3D point on the surface under the pixel centre
    P = r.surface_points(v, f)[mask]
    xy, z = cam.project(P)
    np.testing.assert_allclose(xy, np.stack([cols[mask] + 0.5, rows[mask] + 0.5], 1), atol=1e-4)
    footprint = cam.pixel_footprint(z)
    sagitta = 1.2e-3                           # subdivision 5: the flat facets sink < 1.2e-3
    err = np.abs(np.linalg.norm(P, axis=1) - 1.0)
    assert (err < np.minimum(footprint, sagitta + 1e-6)).all()
    np.testing.assert_allclose(r.depth[mask], z, rtol=1e-5)
    assert np.isinf(r.depth[~mask]).all() and (r.tri_id[~mask] == -1).all()
    # the buffer's barycentrics are proper: non-negative, sum to one
    assert (r.bary[mask] >= 0).all() and np.allclose(r.bary[mask].sum(-1), 1, atol=1e-5)


def test_cube_silhouette_yaw_and_zbuffer():
    box = trimesh.creation.box(extents=(2, 2, 2))
    v, f = box.vertices, box.faces
    cam = camera_for_head(v, 0, centre=(0, 0, 0), radius=np.sqrt(3), image_size=256,
                          projection="orthographic", fill=0.9)
    r = render_mesh(v, f, cam)
    s = cam.scale
    cols = np.nonzero(r.mask.any(0))[0]
    rows = np.nonzero(r.mask.any(1))[0]
    assert abs(len(cols) - 2 * s) <= 1.5 and abs(len(rows) - 2 * s) <= 1.5
    # only the +Z face is visible from the front
    normals = box.face_normals[r.tri_id[r.mask]]
    assert np.allclose(normals, [0, 0, 1])
    # turned 45 degrees: the silhouette widens by sqrt(2), two faces are seen
    cam45 = camera_for_head(v, 45, centre=(0, 0, 0), radius=np.sqrt(3), image_size=256,
                            projection="orthographic", fill=0.9)
    r45 = render_mesh(v, f, cam45)
    w45 = len(np.nonzero(r45.mask.any(0))[0])
    assert abs(w45 - 2 * np.sqrt(2) * s) <= 2
    seen = np.unique(np.round(box.face_normals[r45.tri_id[r45.mask]], 6), axis=0)
    assert {tuple(n) for n in seen} == {(0, 0, 1), (1, 0, 0)}   # +yaw turns towards +X


def test_nearest_triangle_wins_regardless_of_order():
    v = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0],            # far (z = 0)
                  [-1, -1, 1], [1, -1, 1], [0, 1, 1.0]])         # near (z = 1)
    cam = look_down_minus_z(64, 64, projection="orthographic", scale=20.0)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 5, 4], [0, 2, 1]]):
        tri, bary, depth = rasterize(cam, v, np.array(faces))
        near = 1 if faces[0][0] == 0 else 0
        assert (tri[tri >= 0] == near).all()
        np.testing.assert_allclose(depth[tri >= 0], 4.0, atol=1e-6)


def test_colours_and_texture():
    # a quad in the z = 0 plane, uv = (x, y) in [0, 1], texture: left half red, right half blue
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = v[f][..., :2]                                            # per corner (F, 3, 2)
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:, :4] = (255, 0, 0)
    tex[:, 4:] = (0, 0, 255)
    cam = look_down_minus_z(64, 64, projection="orthographic", scale=50.0,
                            position=(0.5, 0.5, 5))
    r = render_mesh(v, f, cam, texture=tex, uv=uv, shading=0.0)
    P = r.surface_points(v, f)
    m = r.mask & (np.abs(P[..., 0] - 0.5) > 0.1)                # away from the colour edge
    left = m & (P[..., 0] < 0.5)
    assert left.any() and (r.image[left] == (255, 0, 0)).all()
    assert (r.image[m & ~left] == (0, 0, 255)).all()
    # per-vertex colours interpolate barycentrically
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1.0]])
    rc = render_mesh(v, f, cam, colors=colors, shading=0.0)
    t = rc.tri_id[rc.mask]
    expect = np.einsum("nk,nkc->nc", rc.bary[rc.mask], colors[f[t]]) * 255
    assert np.abs(rc.image[rc.mask] - expect).max() <= 1.0


def test_render_of_100k_triangles_covers_the_head():
    """A 145K-triangle head renders whole (its speed is for benchmarks, not tests)."""
    data = load_model_data({"model": "openhead"})
    v, f = trimesh.remesh.subdivide(data.v_template.astype(np.float64), data.faces)
    v, f = trimesh.remesh.subdivide(v, f)                         # 145K triangles
    assert len(f) > 100_000
    cam = camera_for_head(v, 0, image_size=512)
    r = render_mesh(v, f, cam)
    assert r.mask.sum() > 50_000


def test_camera_for_head_frames_any_units_and_orientation():
    data = load_model_data({"model": "openhead"})
    rot = Rotation.from_euler("xyz", [20, -30, 10], degrees=True).as_matrix()
    for scale in (1.0, 1000.0):
        v = scale * data.v_template @ rot.T + 7 * scale
        cam = camera_for_head(v, 0, up=rot @ [0, 1, 0], forward=rot @ [0, 0, 1])
        # looks along -forward; image up is the head's up
        np.testing.assert_allclose(cam.view_direction, -(rot @ [0, 0, 1]), atol=1e-9)
        np.testing.assert_allclose(-cam.rotation[1], rot @ [0, 1, 0], atol=1e-9)
        xy, z = cam.project(v)
        assert (z > 0).all() and (xy > 0).all() and (xy < 512).all()
        nose = data.v_template[:, 2].argmax()
        top = data.v_template[:, 1].argmax()
        assert abs(xy[nose, 0] - 256) < 10 and xy[top, 1] < xy[nose, 1]
    with pytest.raises(ValueError):
        camera_for_head(v, 0, up=(0, 1, 0), forward=(0, 2, 0))


def test_lift_is_exact_between_pixel_centres():
    # a tilted plane: lifted landmarks must be the exact ray intersections, not pixel-snapped
    s = trimesh.creation.box(extents=(2, 2, 0.01))
    v = s.vertices @ Rotation.from_euler("x", 30, degrees=True).as_matrix().T
    cam = look_down_minus_z(128, 128, projection="perspective", focal=150.0)
    r = render_mesh(v, s.faces, cam)
    xy = np.random.default_rng(0).uniform(45, 80, size=(50, 2))   # inside the silhouette
    tri, bary, valid, facing = L.lift_landmarks(r, v, s.faces, xy)
    assert valid.all() and (tri >= 0).all()
    pts = np.einsum("nk,nkc->nc", bary, v[s.faces[tri]])
    back, _ = cam.project(pts)
    np.testing.assert_allclose(back, xy, atol=1e-6)
    assert np.allclose(facing, np.cos(np.radians(30)), atol=0.15)
    # off the mesh: invalid
    tri, bary, valid, _ = L.lift_landmarks(r, v, s.faces, np.array([[1.0, 1.0], [np.nan, 3]]))
    assert not valid.any() and (tri == -1).all()


# -- landmark sets and embeddings ------------------------------------------------------------
def test_fit_landmarks_subset():
    F = L.FIT_LANDMARKS
    assert len(F) == 105 and len(set(F.tolist())) == 105
    assert F.min() >= 0 and F.max() < 468                       # no iris points
    assert not set(F.tolist()) & set(L.REGIONS["face_oval"])
    regions = set().union(*(L.REGIONS[k] for k in ("brow_left", "brow_right", "eye_left",
                                                   "eye_right", "nose", "lips_outer",
                                                   "lips_inner")))
    assert set(F.tolist()) == regions
    # the named regions agree with MediaPipe's own connection sets
    import mediapipe.python.solutions.face_mesh_connections as fc
    pts = lambda conn: {i for e in conn for i in e}  # noqa: E731
    assert pts(fc.FACEMESH_LIPS) == set(L.REGIONS["lips_outer"]) | set(L.REGIONS["lips_inner"])
    assert pts(fc.FACEMESH_LEFT_EYE) == set(L.REGIONS["eye_left"])
    assert pts(fc.FACEMESH_RIGHT_EYE) == set(L.REGIONS["eye_right"])
    assert pts(fc.FACEMESH_LEFT_EYEBROW) == set(L.REGIONS["brow_left"])
    assert pts(fc.FACEMESH_RIGHT_EYEBROW) == set(L.REGIONS["brow_right"])
    assert pts(fc.FACEMESH_FACE_OVAL) == set(L.REGIONS["face_oval"])
    assert set(L.REGIONS["nose"]) - pts(fc.FACEMESH_NOSE) == {129, 358}   # alae, as in FLAME's


def test_openhead_landmark_asset():
    assert ASSET.stat().st_size < 64 * 1024
    data = load_model_data({"model": "openhead"})
    with np.load(ASSET, allow_pickle=False) as z:
        idx, tri, bary, valid = z["mediapipe_index"], z["faces"], z["bary"], z["valid"]
        assert z["spread_mm"].shape == (478,)
    assert idx.shape == tri.shape == valid.shape == (478,) and bary.shape == (478, 3)
    np.testing.assert_array_equal(idx, np.arange(478))
    assert valid[L.FIT_LANDMARKS].all() and valid.sum() >= 460
    assert (tri[valid] >= 0).all() and (tri[valid] < len(data.faces)).all()
    assert (bary[valid] >= 0).all() and np.allclose(bary[valid].sum(1), 1, atol=1e-5)
    i2, t2, b2 = L.model_landmark_embedding(data)
    assert len(i2) == valid.sum() and set(L.FIT_LANDMARKS.tolist()) <= set(i2.tolist())
    # the landmarks sit where they should on the template: eye corners at the eyes, symmetric
    v = data.v_template.astype(np.float64)
    pts = dict(zip(i2.tolist(), np.einsum("nk,nkc->nc", b2, v[data.faces[t2]])))
    assert pts[263][0] > 0.02 and pts[33][0] < -0.02             # subject's left eye at +X
    for a, b in ((263, 33), (291, 61), (327, 98)):
        assert abs(pts[a][0] + pts[b][0]) < 0.004 and abs(pts[a][1] - pts[b][1]) < 0.004
    assert pts[1][2] > pts[168][2] > pts[33][2]                   # nose tip in front
    assert pts[10][1] > pts[168][1] > pts[1][1] > pts[13][1] > pts[152][1]   # top to chin


def test_flame_embedding_selection():
    rng = np.random.default_rng(0)

    def model(L_):
        V = 10
        faces = np.array([[i, (i + 1) % V, (i + 2) % V] for i in range(V)], np.int32)
        return HeadModelData(
            name="flame", version="2020", v_template=rng.normal(size=(V, 3)).astype(np.float32),
            faces=faces, uv=np.zeros((V, 3, 2), np.float32), shapedirs=np.zeros((V, 3, 1), np.float32),
            exprdirs=np.zeros((V, 3, 1), np.float32), expr_names=["e"],
            J_regressor=np.full((5, V), 0.1, np.float32), lbs_weights=np.full((V, 5), 0.2, np.float32),
            regions={}, landmark_faces=None if L_ is None else np.arange(L_, dtype=np.int32) % V,
            landmark_bary=None if L_ is None else np.full((L_, 3), 1 / 3, np.float32))

    idx, tri, bary = L.model_landmark_embedding(model(105))
    np.testing.assert_array_equal(idx, L.FLAME_MEDIAPIPE_INDICES)
    assert tri.shape == (105,) and bary.shape == (105, 3)
    for n in (None, 68):
        with pytest.raises(UserError, match="mediapipe_landmark_embedding"):
            L.model_landmark_embedding(model(n))


def test_missing_mediapipe_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)           # import raises ImportError
    s = trimesh.creation.icosphere(subdivisions=2)
    with pytest.raises(UserError, match="mediapipe==0.10.21"):
        L.detect_landmarks(s.vertices, s.faces)


# -- detection on posed, scaled, rotated heads -----------------------------------------------
@pytest.fixture(scope="module")
def openhead():
    data = load_model_data({"model": "openhead"})
    idx, tri, bary = L.model_landmark_embedding(data)
    pos = {int(i): j for j, i in enumerate(idx)}
    sel = np.array([pos[i] for i in L.FIT_LANDMARKS])
    return data, HeadModel(data), tri[sel], bary[sel]


def _errors_mm(result, model_vertices, faces, tri, bary, to_model):
    """Distances (mm on the model scale) between detected FIT landmarks mapped back to the model
    frame and the embedding's points on the same posed head."""
    gt = np.einsum("nk,nkc->nc", bary, model_vertices[faces[tri]])
    ok = result.valid[L.FIT_LANDMARKS]
    det = to_model(result.points[L.FIT_LANDMARKS][ok])
    return np.linalg.norm(det - gt[ok], axis=1) * 1000.0, ok


def test_detect_on_random_posed_similarity_transformed_heads(openhead):
    data, model, tri, bary = openhead
    rng = np.random.default_rng(7)
    all_err = []
    for trial, scale in enumerate((1000.0, 0.5, 37.0)):        # mm, half size, arbitrary
        shape = torch.tensor(rng.normal(size=(1, data.num_shape)), dtype=torch.float32)
        expr = torch.zeros(1, data.num_expr)
        expr[0, rng.choice(data.num_expr, 4, replace=False)] = torch.tensor(
            rng.uniform(0, 0.3, 4), dtype=torch.float32)
        v = model(shape=shape, expr=expr).vertices[0].double().numpy()
        axis = rng.normal(size=3)
        rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(rng.uniform(15, 30)))
        R = rot.as_matrix()
        t = rng.normal(size=3) * scale
        scan = scale * v @ R.T + t
        res = L.detect_landmarks(scan, data.faces, up=R @ [0, 1, 0], forward=R @ [0, 0, 1])
        assert res.valid[L.FIT_LANDMARKS].all()
        assert 0.5 < res.confidence <= 1.0 and abs(res.yaw_deg) < 15
        assert res.attempts[0] == (0.0, True)
        err, _ = _errors_mm(res, v, data.faces, tri, bary, lambda p: ((p - t) @ R) / scale)
        print(f"trial {trial} (scale {scale}): median {np.median(err):.2f} mm, "
              f"90% {np.percentile(err, 90):.2f} mm, max {err.max():.2f} mm")
        assert np.median(err) < 4.0
        all_err.append(err)
    err = np.concatenate(all_err)
    print(f"all: median {np.median(err):.2f} mm, 90% {np.percentile(err, 90):.2f} mm, "
          f"max {err.max():.2f} mm")
    assert np.median(err) < 3.0 and np.percentile(err, 90) < 7.0 and err.max() < 25.0
    # the lifted landmarks are on the input mesh: (triangle, bary) reproduce the points
    p = np.einsum("nk,nkc->nc", res.bary[res.valid], scan[data.faces[res.faces[res.valid]]])
    np.testing.assert_allclose(p, res.points[res.valid], rtol=1e-6, atol=1e-9 * scale)


def test_no_face_on_a_sphere():
    s = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    with pytest.raises(UserError, match="no face found.*manually"):
        L.detect_landmarks(s.vertices, s.faces)


@pytest.mark.parametrize("yaw", [35, -90])
def test_turned_head_found_through_yaw_retries_and_refinement(openhead, yaw):
    data, model, tri, bary = openhead
    v = data.v_template.astype(np.float64)
    R = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
    scan = v @ R.T                                     # the face looks `yaw` degrees off +Z
    res = L.detect_landmarks(scan, data.faces)         # forward given as the unrotated +Z
    assert res.valid[L.FIT_LANDMARKS].all()
    if abs(yaw) >= 60:                                 # a profile: the front view finds nothing
        assert res.attempts[0] == (0.0, False)
        assert any(ok for _, ok in res.attempts[1:])
    assert abs(res.yaw_deg - yaw) < 15                 # the refinement turned to the face
    err, _ = _errors_mm(res, v, data.faces, tri, bary, lambda p: p @ R)
    print(f"yaw {yaw}: attempts {[(round(a, 1), ok) for a, ok in res.attempts]}, "
          f"median {np.median(err):.2f} mm, max {err.max():.2f} mm")
    assert np.median(err) < 3.0 and np.percentile(err, 90) < 7.0


def test_vertex_normals_point_outwards():
    s = trimesh.creation.icosphere(subdivisions=2)
    n = vertex_normals(s.vertices, s.faces)
    assert np.allclose(np.einsum("vc,vc->v", n, s.vertices / np.linalg.norm(s.vertices, axis=1,
                                                                          keepdims=True)), 1,
                       atol=1e-2)


def test_head_on_shoulders_found_zoomed_in(openhead):
    """A procedural scan with a shoulder stub, holes and noise, shaded grey: the full view is
    too small for the detector, the view zoomed on the top of the scan finds the face."""
    from headcraft_backend.fit.scan import sanitize
    from headcraft_backend.procedural.scans import make_scan
    data, model, tri, bary = openhead
    synth = make_scan(data, 100, hair="none")
    scan = sanitize(synth.vertices, synth.faces)
    res = L.detect_landmarks_on_scan(scan, up=synth.rotation @ [0, 1, 0], forward=synth.rotation @ [0, 0, 1])
    assert res.attempts[:2] == [(0.0, False), (0.0, True)]
    idx, etri, ebary = L.model_landmark_embedding(data)
    truth = synth.to_scan(np.einsum("nk,nkc->nc", ebary, synth.model_vertices[synth.model_faces[etri]]))
    use = np.isin(idx, L.SURFACE_LANDMARKS) & res.valid[idx]
    err = np.linalg.norm(res.points[idx[use]] - truth[use], axis=1) * synth.mm_per_scan_unit
    assert use.sum() == len(L.SURFACE_LANDMARKS) and np.median(err) < 5.0 and np.percentile(err, 90) < 9.0


def test_point_cloud_gets_a_surface_then_landmarks(openhead):
    from headcraft_backend.fit.scan import Scan
    data, model, tri, bary = openhead
    v = data.v_template.astype(np.float64)
    cloud = Scan(v.astype(np.float32), data.faces).sample_points(150_000) * 1000.0   # mm, no faces
    res = L.detect_landmarks_on_scan(Scan(cloud, None))
    assert res.valid[L.FIT_LANDMARKS].mean() > 0.95
    err, ok = _errors_mm(res, v, data.faces, tri, bary, lambda p: p / 1000.0)
    assert np.median(err) < 4.0 and np.percentile(err, 90) < 8.0
    d, _ = cKDTree(cloud).query(res.points[L.FIT_LANDMARKS][ok])
    assert np.median(d) < 1.0                                  # on the cloud's surface (mm)
    with pytest.raises(UserError, match="too sparse.*by hand"):
        L.detect_landmarks_on_scan(Scan(cloud[:5000], None))
