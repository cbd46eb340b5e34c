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


# ------------------------------------------------------------------------------------------------
# Checkpoints: files in the published layout, built here
# ------------------------------------------------------------------------------------------------
def _omegaconf_stand_in():
    """A class pickled under omegaconf's name (omegaconf is not installed here), shaped like a
    DictConfig's pickled state: {'_content': {key: node}, '_metadata': ...}."""
    import types

    class DictConfig:
        def __init__(self, content):
            self._content = {k: AnyNode(v) for k, v in content.items()}

        def __getstate__(self):
            return {"_content": self._content, "_metadata": None, "_parent": None}

    class AnyNode:
        def __init__(self, v):
            self._val = v

        def __getstate__(self):
            return {"_val": self._val, "_metadata": None}

    mods = {"omegaconf": types.ModuleType("omegaconf")}
    for modname, cls in (("omegaconf.dictconfig", DictConfig), ("omegaconf.nodes", AnyNode)):
        mod = types.ModuleType(modname)
        cls.__module__, cls.__qualname__ = modname, cls.__name__
        setattr(mod, cls.__name__, cls)
        mods[modname] = mod
    return DictConfig, mods


def write_published(tmp_path, G, D, ema_shift=0.25):
    """A Lightning-style .ckpt (G., D., augment pipe, path-length state; hyper-parameters as a
    DictConfig pointing to a data set that does not exist) and a torch_ema file."""
    import sys
    DictConfig, mods = _omegaconf_stand_in()
    sd = {**{f"G.{k}": v for k, v in G.state_dict().items()}, **{f"D.{k}": v for k, v in D.state_dict().items()},
          "augment_pipe.p": torch.tensor([-1.0]), "path_length_penalty.pl_mean": torch.zeros(1)}
    hp = DictConfig({"dataset_path": "/nonexistent/uv_maps", "latent_dim": G.z_dim, "num_mapping_layers": 2,
                     "image_size": G.img_resolution})
    sys.modules.update(mods)
    try:
        torch.save({"epoch": 9, "global_step": 1234, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
                    "optimizer_states": [], "lr_schedulers": [], "hparams_name": "config",
                    "hyper_parameters": hp}, tmp_path / "_epoch=9.ckpt")
    finally:
        for m in mods:
            sys.modules.pop(m, None)
    shadow = [p.detach() + ema_shift * p.requires_grad for p in G.parameters()]
    torch.save({"decay": 0.995, "num_updates": 1234, "shadow_params": shadow, "collected_params": None},
               tmp_path / "ema_000001234.pth")
    return tmp_path / "_epoch=9.ckpt", tmp_path / "ema_000001234.pth", shadow


def test_published_checkpoint_loads_with_ema_and_without_its_data(tmp_path):
    from headcraft_backend.generate import checkpoint as C
    G = small()
    torch.manual_seed(3)
    D = Discriminator(img_resolution=32, img_channels=6, channel_base=256, channel_max=32)
    ckpt, ema, shadow = write_published(tmp_path, G, D)
    loaded, info = C.load_published(ckpt)
    for (n, a), b in zip(loaded.state_dict().items(), G.state_dict().values()):
        assert torch.equal(a, b), n
    assert info["config"]["w_num_layers"] == 2 and info["config"]["img_resolution"] == 32
    assert info["hyper_parameters"]["dataset_path"] == "/nonexistent/uv_maps" and info["epoch"] == 9
    with_ema, info = C.load(ckpt)            # finds ema_*.pth beside it
    assert info["ema"]["num_updates"] == 1234
    for p, s in zip(with_ema.parameters(), shadow):
        assert torch.equal(p, s)
    assert torch.equal(with_ema.mapping.w_avg, G.mapping.w_avg)     # buffers from the .ckpt
    # our format round trip, outputs identical
    weights, cfg = C.save(with_ema, tmp_path / "ours")
    again, meta = C.load(cfg)
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(again(z, noise_mode="const"), with_ema(z, noise_mode="const"))
    assert meta["config"] == C.config_from_state(G.state_dict())


