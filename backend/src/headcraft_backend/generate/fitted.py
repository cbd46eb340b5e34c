"""Workflows on detailed heads a user already has (fitted scans; paper Fig. 11 and sec. 4.4):
each head's map is fitted to the generator (latent fitting, cached per generator and map), then
the styles are interpolated in W+, or the driver's fitted map gives the hair of the source.

Heads come as dense arrays of one head model (`base`, `displacement`, metres, model frame);
their maps are baked in object space at the generator's size in the head's layout.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import hash_arrays
from ..compute import Compute
from ..errors import UserError
from ..layout.maps import MappedHead, bake_displacement, cached
from .fit_latent import LatentFitResult, LatentFitSettings, fit_latent
from .networks import Generator
from .sample import synthesize, transfer_hair, unpack

HAIR_SOURCES = ("generator", "map")    # the driver's hair: its fitted map (the paper's), or its own bake


@dataclasses.dataclass
class DetailedHead:
    """A detailed head of one model: its dense base and displacements (Vd, 3), metres."""
    base: np.ndarray
    displacement: np.ndarray


def head_map(compute: Compute, head: MappedHead, detailed: DetailedHead, size: int) -> np.ndarray:
    """The head's displacements baked in object space at `size` (HeadCraft units)."""
    return bake_displacement(compute, head, size, detailed.base, detailed.displacement)["map"]


def fitted_styles(compute: Compute, G: Generator, generator_key: str, target: np.ndarray,
                  settings: LatentFitSettings, perceptual: Callable | None = None,
                  report: Callable[[float, str, str], None] | None = None) -> LatentFitResult:
    """fit_latent on a full map, cached by the generator, the map's values and the settings
    (fitting is the slow part: a second use of the same head costs nothing)."""
    h = hashlib.sha256()
    hash_arrays(h, (target, np.float32))
    key = ("fitted-styles", generator_key, h.hexdigest(), dataclasses.astuple(settings), perceptual is not None)
    return cached(compute, key, lambda: fit_latent(G, target, None, settings, perceptual, report))


def styles_maps(G: Generator, ws_a: torch.Tensor, ws_b: torch.Tensor, steps: int) -> list[np.ndarray]:
    """Maps along the straight line in W+ from ws_a to ws_b, both ends included."""
    if steps < 2:
        raise UserError("an interpolation needs at least 2 steps")
    factors = np.linspace(0.0, 1.0, steps)
    ws = torch.cat([torch.lerp(ws_a, ws_b, float(t)) for t in factors])
    return [unpack(s) for s in synthesize(G, ws, "const")]


def interpolation_bases(a: DetailedHead, b: DetailedHead, steps: int) -> list[np.ndarray]:
    """The bare heads along the way: the identities blend linearly (the dense rebuild is linear
    in the coarse head, so this equals rebuilding the blended coarse head)."""
    return [((1 - t) * a.base + t * b.base).astype(np.float32) for t in np.linspace(0.0, 1.0, steps)]


def resized(m: np.ndarray, size: int) -> np.ndarray:
    """A map resampled to size x size (bilinear between texel centres)."""
    if m.shape[0] == size:
        return np.asarray(m, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(m, np.float32).transpose(2, 0, 1))[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)


def hair_transfer_map(face_map: np.ndarray, driver_map: np.ndarray) -> np.ndarray:
    """The source's face half with the driver's scalp half (seams blend when it is applied)."""
    try:
        return transfer_hair(face_map, driver_map)
    except ValueError as exc:
        raise UserError(str(exc)) from None
