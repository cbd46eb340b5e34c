"""Training the displacement-map StyleGAN2 with Lightning (paper sec. 3.2, REFERENCE 4).

Non-saturating logistic loss; lazy R1 on real maps every 16 iterations and path-length
regularisation every 4 (each scaled by its interval and added to that iteration's step); style
mixing with p = 0.9; an EMA of G (torch_ema's warm-up: decay = min(0.995, (1 + n) / (10 + n)));
no augmentation. One iteration is one G step and one D step, so Lightning's `global_step` (which
counts optimizer steps) is twice the iteration count.

As the paper trains by default (supp. A.2): the generator's maps (for D and for the path-length
term) have their face channels from a pass without noise and their scalp channels from a pass
with the constant per-layer noise, as sampling makes them (`noise="paper"`; `"random"` is
StyleGAN2's fresh noise everywhere in one pass); 8 mapping layers in the `paper` preset; and where
the map folder says which maps show one person and which is that person's neutral expression
(`identities.json`), every map of the person gets the neutral map's face half. A resumed run keeps
the settings it was started with.

Checkpoints hold `G.`, `D.` and `G_ema.` tensors; `checkpoint.load` reads them directly (the EMA
generator). Lightning is imported only here: the service and sampling never pay for it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..layout import formats
from . import checkpoint
from .networks import Discriminator, Generator
from .pca import map_files
from .sample import pack, synthesize, unpack

NOISE = ("paper", "random")     # training noise: face none + scalp const (two passes), or random everywhere
IDENTITIES = "identities.json"  # optional, in a map folder: which maps show one person, which is neutral
SCHEDULE = ("iterations", "sample_every", "checkpoint_every")   # what a resumed run takes from the call
# What a run saved before a setting existed trained with (its resume keeps it).
LEGACY = {"noise": "random"}


@dataclass
class TrainConfig:
    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8        # the paper's; the published checkpoint has 4 (it loads by its shapes)
    channel_base: int = 16384
    channel_max: int = 512
    batch: int = 8                 # per process
    lr_g: float = 2e-3
    lr_d: float = 1e-3
    r1_gamma: float = 4.0
    r1_every: int = 16
    pl_weight: float = 2.0
    pl_every: int = 4
    style_mixing: float = 0.9
    ema_decay: float = 0.995
    iterations: int = 72_000
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 2000
    noise: str = "paper"           # see NOISE

    def generator(self) -> Generator:
        return Generator(self.z_dim, self.w_dim, self.mapping_layers, self.resolution, 6,
                         self.channel_base, self.channel_max)

    def discriminator(self) -> Discriminator:
        return Discriminator(self.resolution, 6, self.channel_base, self.channel_max)


# The paper's configuration; one a 2-core CPU trains in minutes to hours (its 2-layer mapping
# kept: the first demo generator's set-up); and the bundled model's next one (issue 20): 128^2
# and the paper's 8 mapping layers in 8.7 MB, ~1.8 s per iteration on 2 CPU cores.
PRESETS = {
    "paper": TrainConfig(),
    "small": TrainConfig(resolution=64, z_dim=128, w_dim=128, mapping_layers=2, channel_base=2048,
                         channel_max=128, batch=8, sample_every=100, checkpoint_every=500, iterations=5000),
    "demo": TrainConfig(resolution=128, z_dim=256, w_dim=256, mapping_layers=8, channel_base=4096,
                        channel_max=128, batch=8, sample_every=500, checkpoint_every=500, iterations=20_000),
}


def check_config(c: TrainConfig) -> None:
    if c.resolution < 8 or c.resolution & (c.resolution - 1):
        raise ValueError(f"resolution {c.resolution}: a power of two, at least 8")
    if c.batch < 1 or (c.batch > 4 and c.batch % 4):
        raise ValueError(f"batch {c.batch}: up to 4, or a multiple of 4 (the discriminator's "
                         "minibatch-std groups)")
    for name in ("r1_every", "pl_every", "iterations", "sample_every", "checkpoint_every", "mapping_layers"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    if c.noise not in NOISE:
        raise ValueError(f"noise {c.noise!r}: choose one of {', '.join(NOISE)}")


def resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The config a resumed run trains with: the one it was started with (`saved`, its checkpoint's
    hyper-parameters; settings added since take the value such runs trained with, LEGACY), except
    the schedule (SCHEDULE), which comes from this call."""
    names = {f.name for f in fields(TrainConfig)}
    values = {**asdict(given), **LEGACY, **{k: v for k, v in saved.items() if k in names}}
    values.update({k: getattr(given, k) for k in SCHEDULE})
    return TrainConfig(**values)