def test_unsafe_or_mismatched_checkpoints_are_refused(tmp_path):
    import os
    from headcraft_backend.generate import checkpoint as C

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"state_dict": {"G.x": torch.ones(1)}, "hyper_parameters": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(C.CheckpointError, match="refused.*system"):
        C.load_published(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()
    G = small()
    sd = {f"G.{k}": v for k, v in G.state_dict().items()}
    sd["G.synthesis.blocks.1.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    del sd["G.synthesis.blocks.0.torgb.bias"]
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(C.CheckpointError) as info:
        C.load_published(tmp_path / "bad.ckpt")
    assert "synthesis.blocks.0.torgb.bias" in str(info.value) and "blocks.1.conv1.weight (3, 3, 3, 3)" in str(info.value)
    ckpt, _, _ = write_published(tmp_path, G, Discriminator(32, 6, 256, 32))
    torch.save({"decay": 0.995, "num_updates": 1, "shadow_params": [torch.zeros(1)] * 3}, tmp_path / "short.pth")
    with pytest.raises(C.CheckpointError, match="3 averaged tensors"):
        C.load_published(ckpt, tmp_path / "short.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(C.CheckpointError, match="junk.ckpt"):
        C.load_published(tmp_path / "junk.ckpt")


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------
def test_pack_unpack_and_face_lowpass():
    from headcraft_backend.generate.sample import face_lowpass, pack, unpack
    rng = np.random.default_rng(0)
    m = rng.normal(size=(16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(unpack(pack(m)), m)
    six = rng.normal(size=(6, 16, 16)).astype(np.float32)
    out = unpack(six)
    np.testing.assert_allclose(out[:, :8], 0.5 * (six[:3, :, 0::2] + six[:3, :, 1::2]).transpose(1, 2, 0)[:, :8], atol=1e-6)
    np.testing.assert_allclose(out[:, 8:], 0.5 * (six[3:, :, 0::2] + six[3:, :, 1::2]).transpose(1, 2, 0)[:, :8], atol=1e-6)
    checker = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0
    low = face_lowpass(np.repeat(checker[..., None], 3, -1).astype(np.float32))
    assert np.abs(low[:, :8]).max() < 1e-6 and np.array_equal(low[:, 8:, 0], checker[:, 8:])
    flat = np.full((16, 16, 3), 2.5, np.float32)
    np.testing.assert_allclose(face_lowpass(flat), flat, atol=1e-6)


def test_two_passes_seeds_and_style_mixing():
    from headcraft_backend.generate.sample import generate_maps, latents, seeds_to_z, synthesize
    G = small().eval()
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.3)
    assert torch.equal(seeds_to_z([7, 8], 32), seeds_to_z([7, 8], 32)) and not torch.equal(*seeds_to_z([7, 8], 32))
    ws = latents(G, seeds_to_z([1], 32), psi=0.7)
    six = synthesize(G, ws)
    with torch.no_grad():
        assert torch.equal(six[:, :3], G.synthesis(ws, noise_mode="none")[:, :3])
        assert torch.equal(six[:, 3:], G.synthesis(ws, noise_mode="const")[:, 3:])
    mixed = latents(G, seeds_to_z([1], 32), 0.7, seeds_to_z([2], 32), mix_from=5)
    other = latents(G, seeds_to_z([2], 32), 0.7)
    assert torch.equal(mixed[:, :5], ws[:, :5]) and torch.equal(mixed[:, 5:], other[:, 5:])
    a, b = generate_maps(G, [1, 1]), generate_maps(G, [2])
    assert a[0].shape == (32, 32, 3) and np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b[0])


def test_generate_job_applies_a_sample_to_a_head(conn, tmp_path):
    from headcraft_backend.generate import checkpoint as C
    torch.manual_seed(5)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    _, cfg = C.save(G, tmp_path / "tiny")
    params = {"model": "openhead", "checkpoint": str(cfg), "seed": 3, "psi": 0.5}
    a = conn.call("generate.sample", params, timeout=300)
    assert a.arrays["map"].shape == (64, 64, 3) and a.result["generator"] == "tiny.json"
    np.testing.assert_allclose(a.arrays["final"], a.arrays["base"] + a.arrays["displacement"], atol=1e-6)
    assert np.abs(a.arrays["displacement"]).max() > 0
    b = conn.call("generate.sample", params, timeout=300)
    np.testing.assert_array_equal(a.arrays["map"], b.arrays["map"])
    c = conn.call("generate.sample", {**params, "seed": 4}, timeout=300)
    assert not np.array_equal(a.arrays["map"], c.arrays["map"])
    for bad, what in (({"checkpoint": str(tmp_path / "none.json")}, "not found"),
                      ({"noise": "loud"}, "noise")):
        j = conn.submit("generate.sample", {**params, **bad}).wait(60)
        assert j.state == "error" and what in str(j.error), j.error


def test_empty_checkpoint_means_the_bundled_demo_model(conn, monkeypatch):
    from headcraft_backend.generate import checkpoint as C
    from headcraft_backend.generate.checkpoint import cached_generator
    from headcraft_backend.errors import UserError
    card = C.DEMO_MODEL.with_name("MODEL_CARD.md").read_text()
    assert C.DEMO_MODEL.stat().st_size + C.DEMO_MODEL.with_suffix(".safetensors").stat().st_size <= 30e6
    G, info = C.load(C.DEMO_MODEL)
    assert f"{G.img_resolution}^2" in card and "MMD-CD" in card and "iterations" in card
    j = conn.call("generate.sample", {"model": "openhead", "checkpoint": "", "seed": 1, "psi": 0.7}, timeout=300)
    assert j.result["generator"] == C.DEMO_MODEL.name and j.arrays["map"].shape == (G.img_resolution,) * 2 + (3,)
    assert np.isfinite(j.arrays["displacement"]).all() and np.abs(j.arrays["displacement"]).max() > 0
    # stand-in for a backend installed without its demo model (the asset cannot be removed here)
    monkeypatch.setattr(C, "DEMO_MODEL", C.DEMO_MODEL.with_name("absent.json"))
    with pytest.raises(UserError, match="no generator checkpoint.*build.py demo-model.*headcraft-backend train"):
        cached_generator(type("Ctx", (), {"cache": {}})(), "")


def test_cli_generate(tmp_path):
    import subprocess
    import sys
    from headcraft_backend.generate import checkpoint as C
    torch.manual_seed(6)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    _, cfg = C.save(G, tmp_path / "tiny")
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "generate", str(cfg), "--seeds", "1", "2",
                        "--out", str(tmp_path / "gen"), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert names == ["seed0001.exr", "seed0001.npy", "seed0001.obj", "seed0002.exr", "seed0002.npy", "seed0002.obj"]
    assert not np.array_equal(np.load(tmp_path / "gen" / "seed0001.npy"), np.load(tmp_path / "gen" / "seed0002.npy"))
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "interpolate", str(cfg), "--seeds", "1", "2",
                        "--steps", "3", "--out", str(tmp_path / "int"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "int").iterdir()) == [f"step{i:03d}.{e}" for i in range(3) for e in ("exr", "obj")]
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "generate", str(tmp_path / "missing.ckpt")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_fast_resampling_equals_the_blur_convolution():
    """The separable two-phase up/downsampling equals nearest/blur/subsample by convolution."""
    from headcraft_backend.generate.networks import SmoothDownsample, SmoothUpsample
    x = torch.randn(2, 5, 12, 16)
    for mod in (SmoothUpsample(), SmoothDownsample()):
        fast = mod(x)
        mod.kernel.data.mul_(1.0000001)            # any other kernel takes the convolution path
        slow = mod(x)
        assert fast.shape == slow.shape and torch.allclose(fast, slow, atol=1e-5)
    up = SmoothUpsample()
    assert up(x).shape == (2, 5, 24, 32) and torch.allclose(up(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 8, 8))


def test_interpolation_in_w_and_z():
    from headcraft_backend.generate.sample import interpolate_maps, interpolation_latents, latents, seeds_to_z, slerp
    G = small().eval()
    ws = interpolation_latents(G, 1, 2, [0.0, 0.25, 1.0])
    wa, wb = latents(G, seeds_to_z([1], 32)), latents(G, seeds_to_z([2], 32))
    assert torch.allclose(ws[0], wa[0]) and torch.allclose(ws[2], wb[0])
    assert torch.allclose(ws[1], 0.75 * wa[0] + 0.25 * wb[0], atol=1e-6)
    za, zb = seeds_to_z([1], 32), seeds_to_z([2], 32)
    mid = slerp(za, zb, 0.5)
    assert torch.allclose(slerp(za, zb, 0.0), za, atol=1e-5) and torch.allclose(slerp(za, zb, 1.0), zb, atol=1e-5)
    assert abs(mid.norm() - 0.5 * (za.norm() + zb.norm())) < 0.1 * za.norm()     # stays on the shell
    maps = interpolate_maps(G, 1, 2, steps=5, space="z")
    assert len(maps) == 5
    d = [np.abs(maps[i + 1] - maps[i]).mean() for i in range(4)]
    assert max(d) < np.abs(maps[4] - maps[0]).mean()          # small steps along the path
    with pytest.raises(ValueError, match="interpolation space"):
        interpolation_latents(G, 1, 2, [0.5], space="q")


def test_pca_baseline_fits_samples_interpolates_and_serves(conn, tmp_path):
    import subprocess
    import sys
    from headcraft_backend.generate.pca import PCAModel
    from headcraft_backend.layout import formats
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 64, 64, 3)).astype(np.float32)
    maps = np.einsum("nk,khwc->nhwc", rng.normal(size=(12, 3)), basis).astype(np.float32) + 0.5
    for i, m in enumerate(maps):
        formats.write(m, tmp_path / "maps", f"m{i:02d}", "exr" if i % 2 else "png16")
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "pca", str(tmp_path / "maps"), "--components", "5",
                        "--out", str(tmp_path / "pca")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    model = PCAModel.load(tmp_path / "pca")
    assert model.z_dim == 5 and model.explained(maps) > 0.999          # three true directions
    np.testing.assert_allclose(model.sample([1], psi=0.0)[0], maps.mean(0), atol=1e-3)
    path = model.interpolate(1, 2, steps=3)
    np.testing.assert_allclose(path[1], 0.5 * (path[0] + path[2]), atol=1e-4)
    j = conn.call("generate.sample", {"model": "openhead", "checkpoint": str(tmp_path / "pca.json"), "seed": 1},
                  timeout=300)
    assert j.arrays["map"].shape == (64, 64, 3) and np.abs(j.arrays["displacement"]).max() > 0
    j = conn.submit("generate.sample", {"model": "openhead", "checkpoint": str(tmp_path / "pca.json"),
                                        "mix_seed": 3}).wait(60)
    assert j.state == "error" and "PCA" in str(j.error)


