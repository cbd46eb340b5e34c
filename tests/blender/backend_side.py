"""Backend code a Blender test needs (torch: checkpoints, head models) runs in the backend's Python,
as the extension's backend does: build.py test runs bpy 5.x in a Python 3.13 venv without torch."""
import json
import subprocess
from pathlib import Path

from blender_session import default_backend_python

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, **inputs):
    """Run `script` in the backend's Python with `inputs` (JSON) as variables; it sets `result`
    (JSON), which is returned."""
    prog = ("import json, sys\nglobals().update(json.loads(sys.argv[1]))\n" + script
            + "\nprint('\\nRESULT ' + json.dumps(result))")
    out = subprocess.run([default_backend_python(), "-c", prog, json.dumps(inputs)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "\nRESULT " in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.rsplit("\nRESULT ", 1)[1])


def tiny_checkpoint(path, seed: int, to_rgb_scale: float = 1.0) -> str:
    """A small random generator saved as a checkpoint at `path`; returns its config file.
    `to_rgb_scale` scales the output layers' weights (0.15: details of about a millimetre)."""
    return run("""
import torch
from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.networks import Generator, ToRGBLayer
torch.manual_seed(seed)
G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
              channel_max=32)
with torch.no_grad():
    for m in G.modules():
        if isinstance(m, ToRGBLayer):
            m.weight.mul_(to_rgb_scale)
result = str(checkpoint.save(G, path)[1])
""", path=str(path), seed=seed, to_rgb_scale=to_rgb_scale)


def random_openhead(path, seed: int = 4):
    """(vertices (V, 3) metres, faces) of an OpenHead with a random identity (30 components), made in
    the backend's Python and passed through `path` (.npz)."""
    import numpy as np
    run("""
import numpy as np, torch
from headcraft_backend.head.model import HeadModel
from headcraft_backend.head.registry import load_model_data
d = load_model_data({"model": "openhead"})
rng = np.random.default_rng(seed)
with torch.no_grad():
    v = HeadModel(d)(shape=torch.tensor(rng.standard_normal((1, 30)), dtype=torch.float32)).vertices[0].numpy()
np.savez(path, vertices=v, faces=d.faces)
result = None
""", path=str(path), seed=seed)
    with np.load(path) as f:
        return f["vertices"], f["faces"]


def demo_model_resolution() -> int:
    return run("""
from headcraft_backend.generate import checkpoint
result = checkpoint.load(checkpoint.DEMO_MODEL)[0].img_resolution
""")
