"""FLAME loading from synthetic FLAME-format files, and the restricted unpickler."""
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import fixtures.flame_files as ff  # noqa: E402

from headcraft_backend.head import safe_pickle  # noqa: E402
from headcraft_backend.errors import HeadModelError  # noqa: E402
from headcraft_backend.head.data import REGION_NAMES, HeadModelData  # noqa: E402
from headcraft_backend.head.flame import detect_flame_version, load_flame  # noqa: E402
from headcraft_backend.head.safe_pickle import load_pickle, loads_restricted  # noqa: E402


@pytest.fixture(scope="module")
def arrays():
    return ff.make_flame_arrays(seed=0)


@pytest.fixture(scope="module")
def files2020(tmp_path_factory, arrays):
    return ff.write_flame_files(tmp_path_factory.mktemp("FLAME2020"), "2020", arrays=arrays)


@pytest.fixture(scope="module")
def files2023(tmp_path_factory, arrays):
    return ff.write_flame_files(tmp_path_factory.mktemp("flame23"), "2023", arrays=arrays)


def _load(files, landmarks=None, **kw):
    return load_flame(files.model, files.masks, files.obj, landmarks, **kw)


def _raises_naming(path, fn, *fragments):
    with pytest.raises(HeadModelError) as info:
        fn()
    msg = str(info.value)
    assert Path(path).name in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# the real-format files load
def _check_common(m: HeadModelData, files):
    a = files.arrays
    assert isinstance(m, HeadModelData) and m.name == "flame"
    assert m.v_template.shape == (5023, 3) and m.v_template.dtype == np.float32
    assert m.faces.shape == (9976, 3) and m.faces.dtype == np.int32
    np.testing.assert_array_equal(m.faces, a["f"].astype(np.int32))
    np.testing.assert_allclose(m.v_template, a["v_template"], rtol=1e-6, atol=1e-7)
    assert m.shapedirs.shape == (5023, 3, 300) and m.shapedirs.dtype == np.float32
    np.testing.assert_allclose(m.shapedirs, a["shapedirs"][..., :300], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.exprdirs, a["shapedirs"][..., 300:], rtol=1e-6, atol=1e-9)
    assert m.exprdirs.dtype == np.float32
    assert m.expr_names[0] == "Exp000" and len(m.expr_names) == m.num_expr
    assert m.J_regressor.shape == (5, 5023) and m.J_regressor.dtype == np.float32
    assert isinstance(m.J_regressor, np.ndarray)
    np.testing.assert_allclose(m.J_regressor, a["J_regressor"].toarray(), rtol=1e-6)
    assert m.lbs_weights.shape == (5023, 5) and m.lbs_weights.dtype == np.float32
    np.testing.assert_allclose(m.lbs_weights.sum(1), 1.0, atol=1e-5)
    assert m.parents == (-1, 0, 1, 1, 1)
    assert m.joint_names == ("global", "neck", "jaw", "eye_L", "eye_R")
    # posedirs: (36, V*3) with out[k, 3 v + c] = posedirs[v, c, k] (smplx convention)
    assert m.posedirs.shape == (36, 5023 * 3) and m.posedirs.dtype == np.float32
    for v, c, k in [(0, 0, 0), (1234, 2, 17), (5022, 1, 35), (4000, 0, 9)]:
        assert m.posedirs[k, 3 * v + c] == np.float32(a["posedirs"][v, c, k])
    # regions
    assert set(m.regions) == set(REGION_NAMES)
    mk = files.masks_content
    np.testing.assert_array_equal(m.regions["ears"], np.union1d(mk["left_ear"], mk["right_ear"]))
    np.testing.assert_array_equal(m.regions["eyeballs"],
                                  np.union1d(mk["left_eyeball"], mk["right_eyeball"]))
    for name in ("face", "scalp", "neck", "eye_region", "nose", "lips"):
        np.testing.assert_array_equal(m.regions[name], np.unique(mk[name]))
    assert m.regions["inner_mouth"].shape == (0,) and m.regions["inner_mouth"].dtype == np.int32
    assert all(r.dtype == np.int32 for r in m.regions.values())
    # uv, per corner, in the model's face order (rotated OBJ corners are undone)
    assert m.uv.shape == (9976, 3, 2) and m.uv.dtype == np.float32
    np.testing.assert_allclose(m.uv, ff.expected_uv(files.vt, files.ft), atol=1e-6)
    assert not np.allclose(m.uv[0], files.vt[a["f"][0]])  # seam faces have their own corners
    m.validate("again")


