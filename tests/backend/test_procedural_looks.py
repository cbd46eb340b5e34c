"""Procedural looks (procedural/scans.py: Look, random_look, make_scan(look=...)): hair volumes,
facial hair, headwear, ears and age, each with consistent ground truth."""
import dataclasses
import hashlib

import numpy as np
import pytest

from headcraft_backend.procedural import scans as S
from headcraft_backend.head.registry import load_model_data

QUIET = dict(holes=0, junk=False, color=False)


@pytest.fixture(scope="module")
def data():
    return load_model_data({"model": "openhead"})


def _offset_mm(s):
    return np.linalg.norm(s.truth_vertices - s.truth_base_vertices, axis=1) * 1000


def _folded(s):
    """Truth triangles turned over against the same triangles of the surface without the look."""
    f = s.truth_faces.astype(np.int64)

    def normals(v):
        return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return int(((normals(s.truth_vertices) * normals(s.truth_base_vertices)).sum(1) <= 0).sum())


def _top_of_scalp(s):
    scalp = s.truth_regions["scalp"]
    y = s.truth_base_vertices[scalp, 1]
    return scalp[y > np.quantile(y, 0.5)]


def test_default_scan_unchanged(data):
    # The scan of seed 0 with default arguments, as before looks existed (bit for bit up to 0.1 um).
    s = S.make_scan(data, 0)
    h = hashlib.sha1()
    for a in (np.round(s.truth_vertices, 7), np.round(s.to_model(s.vertices), 7), s.faces, s.scan_truth_index,
              s.colors, s.truth_observed):
        h.update(np.ascontiguousarray(a).tobytes())
    assert h.hexdigest() == "4e1cb9db93616f833206206028f333f73318fffd"
    assert s.look == {} and set(s.truth_regions) == set(data.regions)


def test_random_look_is_seeded_and_varied():
    assert S.random_look(5) == S.random_look(5)
    looks = [S.random_look(seed) for seed in range(300)]
    assert {lk.hair for lk in looks} == set(S.LOOK_HAIR)
    assert {lk.beard for lk in looks} == set(S.BEARDS)
    assert {lk.headwear for lk in looks} == set(S.HEADWEAR)
    assert any(lk.fringe for lk in looks) and any(lk.recession > 0 for lk in looks)
    assert {lk.part for lk in looks} == set(S.PARTS)
    assert max(lk.length_mm for lk in looks) > 60 and min(lk.age for lk in looks) < 25
    # A fixed field: the draws after it follow it (an afro's length), the others stay.
    afro = S.random_look(3, hair="afro")
    lo, hi = S.HAIR_MM["afro"]
    assert lo <= afro.length_mm <= hi and afro.age == S.random_look(3).age


def test_bad_looks_are_refused(data):
    with pytest.raises(ValueError, match="unknown look hair 'mohawk'"):
        S.Look(hair="mohawk").check()
    with pytest.raises(ValueError, match="length_mm = 300"):
        S.Look(length_mm=300.0).check()
    with pytest.raises(ValueError, match="unknown look field"):
        S.random_look(1, colour="red")
    with pytest.raises(ValueError, match="either hair"):
        S.make_scan(data, 1, hair="long", look=S.Look())


def test_look_truth_is_consistent_and_seeded(data):
    look = S.Look(hair="curly", length_mm=35.0, curl=0.9, beard="goatee", beard_mm=15.0, headwear="headband",
                  headwear_mm=5.0)
    s = S.make_scan(data, 8, look=look, noise_mm=0.0, holes=2, junk=False, detail=False)
    # Same topology as every scan; without noise a scan vertex IS its truth vertex.
    assert len(s.truth_vertices) == len(S.make_scan(data, 8, hair="none", **QUIET).truth_vertices)
    j = s.scan_truth_index
    assert (j >= 0).all()
    np.testing.assert_allclose(s.to_model(s.vertices), s.truth_vertices[j], atol=1e-9)
    # truth_hair_mm is the whole offset (no skin detail here).
    np.testing.assert_allclose(_offset_mm(s), s.truth_hair_mm, atol=1e-3)
    for name in ("hair", "facial_hair", "headwear"):
        idx = s.truth_regions[name]
        assert len(idx) > 1000 and idx.max() < len(s.truth_vertices), name
    assert s.hair == "curly" and s.look["headwear"] == "headband"
    again = S.make_scan(data, 8, look=look, noise_mm=0.0, holes=2, junk=False, detail=False)
    assert np.array_equal(again.vertices, s.vertices) and np.array_equal(again.truth_vertices, s.truth_vertices)
    # The look changes the surface, not the identity drawn from the seed.
    other = S.make_scan(data, 8, look=S.Look(hair="bald"), **QUIET)
    assert np.array_equal(other.shape, s.shape) and np.array_equal(other.expr, s.expr)


