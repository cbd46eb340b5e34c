"""From seeds to displacement maps: latents, truncation in W, style mixing, the two synthesis
passes, 6-channel unpacking and the face low-pass (paper sec. 3.2, supp. A.2; REFERENCE 4).

The generator's 6 channels hold the two halves of a map at double horizontal resolution:
channels 0-2 the face chart (left half of the layout), 3-5 the scalp chart (right half). The
face comes from a pass without noise, the scalp from a pass with the constant noise, both with
the same styles, as the published sampling code does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..head.data import HeadModelData
from ..layout.unwrap import Layout
from ..layout.store import halves
from .networks import NOISE_MODES, Generator
from .pca import PCAModel


def seeds_to_z(seeds, z_dim: int) -> torch.Tensor:
    """One N(0, 1) latent per seed, the same on every machine (a CPU generator per seed)."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def latents(G: Generator, z: torch.Tensor, psi: float = 0.7, mix_z: torch.Tensor | None = None,
            mix_from: int | None = None) -> torch.Tensor:
    """W+ styles (N, num_ws, w_dim): truncation applied in W (w_avg + psi (w - w_avg)); with
    style mixing, styles from `mix_from` on come from `mix_z`."""
    G.mapping.eval()
    device = next(G.parameters()).device          # seeds make CPU latents; the generator may be on a GPU
    with torch.no_grad():
        ws = G.mapping(z.to(device), truncation_psi=psi)
        if mix_z is not None and mix_from is not None:
            ws[:, mix_from:] = G.mapping(mix_z.to(device), truncation_psi=psi)[:, mix_from:]
    return ws


def synthesize(G: Generator, ws: torch.Tensor, scalp_noise: str = "const") -> torch.Tensor:
    """(N, 6, H, W): face channels from a noise-free pass, scalp channels with `scalp_noise`."""
    with torch.no_grad():
        scalp = G.synthesis(ws, noise_mode=scalp_noise)
        face = G.synthesis(ws, noise_mode="none")
    return torch.cat([face[:, :3], scalp[:, 3:]], 1)


def unpack(six: np.ndarray | torch.Tensor) -> np.ndarray:
    """(6, H, W) or (H, W, 6) -> (H, W, 3) map: the halves side by side at (H, 2W), then
    adjacent column pairs averaged."""
    a = six.detach().cpu().numpy() if isinstance(six, torch.Tensor) else np.asarray(six)
    if a.shape[0] == 6 and a.shape[-1] != 6:
        a = a.transpose(1, 2, 0)
    wide = np.concatenate([a[..., :3], a[..., 3:]], axis=1)            # (H, 2W, 3)
    return (0.5 * (wide[:, 0::2] + wide[:, 1::2])).astype(np.float32)


def pack(m: np.ndarray) -> np.ndarray:
    """(H, W, 3) map -> (H, W, 6) training target, the inverse of unpack: each half stretched
    to full width by repeating columns."""
    h, w, _ = m.shape
    wide = np.repeat(m, 2, axis=1)                                       # (H, 2W, 3)
    return np.concatenate([wide[:, :w], wide[:, w:]], axis=-1).astype(np.float32)


def face_lowpass(m: np.ndarray) -> np.ndarray:
    """The face half (left) averaged over 2x2 texels and brought back bilinearly (the published
    sampling code's extra face smoothing); the scalp half is kept."""
    t = torch.from_numpy(np.ascontiguousarray(m.transpose(2, 0, 1)))[None]
    low = F.interpolate(F.avg_pool2d(t, 2), scale_factor=2, mode="bilinear", align_corners=True)
    out = m.copy()
    half = m.shape[1] // 2
    out[:, :half] = low[0].numpy().transpose(1, 2, 0)[:, :half]
    return out


def generate_maps(G: Generator, seeds, psi: float = 0.7, scalp_noise: str = "const",
                  mix_seed: int | None = None, mix_from: int | None = None, lowpass: bool = True) -> list[np.ndarray]:
    """One (H, W, 3) map in HeadCraft units per seed."""
    z = seeds_to_z(seeds, G.z_dim)
    mix = seeds_to_z([mix_seed] * len(seeds), G.z_dim) if mix_seed is not None else None
    ws = latents(G, z, psi, mix, mix_from)
    six = synthesize(G, ws, scalp_noise)
    maps = [unpack(s) for s in six]
    return [face_lowpass(m) for m in maps] if lowpass else maps


MIN_HALF = 0.75    # of the face's UV area in the left half, and of the rest's in the right half