def test_load_flame2020(files2020):
    m = _load(files2020, files2020.landmarks68)
    _check_common(m, files2020)
    assert m.version == "2020" and m.num_expr == 100 and m.expr_names[-1] == "Exp099"
    # the 68-point full_* embedding is preferred over the 51 static points
    assert m.landmark_faces.shape == (68,) and m.landmark_faces.dtype == np.int32
    np.testing.assert_array_equal(m.landmark_faces, files2020.lmk68["full_lmk_faces_idx"][0])
    np.testing.assert_allclose(m.landmark_bary, files2020.lmk68["full_lmk_bary_coords"][0], rtol=1e-6)
    assert m.landmark_bary.dtype == np.float32
    assert "FLAME" in m.licence


def test_load_flame2023_with_mediapipe_landmarks(files2023):
    m = _load(files2023, files2023.mediapipe)
    _check_common(m, files2023)
    assert m.version == "2023"
    assert m.landmark_faces.shape == (105,) and m.landmark_bary.shape == (105, 3)
    np.testing.assert_array_equal(m.landmark_faces, files2023.lmk_mediapipe["lmk_face_idx"])
    np.testing.assert_allclose(m.landmark_bary, files2023.lmk_mediapipe["lmk_b_coords"], rtol=1e-6)


def test_landmarks_optional_and_roundtrip(files2020, tmp_path):
    m = _load(files2020)
    assert m.landmark_faces is None and m.landmark_bary is None
    m.save_npz(tmp_path / "flame.npz")
    back = HeadModelData.load_npz(tmp_path / "flame.npz")
    np.testing.assert_array_equal(back.posedirs, m.posedirs)
    assert back.regions["inner_mouth"].size == 0


def test_static_embedding_fallback(files2020, tmp_path):
    emb = {k: v for k, v in files2020.lmk68.items() if k.startswith("static")}
    p = ff.write_landmark_embedding_npy(tmp_path / "landmark_embedding.npy", emb)
    m = _load(files2020, p)
    np.testing.assert_array_equal(m.landmark_faces, emb["static_lmk_faces_idx"])
    # FLAME's original flame_static_embedding.pkl (Python 2 pickle) works as well
    p2 = ff.dump_pickle(tmp_path / "flame_static_embedding.pkl",
                        {"lmk_face_idx": emb["static_lmk_faces_idx"],
                         "lmk_b_coords": emb["static_lmk_bary_coords"]})
    np.testing.assert_array_equal(_load(files2020, p2).landmark_faces, emb["static_lmk_faces_idx"])


def test_version_detection_and_override(files2020):
    assert detect_flame_version("/x/flame2023.pkl") == "2023"
    assert detect_flame_version("/x/FLAME2020/generic_model.pkl") == "2020"
    assert detect_flame_version("/x/generic_model.pkl") == "2020"
    assert detect_flame_version("/x/FLAME2019/generic_model.pkl") == "2019"
    assert _load(files2020, version="2023").version == "2023"


def test_other_expression_split(tmp_path):
    """Any component count: the first 300 are shape, the rest expression."""
    files = ff.write_flame_files(tmp_path / "FLAME_custom", "2023", n_expr=50, seed=3)
    m = _load(files)
    assert m.num_shape == 300 and m.num_expr == 50 and m.expr_names[-1] == "Exp049"
    np.testing.assert_allclose(m.exprdirs[..., 7], files.arrays["shapedirs"][..., 307], rtol=1e-6)


def test_swapped_eye_joints_swap_names(tmp_path, arrays):
    sw = dict(arrays)
    sw["J_regressor"] = ff.make_flame_arrays(seed=0, swap_eyes=True)["J_regressor"]
    files = ff.write_flame_files(tmp_path / "FLAME2020", "2020", arrays=sw)
    m = _load(files)
    assert m.joint_names == ("global", "neck", "jaw", "eye_R", "eye_L")
    # the joint data keep FLAME's order
    np.testing.assert_allclose(m.J_regressor, sw["J_regressor"].toarray(), rtol=1e-6)