# ------------------------------------------------------------------------------------------------
# Latent fitting
# ------------------------------------------------------------------------------------------------
def test_latent_fit_full_and_partial_map():
    from headcraft_backend.generate.fit_latent import LatentFitSettings, fit_latent
    from headcraft_backend.generate.sample import generate_maps
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    torch.manual_seed(7)
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.2)
    target = generate_maps(G, [11], psi=1.0, lowpass=False)[0]
    start = generate_maps(G, [12], psi=0.0, lowpass=False)[0]            # the average head
    noise_before = G.synthesis.blocks[0].conv0.noise_const.clone()
    calls = []
    # LPIPS with a randomly initialised AlexNet (no download) and the lpips package's heads
    from headcraft_backend.generate.perceptual import LPIPS, heads_file
    net = LPIPS().load(_alexnet_state(3), torch.load(heads_file(), map_location="cpu", weights_only=True))

    def counted_lpips(a, b):
        calls.append(a.shape)
        return net(a, b)
    fit = fit_latent(G, target, settings=LatentFitSettings(steps_w=150, steps_noise=20, avg_samples=500),
                     perceptual=counted_lpips)
    err0, err = np.abs(start - target).mean(), np.abs(fit.map - target).mean()
    assert err < 0.3 * err0, (err, err0)
    assert fit.ws.shape == (1, G.num_ws, 32) and calls and calls[0][1:] == (3, 64, 64) and not fit.notes
    assert torch.equal(G.synthesis.blocks[0].conv0.noise_const, noise_before)      # G's noise kept
    assert all(p.requires_grad for n, p in G.named_parameters() if "kernel" not in n)
    # partial: the right half of the map hidden
    mask = np.zeros(target.shape[:2], np.float32)
    mask[:, :32] = 1
    part = fit_latent(G, target, mask, LatentFitSettings(steps_z=100, steps_delta=100, steps_noise=20, avg_samples=500))
    seen = np.abs(part.map[:, :32] - target[:, :32]).mean()
    assert seen < 0.5 * np.abs(start[:, :32] - target[:, :32]).mean() and part.notes == ["L1 only (no perceptual term)"]
    # the supplement's schedule: z, the W+ delta, then the noise (500 steps unless set; none for a full map)
    assert len(part.loss_history) == 100 + 100 + 20
    assert LatentFitSettings().noise_steps(partial=True) == 500 and LatentFitSettings().noise_steps(partial=False) == 0
    # z starts from a N(0, I) sample (seeded), not from zero
    from headcraft_backend.generate.sample import synthesize, unpack
    still = fit_latent(G, target, mask, LatentFitSettings(steps_z=0, steps_delta=0, steps_noise=0, seed=5))
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expect = unpack(synthesize(G, G.mapping(z, update_w_avg=False), "const")[0])
    np.testing.assert_allclose(still.map, expect, atol=1e-5)
    # the face term keeps the face disc's displacements small (towards zero, not towards the z result)
    hidden_face = np.zeros_like(mask)
    hidden_face[:, 40:] = 1                  # only part of the scalp seen: the face is unconstrained
    free, pulled = (fit_latent(G, target, hidden_face, LatentFitSettings(steps_z=10, steps_delta=40, steps_noise=0,
                                                                         face_pull=w, avg_samples=500)).map
                    for w in (0.0, 50.0))
    disc = lambda m: np.abs(m[16:48, 8:24]).mean()      # noqa: E731  (inside the face half's disc)
    assert disc(pulled) < disc(free)