def check_layout(data: HeadModelData, layout: Layout, G: Generator | PCAModel | None = None) -> None:
    """UserError unless generated maps fit the layout: a StyleGAN with 6 channels (face and
    scalp halves), and a layout with the face in the left half and the scalp in the right."""
    if isinstance(G, Generator) and G.img_channels != 6:
        raise UserError(f"this generator makes {G.img_channels}-channel maps; HeadCraft generators make 6 "
                        f"(the face half and the scalp half of a map)")
    face, rest = halves(data, layout)
    if min(face, rest) < MIN_HALF:
        raise UserError(f"the layout {layout.name!r} of {data.name} has {face:.0%} of the face in the left half "
                        f"and {rest:.0%} of the scalp in the right half; generated maps hold the face on the left "
                        f"and the scalp on the right. Choose the layout the generator was trained in (headcraft "
                        f"for our models; for the published model, the authors' layout imported with "
                        f"Import Layout)")


def check_psi(psi: float) -> float:
    """Truncation psi: 0 is the average head, 1 no truncation; beyond [-1, 2] nothing is a head."""
    if not -1.0 <= psi <= 2.0:       # also refuses NaN
        raise UserError(f"psi {psi}: choose -1 to 2 (0.7 is usual)")
    return psi


def sample_maps(G: Generator | PCAModel, seeds, psi: float = 0.7, scalp_noise: str = "const",
                mix_seed: int | None = None, mix_from: int | None = None, lowpass: bool = True) -> list[np.ndarray]:
    """generate_maps for a StyleGAN (style mixing from layer `mix_from`, default half-way), or
    the PCA baseline's samples (it has no styles to mix). UserError for settings it cannot use."""
    if scalp_noise not in NOISE_MODES:
        raise UserError(f"noise {scalp_noise!r}: choose one of {', '.join(NOISE_MODES)}")
    check_psi(psi)
    if isinstance(G, PCAModel):
        if mix_seed is not None:
            raise UserError("style mixing needs a StyleGAN; the PCA baseline has no styles")
        return G.sample(list(seeds), psi)
    if mix_seed is not None:
        mix_from = G.num_ws // 2 if mix_from is None else int(mix_from)
        if not 0 <= mix_from <= G.num_ws:
            raise UserError(f"style mixing starts at a layer from 0 to {G.num_ws}")
    return generate_maps(G, seeds, psi, scalp_noise, mix_seed, mix_from, lowpass)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of latents (rows), for Gaussian z."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_latents(G: Generator, seed_a: int, seed_b: int, factors, psi: float = 0.7,
                          space: str = "w") -> torch.Tensor:
    """W+ styles along the path from seed_a to seed_b: a straight line in W ('w') or a great
    circle in Z mapped to W ('z')."""
    za, zb = seeds_to_z([seed_a], G.z_dim), seeds_to_z([seed_b], G.z_dim)
    if space == "z":
        return torch.cat([latents(G, slerp(za, zb, float(t)), psi) for t in factors])
    if space != "w":
        raise ValueError(f"interpolation space {space!r}: 'w' or 'z'")
    wa, wb = latents(G, za, psi), latents(G, zb, psi)
    return torch.cat([torch.lerp(wa, wb, float(t)) for t in factors])


def interpolate_maps(G: Generator | PCAModel, seed_a: int, seed_b: int, steps: int = 8, psi: float = 0.7,
                     space: str = "w", scalp_noise: str = "const") -> list[np.ndarray]:
    """`steps` maps from seed_a to seed_b inclusive (the PCA baseline: a straight line)."""
    check_psi(psi)
    if isinstance(G, PCAModel):
        return G.interpolate(seed_a, seed_b, steps, psi)
    factors = np.linspace(0.0, 1.0, max(int(steps), 2))
    ws = interpolation_latents(G, seed_a, seed_b, factors, psi, space)
    return [face_lowpass(unpack(s)) for s in synthesize(G, ws, scalp_noise)]


def transfer_hair(face_map: np.ndarray, hair_map: np.ndarray) -> np.ndarray:
    """The face chart (left half) of one map with the scalp chart (right half) of another;
    applying the result runs the seam processing, which blends the two at the face border."""
    if face_map.shape != hair_map.shape:
        raise ValueError(f"maps of different sizes {face_map.shape} and {hair_map.shape}")
    out = np.array(face_map, np.float32)
    half = out.shape[1] // 2
    out[:, half:] = hair_map[:, half:]
    return out