def test_plain_numpy_model_loads(tmp_path, arrays, files2020):
    """A model re-saved without chumpy (plain arrays) loads the same."""
    p = ff.write_flame_model(tmp_path / "generic_model.pkl", arrays, "py3", use_chumpy=False)
    m = load_flame(p, files2020.masks, files2020.obj)
    np.testing.assert_allclose(m.v_template, arrays["v_template"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# hostile files
@pytest.mark.parametrize("variant,glob", [("os.system", "os.system"), ("posix.system", "posix.system"),
                                          ("eval", "builtins.eval"), ("subprocess", "subprocess.call"),
                                          ("nested", "os.system")])
def test_malicious_pickle_refused(tmp_path, files2020, variant, glob):
    marker = tmp_path / "pwned_marker"
    p = ff.write_malicious_pickle(tmp_path / "generic_model.pkl", marker, variant)
    globals_named = [arg for op, arg, _ in pickletools.genops(p.read_bytes()) if op.name == "GLOBAL"]
    assert glob.replace(".", " ") in globals_named  # the payload really calls it
    msg = _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), glob, "refused")
    assert "generic_model.pkl" in msg
    _raises_naming(p, lambda: load_pickle(p, expect=None), glob)
    assert not marker.exists()


def test_malicious_masks_and_landmarks_refused(tmp_path, files2020):
    marker = tmp_path / "marker2"
    masks = ff.write_malicious_pickle(tmp_path / "FLAME_masks.pkl", marker, "posix.system")
    _raises_naming(masks, lambda: load_flame(files2020.model, masks, files2020.obj), "posix.system")
    # an .npy whose object payload is a hostile pickle
    payload = (tmp_path / "payload.pkl")
    ff.write_malicious_pickle(payload, marker, "os.system")
    npy = tmp_path / "landmark_embedding.npy"
    with open(npy, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload.read_bytes())
    _raises_naming(npy, lambda: _load(files2020, npy), "os.system")
    # same inside an .npz member
    npz = tmp_path / "mediapipe_landmark_embedding.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("lmk_face_idx.npy", npy.read_bytes())
    _raises_naming(npz, lambda: _load(files2020, npz), "os.system")
    assert not marker.exists()


def test_copyreg_reconstructor_limited(tmp_path):
    # protocol 0 'copy_reg._reconstructor' with a non-stand-in class is refused at call time
    data = b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR."
    with pytest.raises(HeadModelError, match="stand|chumpy"):
        loads_restricted(data, "x.pkl")
    # but a chumpy object built that way is fine
    data = (b"ccopy_reg\n_reconstructor\n(cchumpy.ch\nCh\nc__builtin__\nobject\nNtR"
            b"(dS'x'\nF1.5\nsb.")
    assert loads_restricted(data, "x.pkl") == 1.5


def test_codecs_encode_limited():
    data = b"c_codecs\nencode\n(Vabc\nVutf-16\ntR."
    with pytest.raises(HeadModelError, match="latin"):
        loads_restricted(data, "x.pkl")


# ---------------------------------------------------------------------------------------------
# broken files
def test_missing_files(tmp_path, files2020):
    missing = tmp_path / "generic_model.pkl"
    _raises_naming(missing, lambda: load_flame(missing, files2020.masks, files2020.obj), "not found")
    _raises_naming(tmp_path / "FLAME_masks.pkl",
                   lambda: load_flame(files2020.model, tmp_path / "FLAME_masks.pkl", files2020.obj))
    _raises_naming(tmp_path / "head_template.obj",
                   lambda: load_flame(files2020.model, files2020.masks, tmp_path / "head_template.obj"))
    _raises_naming(tmp_path / "lmk.npy", lambda: _load(files2020, tmp_path / "lmk.npy"))


@pytest.mark.parametrize("fraction", [0.5, 0.001])
def test_truncated_model(tmp_path, files2020, fraction):
    data = files2020.model.read_bytes()
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(data[: max(1, int(len(data) * fraction))])
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "truncated")