def test_afro_stands_off_the_scalp(data):
    s = S.make_scan(data, 4, look=S.Look(hair="afro", length_mm=60.0, curl=0.9), **QUIET)
    top = _top_of_scalp(s)
    assert 40 < np.median(s.truth_hair_mm[top]) < 80
    assert np.all(s.truth_hair_mm[s.truth_regions["face"]] == 0)
    assert _folded(s) == 0
    crop = S.make_scan(data, 4, look=S.Look(hair="crop", length_mm=6.0), **QUIET)
    assert 3 < np.median(crop.truth_hair_mm[_top_of_scalp(crop)]) < 9


def test_beards_sit_on_the_chin(data):
    full = S.make_scan(data, 6, look=S.Look(hair="bald", beard="full", beard_mm=20.0), **QUIET)
    R = full.truth_base_vertices
    lips = full.truth_regions["lips"]
    mouth_y = R[lips, 1].mean()
    face = full.truth_regions["face"]
    chin = face[(R[face, 1] < mouth_y - 0.02) & (np.abs(R[face, 0]) < 0.02) & (R[face, 2] > R[lips, 2].min() - 0.03)]
    assert len(chin) > 50 and np.median(full.truth_hair_mm[chin]) > 10
    assert np.median(full.truth_hair_mm[lips]) < 1.0          # the mouth stays clear
    assert full.truth_hair_mm[_top_of_scalp(full)].max() == 0     # bald
    moustache = S.make_scan(data, 6, look=S.Look(hair="bald", beard="moustache", beard_mm=8.0), **QUIET)
    above = face[(R[face, 1] > mouth_y + 0.007) & (R[face, 1] < mouth_y + 0.012) & (np.abs(R[face, 0]) < 0.01)]
    assert np.median(moustache.truth_hair_mm[above]) > 3 and moustache.truth_hair_mm[chin].max() < 1.0


@pytest.mark.parametrize("kind", ["cap", "beanie", "headband", "turban"])
def test_headwear_covers_the_head(data, kind):
    mm = S.HEADWEAR_MM[kind][1]
    s = S.make_scan(data, 9, look=S.Look(hair="medium", length_mm=15.0, headwear=kind, headwear_mm=mm), **QUIET)
    worn = s.truth_regions["headwear"]
    assert len(worn) > 5000 and _folded(s) == 0
    top = np.intersect1d(_top_of_scalp(s), worn)
    if kind == "turban":            # a tall one: 10-20 cm above the crown
        assert 0.7 * mm < s.truth_hair_mm[top].max() <= 1.05 * mm
    elif kind == "cap":             # a thin crown and a brim reaching out over the forehead
        assert np.median(s.truth_hair_mm[top]) < 10
        face = np.intersect1d(s.truth_regions["face"], worn)
        assert s.truth_hair_mm[face].max() > 0.7 * mm
    elif kind == "headband":        # a band: the hair above it stays
        assert len(top) < len(_top_of_scalp(s)) / 2
        assert np.median(s.truth_hair_mm[worn]) < 15
    else:
        assert mm < np.median(s.truth_hair_mm[top]) < mm + 8


@pytest.mark.parametrize("i", range(len(S.LOOK_HAIR)))
def test_no_folds_for_any_style(data, i):
    # Every hair style once, with every beard and the headwear kinds spread over them.
    hair, beard = S.LOOK_HAIR[i], S.BEARDS[i % len(S.BEARDS)]
    look = S.random_look(20 + i, hair=hair, beard=beard, beard_mm=S.BEARD_MM[beard][1],
                         length_mm=S.HAIR_MM[hair][1], headwear=S.HEADWEAR[max(i - 4, 0)])
    s = S.make_scan(data, 20 + i, look=look, **QUIET)
    assert _folded(s) == 0, look
    assert s.truth_hair_mm.max() >= (0.5 * S.HAIR_MM[hair][1] if hair != "bald" or i else 0)


def test_ears_and_age(data):
    plain = S.make_scan(data, 2, look=S.Look(hair="bald", age=20.0), **QUIET)
    ears = S.make_scan(data, 2, look=S.Look(hair="bald", age=20.0, ear_scale=1.2, ear_angle_deg=20.0), **QUIET)
    moved = np.linalg.norm(ears.truth_base_vertices - plain.truth_base_vertices, axis=1) * 1000
    inside = np.zeros(len(moved), bool)
    inside[plain.truth_regions["ears"]] = True
    assert moved[inside].max() > 5 and np.all(moved[~inside] == 0)
    assert _folded(ears) == 0
    old = S.make_scan(data, 2, look=S.Look(hair="bald", age=75.0), **QUIET)
    face = plain.truth_regions["face"]
    rms = [np.sqrt((s.truth_detail_mm[face] ** 2).mean()) for s in (plain, old)]
    assert rms[1] > 1.3 * rms[0]
    assert old.truth_detail_mm[face].min() < -0.5 and plain.truth_detail_mm[face].min() > -0.5
