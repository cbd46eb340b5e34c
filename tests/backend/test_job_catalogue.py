"""Every job kind is declared once (issue 17): the server checks requests against the
declaration, and the protocol's job catalogue and the extension's job_params.py (the limits,
defaults and choices its settings take) are made from the declarations."""
import sys
from pathlib import Path

import numpy as np
import pytest

from headcraft_backend.errors import UserError
from headcraft_backend.handlers import JobSpec, Param
from headcraft_backend.service.server import load_all

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import protocol_catalogue  # noqa: E402


def test_protocol_md_lists_every_job_as_declared():
    specs = load_all()
    assert len(specs) == 21 and all(isinstance(s, JobSpec) for s in specs.values())
    written = protocol_catalogue.written(protocol_catalogue.PROTOCOL.read_text())
    assert written == protocol_catalogue.generated(), "run: python tools/protocol_catalogue.py"
    for kind in specs:
        assert f"| `{kind}` |" in written


def test_the_extension_s_job_params_are_as_declared():
    path = protocol_catalogue.JOB_PARAMS
    assert path.read_text() == protocol_catalogue.job_params(), "run: python tools/protocol_catalogue.py"
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)      # plain data: no import at all
    specs = load_all()
    assert set(namespace["PARAMS"]) == set(specs)
    size = namespace["PARAMS"]["map.bake"]["size"]
    assert (size["min"], size["max"], size["default"]) == (specs["map.bake"].params["size"].lo,
                                                           specs["map.bake"].params["size"].hi, 1024)
    assert namespace["PARAMS"]["generate.sample"]["noise"]["choices"] == specs["generate.sample"].params["noise"].choices


@pytest.mark.parametrize("params, message", [
    ({"sise": 512}, "map.bake has no parameter 'sise'"),
    ({"size": "big"}, "parameter 'size': big is not an integer from 64 to 8192"),
    ({"size": 1e30}, "parameter 'size'"),
    ({"size": 32}, "from 64 to 8192"),
    ({"size": True}, "not an integer"),
    ({"space": "world"}, "'world' is not one of object, tangent"),
    ({"formats": ["exr", "gif"]}, "'gif' is not one of"),
    ({"model": "smplx"}, "'smplx' is not one of openhead, flame"),
])
def test_requests_are_checked_against_the_declaration(params, message):
    with pytest.raises(UserError, match=message):
        load_all()["map.bake"].checked(params)


def test_defaults_are_filled_and_values_normalised():
    bake = load_all()["map.bake"].checked({"size": 512.0, "formats": ["exr"]})
    assert bake == {"model": "openhead", "layout": "headcraft", "size": 512, "space": "object", "formats": ["exr"]}
    assert type(bake["size"]) is int
    fit = load_all()["fit.scan"].checked({"up": "auto", "forward": [0, 0, -1], "stage2_mode": "vector"})
    assert fit["up"] == "auto" and fit["forward"] == (0.0, 0.0, -1.0) and fit["preset"] == "paper"
    with pytest.raises(UserError, match="'forward'.*three numbers"):
        load_all()["fit.scan"].checked({"forward": [0, 0]})
    with pytest.raises(UserError, match="'psi'.*from -1 to 2"):
        load_all()["generate.sample"].checked({"psi": float("nan")})
    assert load_all()["diagnostics.echo"].checked({"anything": [1]}) == {"anything": [1]}
    assert Param("float", lo=0).check("x", 3) == 3.0


def test_a_bad_request_over_the_wire_is_a_user_error_naming_the_parameter(conn):
    job = conn.submit("map.apply", {"model": "openhead", "spcae": "object"},
                      {"map": np.zeros((64, 64, 3), np.float32)}).wait(60)
    assert job.state == "error" and job.error.error_type == "UserError"
    assert "map.apply has no parameter 'spcae'" in str(job.error)