def test_garbage_and_empty_files(tmp_path, files2020):
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(b"\x00\x01 this is not a pickle at all" * 10)
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "corrupt")
    p.write_bytes(b"")
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj))
    npy = tmp_path / "landmark_embedding.npy"
    npy.write_bytes(files2020.landmarks68.read_bytes()[:300])
    _raises_naming(npy, lambda: _load(files2020, npy), "truncated")


def test_missing_key(tmp_path, arrays, files2020):
    p = ff.write_flame_model(tmp_path / "generic_model.pkl", arrays, drop_keys=("shapedirs",))
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "key 'shapedirs' missing")


def test_wrong_shape(tmp_path, arrays, files2020):
    bad = dict(arrays, posedirs=arrays["posedirs"][..., :30])
    p = ff.write_flame_model(tmp_path / "generic_model.pkl", bad)
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "posedirs")
    bad = dict(arrays, shapedirs=arrays["shapedirs"][..., :300])
    p = ff.write_flame_model(tmp_path / "generic_model.pkl", bad)
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "shapedirs")
    bad = dict(arrays, f=arrays["f"].astype(np.int64) + 5023)
    p = ff.write_flame_model(tmp_path / "generic_model.pkl", bad)
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "'f'")


def test_files_swapped(files2020):
    # the masks file given as the model, and the model as the masks
    _raises_naming(files2020.masks, lambda: load_flame(files2020.masks, files2020.masks, files2020.obj),
                   "not a FLAME model file")
    _raises_naming(files2020.model, lambda: load_flame(files2020.model, files2020.model, files2020.obj),
                   "not a FLAME masks file")
    _raises_naming(files2020.masks, lambda: _load(files2020, files2020.masks),
                   "not a FLAME landmark embedding")
    # an OBJ given as the model: not a pickle
    _raises_naming(files2020.obj, lambda: load_flame(files2020.obj, files2020.masks, files2020.obj))


def test_wrong_top_level_type(tmp_path, files2020):
    p = ff.dump_pickle(tmp_path / "generic_model.pkl", [1, 2, 3])
    _raises_naming(p, lambda: load_flame(p, files2020.masks, files2020.obj), "expected a dict")
    npy = tmp_path / "landmark_embedding.npy"
    np.save(npy, np.arange(4))
    _raises_naming(npy, lambda: _load(files2020, npy), "expected a dict")


def test_obj_wrong_face_count(tmp_path, files2020):
    p = ff.write_head_template_obj(tmp_path / "head_template.obj", files2020.arrays, files2020.vt,
                                   files2020.ft, n_faces=9975)
    _raises_naming(p, lambda: load_flame(files2020.model, files2020.masks, p), "9975 triangles")


def test_obj_wrong_vertices(tmp_path, files2020):
    p = ff.write_head_template_obj(tmp_path / "head_template.obj", files2020.arrays, files2020.vt,
                                   files2020.ft, bad_face=42)
    _raises_naming(p, lambda: load_flame(files2020.model, files2020.masks, p), "triangle 42")


def test_obj_without_uvs_or_quads(tmp_path, files2020):
    p = tmp_path / "head_template.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    _raises_naming(p, lambda: load_flame(files2020.model, files2020.masks, p), "texture")
    p.write_text("v 0 0 0\nvt 0 0\nf 1/1 1/1 1/1 1/1\n")
    _raises_naming(p, lambda: load_flame(files2020.model, files2020.masks, p), "4 corners")


def test_masks_out_of_range(tmp_path, files2020):
    masks = dict(files2020.masks_content, nose=np.array([0, 99999]))
    p = ff.write_flame_masks(tmp_path / "FLAME_masks.pkl", masks)
    _raises_naming(p, lambda: load_flame(files2020.model, p, files2020.obj), "nose")


def test_landmark_wrong_content(tmp_path, files2020):
    emb = dict(files2020.lmk68, full_lmk_bary_coords=np.ones((1, 67, 3)) / 3)
    p = ff.write_landmark_embedding_npy(tmp_path / "landmark_embedding.npy", emb)
    _raises_naming(p, lambda: _load(files2020, p), "full_lmk_bary_coords")
    emb = dict(files2020.lmk68, full_lmk_faces_idx=np.full((1, 68), 9976))
    p = ff.write_landmark_embedding_npy(tmp_path / "landmark_embedding.npy", emb)
    _raises_naming(p, lambda: _load(files2020, p), "full_lmk_faces_idx")