def _alexnet_state(seed: int) -> dict:
    """torchvision's AlexNet file layout (feature convs and a classifier) with random values."""
    from headcraft_backend.generate.perceptual import CONVS
    g = torch.Generator().manual_seed(seed)
    sd = {"classifier.1.weight": torch.zeros(8, 8)}
    for idx, i, o, k, _, _ in CONVS:
        sd[f"features.{idx}.weight"] = torch.randn(o, i, k, k, generator=g) * (2 / (i * k * k)) ** 0.5
        sd[f"features.{idx}.bias"] = torch.randn(o, generator=g) * 0.01
    return sd


def test_lpips_weights_by_name_from_the_hub_cache(tmp_path, monkeypatch):
    from headcraft_backend.generate import perceptual as P
    heads = P.heads_file()
    assert heads is not None, "build.py setup installs lpips (--no-deps) for its weight files"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net, why = P.load_lpips()
    assert net is None and "AlexNet weights not found" in why and str(tmp_path) in why and why.endswith("L1 only")
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    bad = _alexnet_state(0)
    bad["features.3.weight"] = bad["features.3.weight"][:10]
    torch.save(bad, hub / "alexnet-owt-7be5be79.pth")
    net, why = P.load_lpips()
    assert net is None and "features.3.weight is (10, 64, 5, 5)" in why
    sd = _alexnet_state(0)
    torch.save(sd, hub / "alexnet-owt-7be5be79.pth")
    net, why = P.load_lpips()
    assert why == "" and net is not None
    hd = torch.load(heads, map_location="cpu", weights_only=True)
    assert torch.equal(net.lins[2], hd["lin2.model.1.weight"]) and torch.equal(net.convs[1].weight, sd["features.3.weight"])
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    n = torch.randn_like(x)
    d0, d1, d2 = net(x, x), net(x, x + 0.05 * n), net(x, x + 0.3 * n)
    assert d0.shape == (3,) and d0.abs().max() < 1e-6 and (d1 > 0).all() and (d2 > d1).all()
    assert torch.allclose(d2, net(x + 0.3 * n, x))
    y = (x + 0.3 * n).requires_grad_()
    net(x, y).sum().backward()
    assert y.grad.abs().sum() > 0 and not any(p.requires_grad for p in net.parameters())
    # stand-in for a machine without the lpips package (uninstalling it here would break other tests)
    monkeypatch.setattr(P, "heads_file", lambda: None)
    assert P.load_lpips() == (None, "LPIPS unavailable: the `lpips` package is not installed (pip install lpips); "
                                    "L1 only")


