"""Generate panel (issue 5): a sample from a generator checkpoint on the active head."""
import numpy as np
import pytest
import torch

from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.networks import Generator


def test_generate_a_detailed_head_and_refuse_without_checkpoint(blender, ext, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=2) == {"FINISHED"}
    head = bpy.context.active_object
    s = bpy.context.scene.headcraft
    s.gen_checkpoint = ""
    before = sorted(o.name for o in bpy.data.objects)
    with pytest.raises(RuntimeError, match="checkpoint"):
        bpy.ops.headcraft.generate()
    assert sorted(o.name for o in bpy.data.objects) == before
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    _, cfg = checkpoint.save(G, tmp_path / "tiny")
    s.gen_checkpoint, s.gen_seed, s.gen_psi, s.map_layout = str(cfg), 5, 0.6, "headcraft"
    assert bpy.ops.headcraft.generate() == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == f"{head.name} Seed 5" and obj["headcraft_seed"] == 5
    disp = ext.layout.build.detailed_arrays(obj)["displacement"]
    assert np.abs(disp).max() > 0 and np.isfinite(disp).all()
    assert s.map_image is not None and tuple(s.map_image.size) == (64, 64)
    bpy.context.view_layer.objects.active = head
    s.gen_checkpoint = str(tmp_path / "missing.json")
    with pytest.raises(RuntimeError, match="not found"):
        bpy.ops.headcraft.generate()
