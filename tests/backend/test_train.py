"""Generator training (issue 5): Lightning module, resume, logs and sample grids, two-process DDP;
issue 19: the paper's noise per half, 8 mapping layers, neutral-face substitution."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.networks import Generator, SynthesisNetwork
from headcraft_backend.generate.sample import synthesize
from headcraft_backend.generate.train import (PRESETS, MapFolder, TrainConfig, config_from_args, ema_decay,
                                              neutral_face, resumed_config, train, training_maps)
from headcraft_backend.layout import formats

TINY = dict(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32, batch=4,
            r1_every=2, pl_every=2, sample_every=2, checkpoint_every=2)
TINY_ARGS = ["--preset", "small", "--resolution", "16", "--z-dim", "32", "--w-dim", "32", "--mapping-layers", "2",
             "--channel-base", "256", "--channel-max", "32", "--workers", "0", "--accelerator", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Six 32^2 maps (trained at 16^2, so they are resized): npy, EXR and a 16-bit PNG triplet."""
    d = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    for i in range(6):
        m = (rng.normal(size=(32, 32, 3)) * 0.2).astype(np.float32)
        formats.write(m, d, f"m{i}", ("npy", "exr", "png16")[i % 3])
    return d


def state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_dataset_packs_and_resizes(maps):
    ds = MapFolder(maps, 16)
    assert len(ds) == 6
    x = ds[0]
    assert x.shape == (6, 16, 16) and torch.isfinite(x).all()
    m = formats.read(ds.files[0])
    # channels 0-2 hold the face half (left), 3-5 the scalp half, each stretched to full width
    assert abs(float(x[:3].mean()) - float(m[:, :16].mean())) < 1e-5
    assert abs(float(x[3:].mean()) - float(m[:, 16:].mean())) < 1e-5


