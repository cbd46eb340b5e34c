"""Latent fitting (supp. B.1; REFERENCE 5): find the generator's styles for a given map.

Full map: W+ from the average style (mean of mapping(z) over many z), loss
w_lpips * LPIPS + w_l1 * L1 against the target (LPIPS averaged over 64x64 patches), Adam lr 1e-2,
1000 steps; then optionally the scalp noise buffers. Partial map with a visibility mask, as the
supplement (B.1): z from a N(0, I) sample, 500 steps of the masked loss (the result stays on the
generator's manifold); then 500 steps of a W+ delta (from zero) with the masked loss on the
visible texels, a 10x weaker "preserve" loss keeping the hidden texels at the z result and an
L1 term (10/256) keeping the face disc's displacements small; then 500 steps of the scalp noise
with the masked loss and an L2 prior (1e-5).

LPIPS is optional: `perceptual` is any callable (N,3,h,w) x (N,3,h,w) -> (N,) on [-1, 1] images
(perceptual.load_lpips() gives LPIPS when its weights are on the machine); without it the fit is
L1 only and the result says so.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from .networks import Generator
from .sample import pack, unpack

PATCH = 64
L1_ONLY = "L1 only (no perceptual term)"     # the note of a fit without `perceptual`


@dataclasses.dataclass
class LatentFitSettings:
    steps_w: int = 1000         # full maps: the W+ stage
    steps_z: int = 500          # partial maps: the z stage
    steps_delta: int = 500      # partial maps: the W+ delta stage
    steps_noise: int | None = None   # None: 0 for a full map (the step is optional), 500 for a partial one
    seed: int = 0               # partial maps: the z sample the fit starts from

    def noise_steps(self, partial: bool) -> int:
        """Scalp-noise steps: as set, else 500 for a partial map and none for a full one."""
        return self.steps_noise if self.steps_noise is not None else (500 if partial else 0)
    lr: float = 1e-2
    w_lpips: float = 0.1
    w_l1: float = 3.0
    preserve: float = 0.1       # partial maps: weight of the hidden part relative to the visible
    face_pull: float = 10.0 / 256
    noise_l2: float = 1e-5
    avg_samples: int = 10_000   # z samples for the average style


@dataclasses.dataclass
class LatentFitResult:
    ws: torch.Tensor            # (1, num_ws, w_dim)
    map: np.ndarray             # (H, W, 3) the generator's map for ws
    loss_history: list[float]
    notes: list[str]


def _patches(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (P, C, 64, 64) non-overlapping patches."""
    c = x.shape[1]
    p = x.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)          # (1, C, h, w, 64, 64)
    return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, PATCH, PATCH)


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x / scale).clamp(-1, 1)


def _loss(pred, target, mask, settings, perceptual, scale):
    """Masked L1 plus patch LPIPS on both 3-channel halves of the 6-channel maps (mask: same
    shape as the maps)."""
    diff = (pred - target).abs()
    l1 = (diff * mask).sum() / mask.sum().clamp_min(1)
    if perceptual is None or settings.w_lpips == 0:
        return settings.w_l1 * l1
    lp = 0.0
    for half in (slice(0, 3), slice(3, 6)):
        a = _patches(_scaled(pred[:, half] * mask[:, half], scale))
        b = _patches(_scaled(target[:, half] * mask[:, half], scale))
        lp = lp + perceptual(a, b).mean()
    return settings.w_lpips * lp / 2 + settings.w_l1 * l1


def average_ws(G: Generator, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, G.z_dim, generator=g)
        return torch.cat([G.mapping(c, update_w_avg=False) for c in z.split(1000)]).mean(0, keepdim=True)


def require_stylegan(G) -> Generator:
    """G when it is a StyleGAN; UserError for the PCA baseline, which has no styles to fit."""
    if not isinstance(G, Generator):
        raise UserError("latent fitting needs a StyleGAN checkpoint, not the PCA baseline")
    return G


