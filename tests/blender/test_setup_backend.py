"""'Set Up Backend' creates a real environment with pip, and the extension then runs on it."""
import pytest

from blender_session import default_backend_python

# The base Python of the environments: the backend's (bpy 5.x runs on Python 3.13, which the
# backend's pinned dependencies have no wheels for).
BASE_PYTHON = default_backend_python()


@pytest.mark.backend_bound      # pip installs the backend's environment (minutes)
def test_setup_backend_then_add_head(blender, ext, tmp_path, monkeypatch):
    bpy = blender
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    env = tmp_path / "backend-env"
    # The managed environment normally lives in the extension's user folder; a temp one here.
    monkeypatch.setattr(ext.runtime, "managed_python",
                        lambda: ext.client.environment.env_python(env))
    prefs.setup_base_python = BASE_PYTHON
    prefs.setup_torch = "torch==2.13.0"  # the CPU build on these machines
    monkeypatch.setattr(bpy.context.preferences.system, "use_online_access", True)  # the user allows it
    assert bpy.ops.headcraft.setup_backend() == {"FINISHED"}
    setup = ext.runtime.STATE.setup
    assert setup.state == "done", "\n".join(setup.log[-20:])
    assert setup.fraction == 1.0 and ext.client.environment.env_python(env).exists()
    calls = __import__("recording_layout").draw(prefs, bpy.context)
    assert any(c[0] == "progress" and c[1] == 1.0 for c in calls)
    # the add-on now uses that environment (empty Backend Python = the managed one)
    good = prefs.python_path
    prefs.python_path = ""
    try:
        assert bpy.ops.headcraft.restart_backend() == {"FINISHED"}
        assert str(env) in ext.runtime.STATE.backend.local.python
        assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=5, num_expr=5) == {"FINISHED"}
    finally:
        ext.runtime.STATE.backend.stop()
        prefs.python_path = good


def test_setup_failure_is_reported(blender, ext, tmp_path):
    setup = ext.client.environment.EnvironmentSetup(tmp_path / "env", "/nonexistent/python3")
    setup.run()
    assert setup.state == "error" and "/nonexistent/python3" in setup.message


def test_setup_cancel(blender, ext, tmp_path):
    setup = ext.client.environment.EnvironmentSetup(tmp_path / "env", BASE_PYTHON,
                                                   torch_spec="torch==2.13.0").start()
    import time
    deadline = time.monotonic() + 60
    while "torch" not in setup.message and time.monotonic() < deadline:
        time.sleep(0.05)
    setup.cancel()
    while setup.state == "running" and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    assert setup.state == "cancelled"
