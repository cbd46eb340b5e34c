"""StyleGAN2 networks (issue 5): the published checkpoint layout and the forward pass."""
import numpy as np
import pytest
import torch

from headcraft_backend.generate.networks import Discriminator, Generator


@pytest.fixture(scope="module")
def published():
    torch.manual_seed(0)
    return Generator(), Discriminator()


def test_generator_matches_the_published_layout(published):
    """docs/STYLEGAN_CHECKPOINT.md: 128 state-dict keys, 108 parameters in EMA order with the 6
    frozen blur kernels at 0, 15, ..., 75, 23,724,439 parameter elements, 16 ws."""
    G, _ = published
    sd = G.state_dict()
    keys = list(sd)
    assert len(keys) == 128 and G.num_ws == 16
    assert keys[:8] == ["synthesis.blocks.0.resampler.kernel", "synthesis.blocks.0.conv0.weight",
                        "synthesis.blocks.0.conv0.noise_strength", "synthesis.blocks.0.conv0.bias",
                        "synthesis.blocks.0.conv0.noise_const", "synthesis.blocks.0.conv0.resampler.kernel",
                        "synthesis.blocks.0.conv0.affine.weight", "synthesis.blocks.0.conv0.affine.bias"]
    assert keys[108:112] == ["synthesis.first_block.const", "synthesis.first_block.conv1.weight",
                             "synthesis.first_block.conv1.noise_strength", "synthesis.first_block.conv1.bias"]
    assert keys[119:122] == ["mapping.w_avg", "mapping.layers.0.weight", "mapping.layers.0.bias"]
    shapes = {"synthesis.blocks.5.conv0.weight": (64, 128, 3, 3), "synthesis.blocks.5.torgb.weight": (6, 64, 1, 1),
              "synthesis.blocks.3.conv1.affine.weight": (256, 512), "synthesis.first_block.const": (512, 4, 4),
              "synthesis.blocks.4.conv0.noise_const": (128, 128), "mapping.layers.3.weight": (512, 512)}
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    params = list(G.named_parameters())
    assert len(params) == 108
    frozen = [i for i, (_, p) in enumerate(params) if not p.requires_grad]
    assert frozen == [0, 15, 30, 45, 60, 75]
    assert sum(p.numel() for _, p in params) == 23_724_439
    # the shared blur: one tensor under two names
    assert sd["synthesis.blocks.2.resampler.kernel"].data_ptr() == sd["synthesis.blocks.2.conv0.resampler.kernel"].data_ptr()


def test_discriminator_matches_the_published_layout(published):
    _, D = published
    sd = D.state_dict()
    assert len(sd) == 50 and len(list(D.parameters())) == 44
    assert sum(p.numel() for p in D.parameters()) == 24_001_377
    assert list(sd)[:9] == ["net.0.weight", "net.0.bias", "net.1.conv0.weight", "net.1.conv0.bias",
                            "net.1.conv1.weight", "net.1.conv1.bias", "net.1.conv1.resample.kernel",
                            "net.1.skip.weight", "net.1.skip.resample.kernel"]
    assert tuple(sd["net.7.conv.weight"].shape) == (512, 513, 3, 3) and tuple(sd["net.7.fc.weight"].shape) == (512, 8192)


def small(**kw):
    torch.manual_seed(1)
    return Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=32, img_channels=6,
                     channel_base=256, channel_max=32, **kw)


def test_forward_shapes_noise_modes_and_truncation_in_w():
    G = small().eval()
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    z = torch.randn(3, 32)
    with torch.no_grad():
        ws = G.mapping(z)
        assert ws.shape == (3, G.num_ws, 32)
        out = {m: G.synthesis(ws, noise_mode=m) for m in ("const", "none", "random", "const-none")}
        assert out["const"].shape == (3, 6, 32, 32) and torch.isfinite(out["const"]).all()
        assert torch.equal(out["const"], G.synthesis(ws, noise_mode="const"))            # deterministic
        assert not torch.equal(out["const"], out["none"])
        assert not torch.equal(G.synthesis(ws, noise_mode="random"), out["random"])      # fresh noise
        # const-none (the reference's mode): const noise left of 58.5 % of the width, none after
        layer = G.synthesis.blocks[-1].conv1
        x = torch.randn(3, layer.weight.shape[1], 32, 32)
        diff = layer(x, ws[:, 0], "const-none") - layer(x, ws[:, 0], "none")
        same = layer(x, ws[:, 0], "const-none") - layer(x, ws[:, 0], "const")
        cut = int(0.585 * 32)
        assert diff[..., cut:].abs().max() == 0 and diff[..., :cut].abs().max() > 0
        assert same[..., :cut].abs().max() == 0
        # truncation is applied in W: psi = 0 gives w_avg for every z, whatever the z scale
        G.mapping.w_avg.normal_()
        w0 = G.mapping(z * 5.0, truncation_psi=0.0)
        assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
        w7 = G.mapping(z, truncation_psi=0.7)
        assert torch.allclose(w7, G.mapping.w_avg + 0.7 * (ws - G.mapping.w_avg), atol=1e-6)
    with pytest.raises(ValueError, match="noise mode"):
        G.synthesis(ws, noise_mode="loud")


def test_w_avg_tracks_training_batches_and_discriminator_trains():
    G = small().train()
    z = torch.randn(4, 32)
    before = G.mapping.w_avg.clone()
    w = G.mapping(z)
    assert torch.allclose(G.mapping.w_avg, before.lerp(w[:, 0].mean(0), 1 - 0.995), atol=1e-6)
    torch.manual_seed(2)
    D = Discriminator(img_resolution=32, img_channels=6, channel_base=256, channel_max=32)
    img = G.synthesis(w, noise_mode="random")
    logits = D(img)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    grads = [p.grad for p in G.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in G.parameters() if not p.requires_grad)   # blur kernels stay put
    assert np.isfinite(logits.detach().numpy()).all()
