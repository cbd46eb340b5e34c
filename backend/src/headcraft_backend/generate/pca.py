"""The paper's PCA baseline: a linear model of displacement maps, sampled and interpolated
like the StyleGAN (seeds, truncation, interpolation between seeds).

A map is mean + sum_i c_i sigma_i u_i with c ~ N(0, 1); psi scales the coefficients (psi = 0 is
the mean map, 1 the fitted spread), the counterpart of truncation in W.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..cache import write_atomic
from ..layout import formats

FORMAT = "headcraft-pca"


def map_files(folder: str | Path) -> list[Path]:
    """Baked maps in a folder: .exr, .npy, and one entry per 16-bit PNG triplet."""
    folder = Path(folder)
    files = sorted([*folder.glob("*.exr"), *folder.glob("*.npy"), *folder.glob("*_-20_to_20_ch0.png")])
    return files


def read_maps(folder: str | Path) -> np.ndarray:
    files = map_files(folder)
    if not files:
        raise ValueError(f"{folder}: no maps (.exr, .npy or *_-20_to_20_ch0.png triplets)")
    maps = [formats.read(f) for f in files]
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: maps of different sizes {sorted(shapes)}")
    return np.stack(maps)


class PCAModel:
    def __init__(self, mean: np.ndarray, components: np.ndarray, sigma: np.ndarray):
        self.mean = np.asarray(mean, np.float32)              # (H, W, 3)
        self.components = np.asarray(components, np.float32)  # (K, H*W*3), orthonormal rows
        self.sigma = np.asarray(sigma, np.float32)            # (K,)
        self.z_dim = len(self.sigma)

    @classmethod
    def fit(cls, maps: np.ndarray, num_components: int = 32) -> "PCAModel":
        n = len(maps)
        if n < 2:
            raise ValueError("a PCA needs at least two maps")
        x = maps.reshape(n, -1).astype(np.float64)
        mean = x.mean(0)
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = min(num_components, n - 1)
        return cls(mean.reshape(maps.shape[1:]), vt[:k], s[:k] / np.sqrt(n - 1))

    def coefficients(self, seed: int) -> np.ndarray:
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(self.z_dim, generator=g).numpy()

    def decode(self, c: np.ndarray, psi: float = 1.0) -> np.ndarray:
        flat = self.mean.ravel() + (psi * c * self.sigma) @ self.components
        return flat.reshape(self.mean.shape).astype(np.float32)

    def sample(self, seeds, psi: float = 0.7) -> list[np.ndarray]:
        return [self.decode(self.coefficients(s), psi) for s in seeds]

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 8, psi: float = 0.7) -> list[np.ndarray]:
        a, b = self.coefficients(seed_a), self.coefficients(seed_b)
        return [self.decode((1 - t) * a + t * b, psi) for t in np.linspace(0, 1, max(int(steps), 2))]

    def fit_masked(self, target: np.ndarray, mask: np.ndarray, noise: float = 0.1) -> np.ndarray:
        """The model's map that best explains `target` (H, W, 3) on the texels of `mask` (H, W):
        the coefficients' posterior mean under their N(0, I) prior, with Gaussian texel noise of
        std `noise` (HeadCraft units). The PCA counterpart of a partial latent fit."""
        seen = np.asarray(mask, bool).reshape(-1)
        a = (self.components.reshape(self.z_dim, -1, 3)[:, seen] * self.sigma[:, None, None]).reshape(self.z_dim, -1)
        b = (np.asarray(target, np.float64) - self.mean).reshape(-1, 3)[seen].ravel()
        a64 = a.astype(np.float64)
        c = np.linalg.solve(a64 @ a64.T + noise ** 2 * np.eye(self.z_dim), a64 @ b)
        return self.decode(c.astype(np.float32))

    def explained(self, maps: np.ndarray) -> float:
        """Fraction of the maps' variance the components hold."""
        x = maps.reshape(len(maps), -1) - self.mean.ravel()
        proj = x @ self.components.T
        return float((proj ** 2).sum() / max((x ** 2).sum(), 1e-20))

    def save(self, path: str | Path) -> tuple[Path, Path]:
        from safetensors.numpy import save_file
        base = Path(path).with_suffix("")
        weights, cfg = base.with_suffix(".safetensors"), base.with_suffix(".json")
        text = json.dumps({"format": FORMAT, "version": 1, "components": int(self.z_dim),
                           "size": int(self.mean.shape[0])}, indent=2)
        arrays = {"mean": self.mean, "components": self.components, "sigma": self.sigma}
        write_atomic(weights, lambda tmp: save_file(arrays, tmp), required=True)    # never half a file
        write_atomic(cfg, lambda tmp: Path(tmp).write_text(text), required=True)
        return weights, cfg

    @classmethod
    def load(cls, path: str | Path) -> "PCAModel":
        from safetensors.numpy import load_file
        t = load_file(str(Path(path).with_suffix(".safetensors")))
        return cls(t["mean"], t["components"], t["sigma"])