def fit_latent(G: Generator, target_map: np.ndarray, mask: np.ndarray | None = None,
               settings: LatentFitSettings | None = None, perceptual: Callable | None = None,
               report: Callable[[float, str, str], None] | None = None) -> LatentFitResult:
    """Styles (W+) whose map matches `target_map` (H, W, 3) in HeadCraft units; `mask` (H, W)
    marks the visible texels of a partial map."""
    s = settings or LatentFitSettings()
    G.eval()
    flags = [p.requires_grad for p in G.parameters()]
    for p in G.parameters():
        p.requires_grad_(False)
    try:
        return _fit(G, target_map, mask, s, perceptual, report)
    finally:
        for p, f in zip(G.parameters(), flags):
            p.requires_grad_(f)


def _fit(G, target_map, mask, s, perceptual, report) -> LatentFitResult:
    target = torch.from_numpy(pack(np.asarray(target_map, np.float32)).transpose(2, 0, 1))[None]
    if mask is None:
        vis = torch.ones_like(target)
    else:   # the mask covers the 3-channel map: into the 6-channel packing like the map
        m3 = np.repeat(np.asarray(mask, np.float32)[..., None], 3, -1)
        vis = torch.from_numpy(pack(m3).transpose(2, 0, 1))[None]
    scale = float(target.abs().max().clamp_min(1e-3))
    notes = [] if perceptual is not None else [L1_ONLY]
    history: list[float] = []

    def synth(ws):
        face = G.synthesis(ws, noise_mode="none")
        scalp = G.synthesis(ws, noise_mode="const")
        return torch.cat([face[:, :3], scalp[:, 3:]], 1)

    def run(params, steps, loss_fn, stage, start):
        opt = torch.optim.Adam(params, lr=s.lr)
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if report and (i % 10 == 0 or i == steps - 1):
                report(start + (i + 1) / max(steps, 1) * 0.3, stage, f"step {i + 1}/{steps}, loss {history[-1]:.4f}")

    if mask is None:
        ws = average_ws(G, s.avg_samples).clone().requires_grad_(True)
        run([ws], s.steps_w, lambda: _loss(synth(ws), target, vis, s, perceptual, scale), "W+", 0.0)
    else:
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s.seed)).requires_grad_(True)
        run([z], s.steps_z, lambda: _loss(synth(G.mapping(z, update_w_avg=False)), target, vis, s, perceptual, scale),
            "z", 0.0)
        with torch.no_grad():
            ws0 = G.mapping(z, update_w_avg=False)
            base = synth(ws0)
        delta = torch.zeros_like(ws0, requires_grad=True)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, target.shape[2]), torch.linspace(-1, 1, target.shape[3]),
                                indexing="ij")
        face_disc = ((xx.square() + yy.square()) < 0.8 ** 2).float()[None, None]

        def partial_loss():
            pred = synth(ws0 + delta)
            seen = _loss(pred, target, vis, s, perceptual, scale)
            hidden = _loss(pred, base, 1 - vis, s, perceptual, scale) * s.preserve
            face = (pred[:, :3].abs() * face_disc).mean() * s.face_pull
            return seen + hidden + face
        run([delta], s.steps_delta, partial_loss, "W+ delta", 0.3)
        ws = (ws0 + delta).detach()
    ws = ws.detach()
    steps_noise = s.noise_steps(mask is not None)
    if steps_noise:    # fitted on copies: the generator's own noise is put back afterwards
        layers = [m for m in G.synthesis.modules() if hasattr(m, "noise_const")]
        originals = [m.noise_const for m in layers]
        noise = [o.clone().requires_grad_(True) for o in originals]

        def noise_loss():
            for m, n in zip(layers, noise):
                m.noise_const = n
            reg = sum((n - o).square().mean() for n, o in zip(noise, originals)) * s.noise_l2
            return _loss(synth(ws), target, vis, s, perceptual, scale) + reg
        try:
            run(noise, steps_noise, noise_loss, "noise", 0.6)
            with torch.no_grad():
                out = unpack(synth(ws)[0])
        finally:
            for m, o in zip(layers, originals):
                m.noise_const = o
    else:
        with torch.no_grad():
            out = unpack(synth(ws)[0])
    return LatentFitResult(ws, out, history, notes)
