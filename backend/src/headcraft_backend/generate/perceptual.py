"""LPIPS (Zhang et al. 2018, v0.1 with AlexNet) for latent fitting, without torchvision.

The network is LPIPS's: scaled input -> AlexNet's five ReLU stages -> unit-normalised features
-> squared differences weighted per channel by the linear heads -> spatial mean, summed.
Its weights come from two files that users already have or can drop in place:
- the linear heads from the `lpips` package (BSD-2-Clause, `lpips/weights/v0.1/alex.pth`);
  it is located, never imported (its torchvision import needs a matching torch build);
- AlexNet's ImageNet weights from torch's hub cache (`<hub>/checkpoints/alexnet-owt-*.pth`,
  the file torchvision downloads), loaded weights-only. Nothing is downloaded here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's AlexNet feature stack: (index in `features`, in, out, kernel, stride, padding).
CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
         (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))
POOL_BEFORE = (False, True, True, False, False)      # 3x3/2 max-pool before convs 2 and 3
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
HUB_PATTERN = "alexnet-owt-*.pth"


class LPIPS(nn.Module):
    """Distance (N,) between two batches (N,3,H,W) of images in [-1, 1]; frozen weights."""

    shift: torch.Tensor   # buffers
    scale: torch.Tensor

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for _, i, o, k, s, p in CONVS)
        self.lins = nn.ParameterList(nn.Parameter(torch.zeros(1, o, 1, 1)) for _, _, o, *_ in CONVS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def load(self, alexnet: dict, heads: dict) -> "LPIPS":
        """Weights by their published names: torchvision's `features.{i}.weight/bias` and the
        lpips package's `lin{k}.model.1.weight`; a missing or misshapen one raises ValueError."""
        with torch.no_grad():
            for k, (idx, *_) in enumerate(CONVS):
                for part in ("weight", "bias"):
                    _copy(getattr(self.convs[k], part), alexnet, f"features.{idx}.{part}")
                _copy(self.lins[k], heads, f"lin{k}.model.1.weight")
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for conv, pool in zip(self.convs, POOL_BEFORE):
            h = F.relu(conv(F.max_pool2d(h, 3, 2) if pool else h))
            out.append(h)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d: torch.Tensor | int = 0
        for fa, fb, lin in zip(self.features(a), self.features(b), self.lins):
            diff = (_unit(fa) - _unit(fb)).square()
            d = d + (diff * lin).sum(1).mean(dim=(1, 2))
        assert isinstance(d, torch.Tensor)   # CONVS is not empty
        return d


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)


def _copy(dst: torch.Tensor, sd: dict, name: str) -> None:
    if name not in sd:
        raise ValueError(f"{name} is missing")
    if tuple(sd[name].shape) != tuple(dst.shape):
        raise ValueError(f"{name} is {tuple(sd[name].shape)}, expected {tuple(dst.shape)}")
    dst.copy_(sd[name])


def heads_file() -> Path | None:
    """The lpips package's v0.1 AlexNet heads, found without importing the package."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def alexnet_file(hub: Path) -> Path | None:
    hits = sorted(hub.glob(HUB_PATTERN))
    return hits[-1] if hits else None


def load_lpips() -> tuple[LPIPS | None, str]:
    """(network, "") when both weight files are on this machine, else (None, what is missing
    and how to get it)."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    heads, alex = heads_file(), alexnet_file(hub)
    if heads is None:
        return None, "LPIPS unavailable: the `lpips` package is not installed (pip install lpips); L1 only"
    if alex is None:
        return None, (f"LPIPS unavailable: AlexNet weights not found in {hub} (torchvision's "
                      f"alexnet-owt-7be5be79.pth; copy it there or set TORCH_HOME); L1 only")
    try:
        load = lambda p: torch.load(p, map_location="cpu", weights_only=True)    # noqa: E731
        return LPIPS().load(load(alex), load(heads)).eval(), ""
    except Exception as exc:        # unreadable or foreign files: say which, fit with L1
        return None, f"LPIPS unavailable: could not load {alex.name} / {heads.name} ({exc}); L1 only"