def test_fit_latent_job(conn, tmp_path):
    from headcraft_backend.generate import checkpoint as C
    from headcraft_backend.generate.sample import generate_maps
    torch.manual_seed(8)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    _, cfg = C.save(G, tmp_path / "tiny")
    target = generate_maps(G, [4], psi=1.0, lowpass=False)[0]
    settings = {"steps_w": 60, "avg_samples": 200}
    j = conn.call("generate.fit_latent", {"model": "openhead", "checkpoint": str(cfg), "settings": settings},
                  {"map": target}, timeout=600)
    assert j.arrays["ws"].shape == (1, G.num_ws, 32) and j.arrays["map"].shape == (64, 64, 3)
    assert j.result["final_loss"] is not None and np.abs(j.arrays["displacement"]).max() > 0
    notes = j.result["notes"]       # LPIPS with this machine's weights, or the reason it is off
    assert notes == [] or (len(notes) == 1 and notes[0].startswith("LPIPS unavailable")), notes
    bad = conn.submit("generate.fit_latent", {"model": "openhead", "checkpoint": str(cfg)},
                      {"map": np.zeros((128, 128, 3), np.float32)}).wait(60)
    assert bad.state == "error" and "64^2" in str(bad.error)


def test_transfer_hair_job_and_fit_latent_cli(conn, tmp_path):
    import subprocess
    import sys
    from headcraft_backend.generate import checkpoint as C
    from headcraft_backend.generate.sample import generate_maps, transfer_hair
    from headcraft_backend.layout import formats
    a = np.full((64, 64, 3), 0.5, np.float32)
    b = np.full((64, 64, 3), -0.5, np.float32)
    m = transfer_hair(a, b)
    assert (m[:, :32] == 0.5).all() and (m[:, 32:] == -0.5).all()
    j = conn.call("generate.transfer_hair", {"model": "openhead"}, {"face_map": a, "hair_map": b}, timeout=300)
    np.testing.assert_array_equal(j.arrays["map"], m)
    bad = conn.submit("generate.transfer_hair", {"model": "openhead"},
                      {"face_map": a, "hair_map": b[:32, :32]}).wait(60)
    assert bad.state == "error" and "different sizes" in str(bad.error)
    torch.manual_seed(9)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    _, cfg = C.save(G, tmp_path / "tiny")
    formats.write(generate_maps(G, [2])[0], tmp_path, "scan", "exr")
    r = subprocess.run([sys.executable, "-m", "headcraft_backend", "fit-latent", str(tmp_path / "scan.exr"), str(cfg),
                        "--steps", "20", "--out", str(tmp_path / "fl"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "fl" / "scan_ws.npy").shape == (1, G.num_ws, 32)
    assert "L1 only" in r.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (build.py bench --device cuda runs it)")
def test_cuda_sampling_and_latent_fit_match_the_cpu():
    from headcraft_backend.generate.fit_latent import LatentFitSettings, fit_latent
    from headcraft_backend.generate.sample import generate_maps, interpolate_maps
    torch.manual_seed(0)
    cpu = small().eval()
    gpu = small().eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    a, b = generate_maps(cpu, [3, 4], mix_seed=5), generate_maps(gpu, [3, 4], mix_seed=5)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-3)
    assert len(interpolate_maps(gpu, 1, 2, 4, space="z")) == 4
    res = fit_latent(gpu, a[0], None, LatentFitSettings(steps_z=5, steps_w=5, steps_noise=0), None)
    assert np.isfinite(res.map).all() and res.map.shape == a[0].shape