def _saved_config(last: Path) -> dict:
    """The config in a run's last checkpoint (read weights-only, memory-mapped)."""
    try:
        raw = torch.load(str(last), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{last}: refused to resume from it, it holds more than weights and training "
                         f"state ({str(exc).splitlines()[0][:200]})") from None
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{last}: cannot read it to resume ({str(exc).splitlines()[0][:200]})") from None
    config = raw.get("hyper_parameters", {}).get("config") if isinstance(raw, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{last}: not a checkpoint of `headcraft-backend train` (no training config in it)")
    return config


def training_maps(ws: torch.Tensor, G: Generator, noise: str) -> torch.Tensor:
    """G's (N, 6, R, R) maps during training, with gradients. "paper": channels 0-2 (face) from a
    pass without noise, 3-5 (scalp) from a pass with the constant noise, as `sample.synthesize`
    makes them (two passes: the noise enters every layer's features, which feed all six output
    channels, so no one pass gives both); "random": one pass with fresh noise in every layer."""
    if noise == "random":
        return G.synthesis(ws, "random")
    face = G.synthesis(ws, "none")
    scalp = G.synthesis(ws, "const")
    return torch.cat([face[:, :3], scalp[:, 3:]], 1)


def map_name(path: Path) -> str:
    """A map file's name in a folder: the stem (`x.exr`, `x.npy`, `x_-20_to_20_ch0.png` -> `x`)."""
    return path.name.split("_-20_to_20")[0] if path.name.endswith(".png") else path.stem


def neutral_sources(folder: str | Path, files: list[Path]) -> dict[Path, Path]:
    """Map file -> the map file of its person's neutral expression, from the folder's
    identities.json ({"maps": {"<map name>": {"identity": "<person>", "neutral": true|false}}});
    {} without one. Maps it does not list, persons without a neutral map present and the neutral
    maps themselves are left out (they train as they are)."""
    path = Path(folder) / IDENTITIES
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["maps"]
        if not isinstance(entries, dict):
            raise TypeError("'maps' must be an object of map names")
        people = {}
        for name, e in entries.items():
            if not isinstance(e, dict) or not isinstance(e.get("identity"), str) \
                    or not isinstance(e.get("neutral", False), bool):
                raise TypeError(f"{name!r}: an entry is {{\"identity\": \"<person>\", \"neutral\": true or false}}")
            people[name] = (e["identity"], e.get("neutral", False))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable identities file ({exc}); fix or remove it") from None
    by_name = {map_name(f): f for f in files}
    neutral: dict[str, Path] = {}
    for name, (person, is_neutral) in sorted(people.items()):
        if is_neutral and name in by_name:
            if person in neutral:
                raise ValueError(f"{path}: {person!r} has two neutral maps ({map_name(neutral[person])!r} "
                                 f"and {name!r}); mark one")
            neutral[person] = by_name[name]
    return {f: neutral[people[n][0]] for n, f in by_name.items()
            if n in people and people[n][0] in neutral and neutral[people[n][0]] != f}


def neutral_face(m: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """The map with its face half (the left half: the generator's channels 0-2) from `neutral`."""
    if m.shape != neutral.shape:
        raise ValueError(f"a map of {m.shape} and its neutral map of {neutral.shape}: they must be one size")
    out = np.array(m, np.float32)
    half = out.shape[1] // 2
    out[:, :half] = neutral[:, :half]
    return out


def read_map(path: Path) -> np.ndarray:
    m = formats.read(path)
    if m.ndim != 3 or m.shape[2] != 3 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{path}: a square 3-channel map is needed, not {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: the map has NaN or infinite texels")
    return m


class MapFolder(Dataset):
    """Baked maps of a folder (EXR, .npy or 16-bit PNG triplets) as packed (6, R, R) tensors in
    HeadCraft units, resized to the generator's resolution when they differ; with an
    identities.json, each person's maps carry the face half of their neutral map
    (`neutral_sources`; `neutral=False` reads the maps as they are)."""

    def __init__(self, folder: str | Path, resolution: int, neutral: bool = True):
        self.files = map_files(folder)
        if not self.files:
            raise ValueError(f"{folder}: no maps (.exr, .npy or *_-20_to_20_ch0.png triplets)")
        self.resolution = resolution
        self.neutral = neutral_sources(folder, self.files) if neutral else {}

    def __len__(self) -> int:
        return len(self.files)

    def map(self, i: int) -> np.ndarray:
        """Map i as training sees it, (H, W, 3) before packing and resizing."""
        path = self.files[i]
        m = read_map(path)
        if path in self.neutral:
            try:
                m = neutral_face(m, read_map(self.neutral[path]))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return m

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(pack(self.map(i)).transpose(2, 0, 1).copy())
        r = self.resolution
        if x.shape[-1] != r:
            mode = "area" if x.shape[-1] > r else "bilinear"
            x = F.interpolate(x[None], size=(r, r), mode=mode,
                              **({} if mode == "area" else {"align_corners": False}))[0]
        return x


def _style_mix(G: Generator, z: torch.Tensor, p: float) -> torch.Tensor:
    """W+ from z; with probability p the styles from a random layer on come from a second z."""
    ws = G.mapping(z)
    if p > 0 and torch.rand([]).item() < p:
        cut = int(torch.randint(1, G.num_ws, []).item())
        ws2 = G.mapping(torch.randn_like(z), update_w_avg=False)
        ws = torch.cat([ws[:, :cut], ws2[:, cut:]], 1)
    return ws


def ema_decay(target: float, updates: int) -> float:
    """torch_ema's warm-up, with `updates` counted after the increment."""
    return min(target, (1 + updates) / (10 + updates))


def map_grid(maps: list[np.ndarray], scale: float, columns: int = 4) -> np.ndarray:
    """(H, W, 3) maps in a grid of 8-bit colours: 0 grey, +-scale saturated."""
    h, w, _ = maps[0].shape
    rows = math.ceil(len(maps) / columns)
    grid = np.full((rows * h, columns * w, 3), 128, np.uint8)
    for i, m in enumerate(maps):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = np.clip(np.round((m / scale * 0.5 + 0.5) * 255), 0, 255)
    return grid


def _lightning():
    try:
        import lightning
    except ImportError:
        raise RuntimeError("training needs Lightning: pip install 'headcraft-backend[train]'") from None
    return lightning


def build_module(config: TrainConfig, data: str = "", grid_scale: float = 1.0):
    _lightning()                    # says how to install Lightning when it is missing
    from lightning import LightningModule

    class StyleGAN2(LightningModule):
        """G, D and the EMA generator; manual optimisation, one G and one D step per batch."""

        pl_mean: torch.Tensor       # buffers
        ema_updates: torch.Tensor

        def __init__(self, config: dict, data: str = "", grid_scale: float = 1.0):
            super().__init__()
            self.save_hyperparameters()
            self.cfg = TrainConfig(**config)
            self.G = self.cfg.generator()
            self.D = self.cfg.discriminator()
            self.G_ema = self.cfg.generator().requires_grad_(False)
            self.G_ema.load_state_dict(self.G.state_dict())
            self.register_buffer("pl_mean", torch.zeros([]))
            self.register_buffer("ema_updates", torch.zeros([], dtype=torch.long))
            self.automatic_optimization = False
            self.grid_scale = grid_scale
            self.grid_z = torch.randn(8, self.cfg.z_dim, generator=torch.Generator().manual_seed(self.cfg.seed))

        @property
        def iteration(self) -> int:
            return self.global_step // 2

        def configure_optimizers(self):
            c = self.cfg
            return (torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=c.lr_g, betas=(0.0, 0.99), eps=1e-8),
                    torch.optim.Adam(self.D.parameters(), lr=c.lr_d, betas=(0.0, 0.99), eps=1e-8))

        def on_train_start(self):
            # Every process draws its own latents; DDP keeps the weights equal.
            torch.manual_seed(self.cfg.seed * 1009 + self.global_rank * 7919 + self.global_step)

        def _path_length(self, n: int) -> torch.Tensor:
            z = torch.randn(max(1, n // 2), self.cfg.z_dim, device=self.device)
            ws = _style_mix(self.G, z, self.cfg.style_mixing)
            img = training_maps(ws, self.G, self.cfg.noise)
            noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            mean = self.pl_mean.lerp(lengths.mean().detach(), 0.01)
            self.pl_mean.copy_(mean)
            return (lengths - mean).square().mean() + img[:, 0, 0, 0].mean() * 0

        def training_step(self, real, batch_idx):
            c, it, n = self.cfg, self.iteration, real.shape[0]
            opt_g, opt_d = self.optimizers()
            logs = {}

            self.toggle_optimizer(opt_g)
            z = torch.randn(n, c.z_dim, device=self.device)
            fake = training_maps(_style_mix(self.G, z, c.style_mixing), self.G, c.noise)
            loss_g = F.softplus(-self.D(fake)).mean()
            logs["loss/g"] = loss_g.detach()
            if c.pl_weight > 0 and it % c.pl_every == 0:
                pl = self._path_length(n)
                logs["reg/path_length"] = pl.detach()
                loss_g = loss_g + pl * c.pl_weight * c.pl_every
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
            self.untoggle_optimizer(opt_g)

            self.toggle_optimizer(opt_d)
            with torch.no_grad():
                z = torch.randn(n, c.z_dim, device=self.device)
                fake = training_maps(_style_mix(self.G, z, c.style_mixing), self.G, c.noise)
            do_r1 = c.r1_gamma > 0 and it % c.r1_every == 0
            real = real.detach().requires_grad_(do_r1)
            d_real, d_fake = self.D(real), self.D(fake)
            loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
            logs.update({"loss/d": loss_d.detach(), "score/real": d_real.mean().detach(),
                         "score/fake": d_fake.mean().detach()})
            if do_r1:
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                r1 = grad.square().sum([1, 2, 3]).mean()
                logs["reg/r1"] = r1.detach()
                loss_d = loss_d + r1 * (c.r1_gamma / 2) * c.r1_every
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
            self.untoggle_optimizer(opt_d)

            self._update_ema()
            self.log_dict(logs, prog_bar=False, on_step=True, batch_size=n)
            self.log("loss_g", logs["loss/g"], prog_bar=True, logger=False, batch_size=n)
            self.log("loss_d", logs["loss/d"], prog_bar=True, logger=False, batch_size=n)

        @torch.no_grad()
        def _update_ema(self):
            self.ema_updates += 1
            beta = ema_decay(self.cfg.ema_decay, int(self.ema_updates))
            for e, p in zip(self.G_ema.parameters(), self.G.parameters()):
                e.lerp_(p, 1.0 - beta)
            for e, b in zip(self.G_ema.buffers(), self.G.buffers()):
                e.copy_(b)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            it = self.iteration
            if self.global_rank == 0 and (it % self.cfg.sample_every == 0 or it == self.cfg.iterations):
                self.write_grid(it)

        @torch.no_grad()
        def write_grid(self, it: int) -> Path:
            G = self.G_ema.eval()
            ws = G.mapping(self.grid_z.to(self.device))
            # as sampling makes them (paper), or the constant noise everywhere (random)
            six = synthesize(G, ws, "const") if self.cfg.noise == "paper" else G.synthesis(ws, "const")
            grid = map_grid([unpack(s) for s in six], self.grid_scale)
            out = Path(self.trainer.default_root_dir) / "samples" / f"iter_{it:07d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image
            Image.fromarray(grid).save(out)
            experiment = getattr(self.logger, "experiment", None)   # TensorBoard's writer (None: no logger)
            if experiment is not None and hasattr(experiment, "add_image"):
                experiment.add_image("samples", grid, it, dataformats="HWC")
            return out

        def on_train_end(self):
            """Save the final state (every process takes part), then reduce every process's weights
            to a digest; process 0 records whether they agree."""
            self.trainer.save_checkpoint(Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt",
                                         weights_only=False)
            with torch.no_grad():
                digest = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                                      for m in (self.G, self.D, self.G_ema) for p in m.parameters()]).flatten()
            gathered = self.all_gather(digest)
            if self.global_rank != 0:
                return
            gathered = gathered.reshape(-1, digest.numel())
            spread = float((gathered - gathered[0]).abs().max())
            report = {"world_size": int(gathered.shape[0]), "in_sync": spread == 0.0, "max_difference": spread,
                      "iterations": self.iteration}
            Path(self.trainer.default_root_dir, "ranks.json").write_text(json.dumps(report, indent=2))
            if spread:
                print(f"warning: the {gathered.shape[0]} processes' weights differ (by up to {spread:g})", flush=True)

    return StyleGAN2(asdict(config), data, grid_scale)


def estimate_scale(ds: MapFolder, count: int = 16) -> float:
    """A colour scale for sample grids: the 99th percentile of |displacement| in the first maps."""
    vals = np.concatenate([np.abs(ds[i].numpy()).ravel() for i in range(min(count, len(ds)))])
    return float(max(np.percentile(vals, 99), 1e-3))


def train(data: str | Path, out: str | Path, config: TrainConfig, *, devices: int | str = 1,
          num_nodes: int = 1, accelerator: str = "auto", strategy: str = "auto", precision: str = "32-true",
          workers: int = 2, resume: bool = False, progress: bool = True) -> dict:
    """Train on a folder of maps; checkpoints, TensorBoard logs and sample grids go to `out`.
    Returns a summary (and, on process 0, writes the EMA generator as `out/generator.*`)."""
    check_config(config)
    L = _lightning()
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise ValueError(f"{last}: nothing to resume")
    if not resume and last.is_file():
        raise ValueError(f"{out} holds a run already: pass --resume to continue it, or choose another --out")
    if resume:
        given, config = config, resumed_config(_saved_config(last), config)
        kept = [f"{k} {getattr(config, k)} (not {getattr(given, k)})" for k in asdict(config)
                if getattr(config, k) != getattr(given, k)]
        if kept:
            print(f"resuming with the run's own settings: {', '.join(kept)}", flush=True)
        check_config(config)
    ds = MapFolder(data, config.resolution)
    module = build_module(config, str(Path(data).resolve()), estimate_scale(ds))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)   # tips and device banners
    warnings.filterwarnings("ignore", ".*(LeafSpec|does not have many workers|smaller than the logging|exists and is not empty|all_gather is deprecated|pre-optimization state).*")
    loader = torch.utils.data.DataLoader(ds, batch_size=config.batch, shuffle=True, drop_last=len(ds) >= config.batch,
                                         num_workers=workers, persistent_workers=workers > 0)
    trainer_strategy: str | DDPStrategy = strategy
    if strategy == "ddp":
        trainer_strategy = DDPStrategy(find_unused_parameters=True)   # G's step leaves D's gradients unused
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="{epoch}-{step}", save_last=True, save_top_k=-1,
                           every_n_train_steps=2 * config.checkpoint_every)
    trainer = L.Trainer(default_root_dir=str(out), max_steps=2 * config.iterations, max_epochs=-1,
                        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=trainer_strategy,
                        precision=precision, callbacks=[ckpt], enable_progress_bar=progress,
                        logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
                        log_every_n_steps=1 if config.iterations < 100 else 10, enable_model_summary=False,
                        num_sanity_val_steps=0)
    if trainer.is_global_zero:
        n_params = sum(p.numel() for p in module.G.parameters())
        print(f"training a {config.resolution}^2 generator ({n_params / 1e6:.2f} M parameters) on {len(ds)} maps "
              f"for {config.iterations} iterations, {trainer.world_size} process(es) of batch {config.batch}, "
              f"noise {config.noise}", flush=True)
        if ds.neutral:
            print(f"{len(ds.neutral)} map(s) take the face half of their person's neutral map ({IDENTITIES})",
                  flush=True)
    t0 = time.time()
    try:    # a checkpoint is read with torch's weights-only unpickler, whatever torch's default
        trainer.fit(module, loader, ckpt_path=str(last) if resume else None, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{last}: refused to resume from it, it holds more than weights and training "
                         f"state ({str(exc).splitlines()[0][:200]})") from None
    summary = {"iterations": module.iteration, "maps": len(ds), "data": portable_path(data),
               "seconds": round(time.time() - t0, 1), "world_size": trainer.world_size,
               "device": _device_name(module.device), "config": asdict(config)}
    if trainer.is_global_zero:
        summary["generator"] = str(checkpoint.save(module.G_ema.cpu(), out / "generator",
                                                   extra={"training": summary})[1])
    return summary


def portable_path(path: str | Path) -> str:
    """A path fit for files that travel to other machines (the generator's .json): relative to
    the working folder when inside it (the project root for `build.py demo-model`), else only the
    folder's name; never the absolute path of the machine that trained."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical cores)"


def config_from_args(preset: str, overrides: dict) -> TrainConfig:
    base = asdict(PRESETS[preset])
    names = {f.name for f in fields(TrainConfig)}
    base.update({k: v for k, v in overrides.items() if k in names and v is not None})
    return TrainConfig(**base)