# ---------------------------------------------------------------------------------------------
# safe_pickle details
def test_chumpy_reorderings_evaluated(tmp_path):
    base = ff.ch(np.arange(24.0).reshape(2, 3, 4))
    obj = {
        "sel": ff.ch_select(base, [0, 5, 23], preferred_shape=(3, 1)),
        "tr": ff.ch_transpose(base, (2, 0, 1)),
        "rs": ff.ch_reshape(ff.ch_transpose(base, None), (-1, 2)),
        "shared": [base, base],
    }
    p = ff.dump_pickle(tmp_path / "x.pkl", obj)
    d = load_pickle(p)
    a = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(d["sel"], a.ravel()[[0, 5, 23]].reshape(3, 1))
    np.testing.assert_array_equal(d["tr"], np.transpose(a, (2, 0, 1)))
    np.testing.assert_array_equal(d["rs"], a.T.reshape(-1, 2))
    assert d["shared"][0] is d["shared"][1]


def test_chumpy_expression_refused(tmp_path):
    p = ff.dump_pickle(tmp_path / "generic_model.pkl",
                       {"v_template": ff.ch_add(ff.ch(np.ones(3)), ff.ch(np.ones(3)))})
    _raises_naming(p, lambda: load_pickle(p), "chumpy.ch_ops.add", "computed expression")


def test_sparse_variants_and_forged_indices(tmp_path):
    m = sp.random(5, 40, density=0.2, format="csr", random_state=0)
    p = ff.dump_pickle(tmp_path / "a.pkl", {"csr": m, "csc": m.tocsc()}, "py3")
    d = load_pickle(p)
    assert sp.isspmatrix_csr(d["csr"]) and sp.isspmatrix_csc(d["csc"])
    np.testing.assert_array_equal(d["csr"].toarray(), m.toarray())
    forged = m.tocsc()
    forged.indices = forged.indices.copy()
    forged.indices[0] = 10 ** 6  # out of bounds: must be caught, not read
    p = ff.dump_pickle(tmp_path / "J.pkl", {"J_regressor": forged}, "py2")
    _raises_naming(p, lambda: load_pickle(p), "csc_matrix")


def test_numpy2_pickles_and_npz_with_object_member(tmp_path):
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5), "t": {1, 2}}
    for proto in (2, 3, 4, 5):
        d = loads_restricted(pickle.dumps(a, protocol=proto), "mem.pkl")
        np.testing.assert_array_equal(d["x"], a["x"])
        assert d["s"] == 2.5 and d["t"] == {1, 2}
    p = tmp_path / "emb.npz"
    with open(p, "wb") as fh:
        np.savez(fh, plain=np.arange(3), boxed=np.array({"k": np.ones(2)}, dtype=object))
    d = load_pickle(p)
    np.testing.assert_array_equal(d["plain"], np.arange(3))
    np.testing.assert_array_equal(d["boxed"]["k"], np.ones(2))


def test_npy_plain_array_and_version3(tmp_path):
    p = tmp_path / "a.npy"
    arr = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    np.save(p, arr)
    np.testing.assert_array_equal(load_pickle(p, expect=np.ndarray), arr)
    # a version 3.0 header (utf-8)
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    buf = io.BytesIO()
    buf.write(b"\x93NUMPY\x03\x00" + len(header).to_bytes(4, "little") + header.encode())
    buf.write(np.array([7, 8], "<i4").tobytes())
    p.write_bytes(buf.getvalue())
    np.testing.assert_array_equal(load_pickle(p, expect=None), [7, 8])


def test_no_unrestricted_loading_in_source():
    import inspect
    from headcraft_backend.head import flame
    for mod in (safe_pickle, flame):
        src = inspect.getsource(mod)
        assert "allow_pickle=True" not in src
        assert "pickle.load(" not in src and "pickle.loads(" not in src

