"""What a user meets first (issue 15): set-up offered in the sidebar, offline refusal, failures
in Blender's reports whole, stale errors cleared, the backend log one click away."""
import pytest

from recording_layout import draw


def _status(bpy, ext):
    return draw(ext.ui.VIEW3D_PT_headcraft, bpy.context, real=object())


def _labels(calls):
    return [c[1] for c in calls if c[0] == "label"]


@pytest.fixture
def prefs(blender, ext):
    return blender.context.preferences.addons[ext.__name__].preferences


@pytest.fixture
def setprop():
    """Set an RNA property for one test (pytest's monkeypatch cannot restore bpy structs)."""
    saved = []

    def set_(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    yield set_
    for obj, name, value in reversed(saved):
        setattr(obj, name, value)


def _missing_flame(prefs, setprop, folder):
    """FLAME paths that name files which are not there."""
    for prop in ("flame_model_path", "flame_masks_path", "flame_uv_path"):
        setprop(prefs, prop, str(folder / f"missing_{prop}.pkl"))
    setprop(prefs, "flame_model_path", str(folder / "missing_generic_model.pkl"))


def test_first_run_offers_set_up(blender, ext, prefs, tmp_path, monkeypatch, setprop):
    bpy = blender
    ext.runtime.STATE.backend.stop()
    setprop(prefs, "python_path", "")
    monkeypatch.setattr(ext.runtime, "managed_python", lambda: tmp_path / "env" / "bin" / "python")
    calls = _status(bpy, ext)
    assert _labels(calls)[0] == "No backend set up yet"
    assert ("operator", "headcraft.setup_backend") in calls
    assert not any("starts when needed" in t for t in _labels(calls))
    # a Backend Python that is gone: say so, with the path, and lead to the preferences
    setprop(prefs, "python_path", str(tmp_path / "gone" / "python"))
    calls = _status(bpy, ext)
    text = " ".join(_labels(calls))
    assert "Choose an existing Backend Python" in text and "gone" in text
    assert ("operator", "headcraft.open_preferences") in calls


def test_offline_set_up_refuses_and_changes_nothing(blender, ext, prefs, tmp_path, monkeypatch, setprop):
    bpy = blender
    env = tmp_path / "env"
    monkeypatch.setattr(ext.runtime, "managed_python", lambda: env / "bin" / "python")
    setprop(bpy.context.preferences.system, "use_online_access", False)
    assert not bpy.app.online_access
    before = ext.runtime.STATE.setup
    with pytest.raises(RuntimeError, match="Allow Online Access"):
        bpy.ops.headcraft.setup_backend()
    assert ext.runtime.STATE.setup is before and not env.exists()


def test_failure_reaches_blenders_reports_whole(blender, ext, prefs, tmp_path, capfd, monkeypatch, setprop):
    """In the GUI's flow the pump reports through an operator: Blender prints reports in the
    background, and shows them in the status bar and Info editor with a window."""
    bpy = blender
    _missing_flame(prefs, setprop, tmp_path)
    monkeypatch.setattr(ext.runtime.STATE, "wait_in_background", False)
    ext.runtime.STATE.messages.clear()
    capfd.readouterr()
    assert bpy.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2) == {"FINISHED"}
    ext.runtime.wait_all(120)
    level, message = ext.runtime.STATE.messages[-1]
    assert level == "ERROR" and message.startswith("Add FLAME Head failed: ") and len(message) > 100
    out = capfd.readouterr().out
    assert f"Error: {message}" in out          # whole, not cut at 100 characters
    calls = _status(bpy, ext)
    assert ("operator", "headcraft.open_backend_log") in calls
    shown = " ".join(t for t in _labels(calls))
    assert "Check the FLAME files" in shown
    # the log opens as a text in Blender
    assert bpy.ops.headcraft.open_backend_log() == {"FINISHED"}
    log = bpy.data.texts[ext.ui.LOG_TEXT].as_string()
    assert log.strip() and log.splitlines()[-1] in ext.runtime.STATE.backend.log_path.read_text()
    # a job that succeeds clears the stale error from the sidebar
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    ext.runtime.wait_all(120)
    assert all(level != "ERROR" for level, _ in ext.runtime.STATE.messages)
    assert "headcraft.open_backend_log" not in [c[1] for c in _status(bpy, ext) if c[0] == "operator"]


def test_a_script_still_gets_the_error(blender, ext, prefs, tmp_path, setprop):
    """Background scripts wait for the job: the operator itself fails with the whole message."""
    _missing_flame(prefs, setprop, tmp_path)
    with pytest.raises(RuntimeError, match="(?s)Check the FLAME files.*Not found: .*missing_generic_model.pkl"):
        blender.ops.headcraft.add_head(model="FLAME", num_shape=2, num_expr=2)


def test_set_up_refuses_a_blender_python_too_new_for_the_backend(blender, ext, prefs, tmp_path, monkeypatch,
                                                                 setprop):
    """Blender 5.x runs Python 3.13; the backend's environment needs 3.10-3.12. On 4.x Blender's
    own Python qualifies, so set-up would start: there the check is that it is not refused."""
    import sys
    bpy = blender
    env = tmp_path / "env"
    monkeypatch.setattr(ext.runtime, "managed_python", lambda: env / "bin" / "python")
    setprop(bpy.context.preferences.system, "use_online_access", True)
    setprop(prefs, "setup_base_python", "")
    if sys.version_info[:2] > ext.ui.MAX_BASE_PYTHON:
        with pytest.raises(RuntimeError, match="Choose a Base Python 3.10-3.12"):
            bpy.ops.headcraft.setup_backend()
        assert not env.exists()
    else:
        assert ext.ui.MIN_BASE_PYTHON <= sys.version_info[:2] <= ext.ui.MAX_BASE_PYTHON
