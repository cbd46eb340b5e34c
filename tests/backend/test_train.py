"""Generator training (issue 5): Lightning module, resume, logs and sample grids, two-process DDP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from headcraft_backend.generate import checkpoint
from headcraft_backend.generate.train import MapFolder, TrainConfig, ema_decay, train
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


def test_train_logs_samples_resumes_and_loads(maps, tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(**TINY, iterations=3)
    summary = train(maps, run, cfg, accelerator="cpu", devices=1, workers=0, progress=False)
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
    summary = train(maps, run, TrainConfig(**TINY, iterations=5), accelerator="cpu", devices=1, workers=0,
                    progress=False, resume=True)
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
