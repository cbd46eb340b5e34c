"""The settings that feed a job parameter take its limits, default and choices from the
backend's declaration (issue 17): headcraft_blender/client/job_params.py, generated from
`@job(...)` by tools/protocol_catalogue.py (tests/backend/test_job_catalogue.py keeps it current)."""
import pytest

# (settings group or operator, property, job kind, parameter)
FED = [("head", "model", "head.build", "model"), ("head", "num_shape", "head.build", "num_shape"),
       ("head", "num_expr", "head.build", "num_expr"),
       ("add_head", "model", "head.build", "model"), ("add_head", "num_shape", "head.build", "num_shape"),
       ("add_head", "num_expr", "head.build", "num_expr"),
       ("fit", "model", "fit.scan", "model"), ("fit", "preset", "fit.scan", "preset"),
       ("layout", "uv_layout", "map.bake", "layout"), ("layout", "size", "map.bake", "size"),
       ("layout", "size", "map.bake_colour", "size"), ("layout", "space", "map.bake", "space"),
       ("layout", "space", "map.apply", "space"),
       ("generate", "checkpoint", "generate.sample", "checkpoint"), ("generate", "seed", "generate.sample", "seed"),
       ("generate", "seed", "generate.interpolate", "seed_a"), ("generate", "seed", "generate.transfer_hair", "face_seed"),
       ("generate", "psi", "generate.sample", "psi"), ("generate", "psi", "generate.interpolate", "psi"),
       ("generate", "noise", "generate.sample", "noise"), ("generate", "mix_seed", "generate.sample", "mix_seed"),
       ("generate", "mix_from", "generate.sample", "mix_from"),
       ("generate", "to_seed", "generate.interpolate", "seed_b"),
       ("generate", "to_seed", "generate.transfer_hair", "hair_seed"),
       ("generate", "interpolate_steps", "generate.interpolate", "steps")]
# where the panel's default is its own (the declaration's is for requests that leave it out)
UI_DEFAULTS = {("generate", "interpolate_steps"): 9}      # odd: the middle step is the halfway head


def _rna(bpy, owner, prop):
    if owner == "add_head":
        return bpy.ops.headcraft.add_head.get_rna_type().properties[prop]
    return getattr(bpy.context.scene.headcraft, owner).bl_rna.properties[prop]


@pytest.mark.parametrize("owner, prop, kind, param", FED, ids=[f"{o}.{p}-{k}.{q}" for o, p, k, q in FED])
def test_settings_stay_inside_the_declared_parameter(blender, ext, owner, prop, kind, param):
    bpy = blender
    declared = ext.client.job_params.PARAMS[kind][param]
    rna = _rna(bpy, owner, prop)
    lo, hi, choices = declared["min"], declared["max"], declared["choices"]
    if rna.type == "ENUM":
        items = rna.enum_items.keys()
        if choices:          # each item is a declared choice, and the default is the declared one
            assert {i.lower() for i in items} <= set(choices)
            assert rna.default == declared["default"].upper()
        else:                # sizes: every item inside the declared bounds
            assert all(lo <= int(i) <= hi for i in items)
            assert rna.default == str(declared["default"])
        return
    if rna.type == "STRING":
        assert rna.default == declared["default"]
        return
    assert rna.type == {"int": "INT", "float": "FLOAT"}[declared["type"]]
    if lo is not None:
        assert rna.hard_min >= lo and rna.soft_min >= lo
    if hi is not None:
        assert rna.hard_max <= hi and rna.soft_max <= hi
    assert rna.hard_min <= rna.default <= rna.hard_max
    if declared["default"] is not None and (owner, prop) not in UI_DEFAULTS:
        assert rna.default == pytest.approx(declared["default"])


def test_bounds_the_panel_does_not_narrow_are_the_declared_ones(blender, ext):
    """Truncation and Interpolate's steps: the declared range is the hard one, the panel's
    narrower range only the slider's."""
    bpy = blender
    params = ext.client.job_params.PARAMS
    psi, steps = _rna(bpy, "generate", "psi"), _rna(bpy, "generate", "interpolate_steps")
    assert (psi.hard_min, psi.hard_max) == (params["generate.sample"]["psi"]["min"],
                                            params["generate.sample"]["psi"]["max"])
    assert (psi.soft_min, psi.soft_max) == pytest.approx((0.0, 1.5))
    assert (steps.hard_min, steps.hard_max) == (params["generate.interpolate"]["steps"]["min"],
                                                params["generate.interpolate"]["steps"]["max"])
    assert steps.soft_max == 64 and steps.default == UI_DEFAULTS[("generate", "interpolate_steps")]
    assert _rna(bpy, "head", "num_shape").hard_min == params["head.build"]["num_shape"]["min"]


def test_bake_formats_are_the_declared_ones(blender, ext):
    """Each format the bake declares is a toggle of the same name in the Maps settings."""
    layout = blender.context.scene.headcraft.layout
    formats = ext.client.job_params.PARAMS["map.bake"]["formats"]["choices"]
    assert tuple(ext.layout.properties.FORMATS) == formats
    for f in formats:
        assert layout.bl_rna.properties[f].type == "BOOLEAN", f