def test_train_logs_samples_resumes_and_loads(maps, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = TrainConfig(**TINY, iterations=3)
    assert cfg.noise == "paper"
    modes = []
    forward = SynthesisNetwork.forward
    monkeypatch.setattr(SynthesisNetwork, "forward", lambda self, ws, noise_mode="random":
                        modes.append(noise_mode) or forward(self, ws, noise_mode))
    summary = train(maps, run, cfg, accelerator="cpu", devices=1, workers=0, progress=False)
    # the paper's noise: every synthesis pass (G and D steps, path length, grids) is noise-free or constant
    assert set(modes) == {"none", "const"} and modes.count("none") == modes.count("const")
    assert summary["iterations"] == 3 and summary["maps"] == 6
    first = state(run / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 6                       # one G and one D step per iteration
    assert int(first["state_dict"]["ema_updates"]) == 3
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["iter_0000002.png", "iter_0000003.png"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = events.Tags()
    assert {"loss/g", "loss/d", "reg/r1", "reg/path_length", "score/real"} <= set(tags["scalars"])
    assert "samples" in tags["images"]
    assert json.loads((run / "ranks.json").read_text())["in_sync"] is True

    # The run's generator is the EMA one, in our format and straight from the Lightning checkpoint.
    G, meta = checkpoint.load(run / "generator.json")
    assert meta["training"]["iterations"] == 3
    G_ckpt, info = checkpoint.load(run / "checkpoints" / "last.ckpt")
    assert info["ema"] == "G_ema"
    for name, t in G.state_dict().items():
        assert torch.equal(t, first["state_dict"]["G_ema." + name]), name
        assert torch.equal(t, G_ckpt.state_dict()[name]), name
    assert not torch.equal(first["state_dict"]["G_ema.mapping.layers.0.weight"],
                           first["state_dict"]["G.mapping.layers.0.weight"])

    with pytest.raises(ValueError, match="--resume"):
        train(maps, run, cfg, accelerator="cpu", devices=1, workers=0, progress=False)
    # A resumed run keeps its own settings (here: 2 mapping layers, paper noise), whatever the call says.
    other = TrainConfig(**{**TINY, "mapping_layers": 3}, iterations=5, noise="random")
    summary = train(maps, run, other, accelerator="cpu", devices=1, workers=0, progress=False, resume=True)
    assert summary["config"]["mapping_layers"] == 2 and summary["config"]["noise"] == "paper"
    second = state(run / "checkpoints" / "last.ckpt")
    assert summary["iterations"] == 5 and second["global_step"] == 10
    assert int(second["state_dict"]["ema_updates"]) == 5    # continued, not restarted
    assert not torch.equal(second["state_dict"]["G.mapping.layers.0.weight"],
                           first["state_dict"]["G.mapping.layers.0.weight"])


def test_ema_follows_torch_ema():
    """torch_ema 0.3: decay = min(decay, (1 + n) / (10 + n)) with n counted after the increment."""
    assert ema_decay(0.995, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.995, 10_000) == 0.995


def test_bad_data_is_refused_clearly(tmp_path, maps):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no maps"):
        train(empty, tmp_path / "r1", TrainConfig(**TINY, iterations=1), accelerator="cpu", workers=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    m = np.zeros((16, 16, 3), np.float32)
    m[3, 4] = np.nan
    np.save(bad / "nan.npy", m)
    with pytest.raises(ValueError, match="NaN"):
        train(bad, tmp_path / "r2", TrainConfig(**TINY, iterations=1), accelerator="cpu", workers=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        train(maps, tmp_path / "r3", TrainConfig(**{**TINY, "batch": 6}, iterations=1), accelerator="cpu")
    assert not (tmp_path / "r2" / "checkpoints").exists()


class _MakesFolder:
    """Pickles as os.mkdir(path): what a hostile checkpoint could run if it were unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_resume_reads_the_checkpoint_weights_only(maps, tmp_path, monkeypatch):
    """Issue 18: resuming passes weights_only=True itself, so even torch's opt-out variable (which
    only changes calls that leave it unset) cannot make a checkpoint run code."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "epoch": 0, "evil": _MakesFolder(marker)},
               tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="refused to resume"):
        train(maps, tmp_path / "run", TrainConfig(**TINY, iterations=1), accelerator="cpu", devices=1, workers=0,
              progress=False, resume=True)
    assert not marker.exists()


def test_cli_trains_with_ddp_on_two_cpu_processes(maps, tmp_path):
    """strategy=ddp over gloo: the two processes draw different latents and see different maps,
    and the gradient all-reduce keeps G, D and the EMA generator bit-identical."""
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "MASTER_", "WORLD_SIZE"))}
    res = subprocess.run([sys.executable, "-m", "headcraft_backend", "train", str(maps), "--out", str(run),
                          *TINY_ARGS, "--batch", "2", "--iterations", "4", "--r1-every", "2", "--pl-every", "2",
                          "--devices", "2", "--strategy", "ddp"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((run / "ranks.json").read_text())
    assert report == {"world_size": 2, "in_sync": True, "max_difference": 0.0, "iterations": 4}
    assert "2 process(es)" in res.stdout
    G, _ = checkpoint.load(run / "generator.json")
    assert G.img_resolution == 16


def _noisy(G):
    """Noise strengths are 0 at initialisation; make the noise visible."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


def test_training_noise_per_half():
    """Issue 19: paper noise = face (channels 0-2) without noise, scalp (3-5) with the constant
    noise, exactly what sampling makes, with gradients; random = fresh noise everywhere."""
    torch.manual_seed(0)
    G = _noisy(Generator(32, 32, 2, 16, 6, 256, 32))
    ws = G.mapping(torch.randn(4, 32)).detach().requires_grad_(True)
    a, b = training_maps(ws, G, "paper"), training_maps(ws, G, "paper")
    assert torch.equal(a, b)                                          # neither half draws noise
    assert torch.equal(a[:, :3], G.synthesis(ws, "none")[:, :3])
    assert torch.equal(a[:, 3:], G.synthesis(ws, "const")[:, 3:])
    assert not torch.allclose(a[:, 3:], G.synthesis(ws, "none")[:, 3:])   # the scalp has the constant noise
    assert torch.allclose(a, synthesize(G, ws), atol=1e-6)              # = sampling's two passes
    (grad,) = torch.autograd.grad(a.square().sum(), ws)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    r1, r2 = training_maps(ws, G, "random"), training_maps(ws, G, "random")
    assert not torch.allclose(r1[:, :3], r2[:, :3]) and not torch.allclose(r1[:, 3:], r2[:, 3:])
    with pytest.raises(ValueError, match="noise 'const'"):
        train("unused", "unused", TrainConfig(**TINY, noise="const"))


def test_paper_preset_has_8_mapping_layers_and_the_published_layout_stays_trainable():
    """Issue 19: new paper-preset runs have the paper's 8 mapping layers (small keeps 2); with
    --mapping-layers 4 the generator is the published checkpoint's layout, name by name."""
    assert TrainConfig().mapping_layers == 8 and PRESETS["paper"].mapping_layers == 8
    assert PRESETS["small"].mapping_layers == 2
    assert config_from_args("paper", {}).noise == "paper"
    published = config_from_args("paper", {"mapping_layers": 4}).generator().state_dict()
    reference = Generator().state_dict()           # the published layout (tests/backend/test_generate.py)
    assert [(k, v.shape) for k, v in published.items()] == [(k, v.shape) for k, v in reference.items()]


def test_resumed_config_keeps_the_runs_settings():
    given = TrainConfig(**TINY, iterations=50)
    old = {k: v for k, v in vars(TrainConfig(**{**TINY, "mapping_layers": 4}, iterations=10)).items() if k != "noise"}
    c = resumed_config(old, given)
    assert c.mapping_layers == 4 and c.iterations == 50
    assert c.noise == "random"          # a run saved before the setting existed trained with random noise
    assert resumed_config({**old, "noise": "paper"}, given).noise == "paper"


@pytest.fixture
def people(tmp_path):
    """Maps of four people: a (neutral a0), b (neutral b0, 16-bit PNGs), c (no neutral map) and
    one map no entry lists."""
    rng = np.random.default_rng(1)
    maps = {}
    for name, fmt in [("a0", "npy"), ("a1", "npy"), ("a2", "exr"), ("b0", "png16"), ("b1", "png16"),
                      ("c0", "npy"), ("c1", "npy"), ("d0", "npy")]:
        formats.write((rng.normal(size=(16, 16, 3)) * 0.5).astype(np.float32), tmp_path, name, fmt)
    entries = {"a0": {"identity": "a", "neutral": True}, "a1": {"identity": "a"},
               "a2": {"identity": "a", "neutral": False}, "b0": {"identity": "b", "neutral": True},
               "b1": {"identity": "b"}, "c0": {"identity": "c"}, "c1": {"identity": "c"},
               "x9": {"identity": "x", "neutral": True}}           # a map not in the folder
    (tmp_path / "identities.json").write_text(json.dumps({"maps": entries}))
    return tmp_path


def test_neutral_faces_replace_the_face_half(people):
    """Issue 19 (supp. A.2): every map of a person with a neutral map gets its face half (left);
    scalp halves, the neutral maps, people without one and unlisted maps are unchanged."""
    ds = MapFolder(people, 16)
    raw = MapFolder(people, 16, neutral=False)
    names = [f.name.split("_-20")[0].split(".")[0] for f in ds.files]
    assert names == ["a0", "a1", "a2", "b0", "b1", "c0", "c1", "d0"]
    got = {n: ds.map(i) for i, n in enumerate(names)}
    own = {n: raw.map(i) for i, n in enumerate(names)}
    for n, neutral in [("a1", "a0"), ("a2", "a0"), ("b1", "b0")]:
        assert np.array_equal(got[n][:, :8], own[neutral][:, :8]), n       # face from the neutral map
        assert np.array_equal(got[n][:, 8:], own[n][:, 8:]), n             # own scalp
        assert not np.array_equal(got[n], own[n])
    for n in ("a0", "b0", "c0", "c1", "d0"):
        assert np.array_equal(got[n], own[n]), n
    # training sees the substituted map: channels 0-2 hold the face half
    i = names.index("a1")
    assert torch.allclose(ds[i][:3], torch.from_numpy(np.repeat(own["a0"][:, :8], 2, 1).transpose(2, 0, 1)))
    assert np.array_equal(neutral_face(own["c0"], own["a0"])[:, 8:], own["c0"][:, 8:])


def test_without_identities_maps_train_as_they_are(maps, people):
    assert MapFolder(maps, 16).neutral == {}
    (people / "identities.json").write_text(json.dumps({"maps": {"a0": {"identity": "a", "neutral": True},
                                                                 "a1": {"identity": "a", "neutral": True}}}))
    with pytest.raises(ValueError, match="two neutral maps"):
        MapFolder(people, 16)
    (people / "identities.json").write_text(json.dumps({"maps": {"a0": "a"}}))
    with pytest.raises(ValueError, match="identities.json: not a readable identities file"):
        MapFolder(people, 16)
    (people / "identities.json").write_text(json.dumps({"maps": {"a0": {"identity": "a", "neutral": True},
                                                                 "a1": {"identity": "a"}}}))
    formats.write(np.zeros((32, 32, 3), np.float32), people, "a0", "npy")     # another size
    with pytest.raises(ValueError, match="one size"):
        MapFolder(people, 16)[1]
