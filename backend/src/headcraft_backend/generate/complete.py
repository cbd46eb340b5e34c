"""Completion of partial scans (paper sec. 4.3, Fig. 8; supp. B.1): a single depth view or a
partial scan -> partial registration -> the visible part's displacement map and visibility
mask -> masked latent fit of the generator -> a completed detailed head.

1. A depth image is back-projected through its pinhole intrinsics (fit/depth.py) into a cloud in
   the camera's frame; a partial mesh or cloud is used as it is.
2. Partial registration (fit/register.py with `partial`): only vertices inside the cloud's
   convex hull scaled 1.5x may move; the final visibility is the proximity mask (within t = 0.1
   units of the cloud, 0.3 for a sparse one) times that hull mask, as the supplement's
   m_final = m * [d <= t].
3. The registered displacements and the visibility are baked as two maps at the generator's size.
4. The generator's latent is fitted to the visible texels (z, then a W+ delta, then the scalp
   noise: fit_latent's partial schedule, the paper's defaults). The PCA baseline instead takes
   the posterior mean of its coefficients given the visible texels (PCAModel.fit_masked).
5. The completed head is the fitted template (the coarse fit's dense head) plus the generator's
   displacements everywhere: the paper's output, g(w). `keep_observed` is an option, not the
   default: it keeps the registration's own displacements where the view saw the head (blended
   over a few rings at the border), since there they are measured, not generated, and the
   generator's map is only as sharp as its resolution (64^2 for the bundled demo model).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..compute import Compute
from ..errors import UserError
from ..fit.depth import Intrinsics, back_project
from ..fit.pipeline import FitOptions, FitResult, fit_scan
from ..fit.scan import Scan, sanitize
from ..head.topology import averaging, unique_edges
from ..layout.maps import MappedHead, apply_map, bake_displacement
from .fit_latent import LatentFitSettings, fit_latent
from .networks import Generator
from .pca import PCAModel

BLEND_RINGS = 5     # keep_observed: rings of vertices over which the registered detail fades out


@dataclasses.dataclass
class CompletionOptions:
    """The partial registration's settings (`fit.partial` must be set: see completion_options),
    the latent fit's, and how the result is put together."""
    fit: FitOptions
    latent: LatentFitSettings = dataclasses.field(default_factory=LatentFitSettings)
    keep_observed: bool = False   # the registered displacements where seen (default: the generator's everywhere)
    pca_noise: float = 0.1        # the PCA baseline's texel noise (HeadCraft units)


@dataclasses.dataclass
class Completion:
    fit: FitResult                # the partial registration (model frame; fit.coarse.similarity -> scan frame)
    partial_map: np.ndarray       # (N, N, 3) the registered displacements baked (HeadCraft units)
    mask: np.ndarray              # (N, N) float32 1 = visible texel
    visibility: np.ndarray        # (Vd,) bool: dense vertices the registration saw
    map: np.ndarray               # (N, N, 3) the generator's completed map
    base: np.ndarray              # (Vd, 3) the fitted template, model frame, metres
    displacement: np.ndarray      # (Vd, 3) metres
    final: np.ndarray             # (Vd, 3) the completed head, model frame, metres
    ws: np.ndarray | None         # (1, num_ws, w_dim) the fitted styles (None for the PCA baseline)
    loss_history: list[float]
    notes: list[str]


def completion_options(fit: FitOptions, latent: LatentFitSettings | None = None, keep_observed: bool = False,
                       pca_noise: float = 0.1) -> CompletionOptions:
    """Options whose registration is partial (a dense view unless fit.sparse), checked."""
    if fit.registration is not None and not fit.registration.partial:
        raise UserError("completing a scan needs a partial registration (the settings have partial off)")
    fit = dataclasses.replace(fit, partial=True)
    latent = latent or LatentFitSettings()
    if min(latent.steps_z, latent.steps_delta, latent.noise_steps(True)) < 0 or not latent.lr > 0:
        raise UserError(f"bad latent-fit settings: {latent}")
    if not pca_noise > 0:
        raise UserError(f"pca_noise {pca_noise}: must be positive")
    return CompletionOptions(fit, latent, keep_observed, pca_noise)


def depth_scan(depth: np.ndarray, intrinsics: Intrinsics, name: str = "the depth image") -> Scan:
    """A depth image's measured pixels as a point-cloud scan in the camera frame (depth units)."""
    return sanitize(back_project(depth, intrinsics), None, name=name)


def complete_map(G: Generator | PCAModel, target: np.ndarray, mask: np.ndarray, options: CompletionOptions,
                 perceptual: Callable | None = None, report: Callable[[float, str, str], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, list[float], list[str]]:
    """The generator's full map for a partial one: (map, ws or None, loss history, notes)."""
    if not np.asarray(mask).any():
        raise UserError("the visibility mask is empty: no texel of the map was seen")
    if isinstance(G, PCAModel):
        return G.fit_masked(target, mask, options.pca_noise), None, [], ["PCA baseline: coefficients fitted by "
                                                                          "least squares on the visible texels"]
    res = fit_latent(G, target, mask, options.latent, perceptual, report)
    return res.map, res.ws.cpu().numpy().astype(np.float32), res.loss_history, res.notes


def complete_scan(compute: Compute, head: MappedHead, G: Generator | PCAModel, scan: Scan,
                  options: CompletionOptions, landmarks: dict[int, np.ndarray] | None = None,
                  perceptual: Callable | None = None) -> Completion:
    """A completed detailed head for a partial scan (a depth view's cloud, or a partial mesh or
    cloud; see the module doc). `landmarks`: MediaPipe index -> scan-frame point, placed by hand
    (None: detected on renders of the scan). UserError for a scan, landmarks or settings a fit
    cannot use, and for a view of which nothing registers onto the head."""
    if not options.fit.registration_settings().partial:
        raise UserError("completing a scan needs a partial registration (use completion_options)")
    size = G.mean.shape[0] if isinstance(G, PCAModel) else G.img_resolution
    span = lambda lo, hi: (lambda f, s, m: compute.progress(lo + (hi - lo) * f, s, m))  # noqa: E731
    fit = fit_scan(head.model, head.dense, scan, options.fit, landmarks, report=span(0.0, 0.6), device=compute.device)
    visibility = fit.registration.visibility
    assert visibility is not None       # a partial registration always has one
    if not visibility.any():
        raise UserError("no vertex of the fitted head lies on the scan after the partial registration: check the "
                        "landmarks and the scan's units")
    baked = bake_displacement(compute, head, size, fit.base, fit.displacement, visibility)
    mask = (baked["visibility_map"] > 0.5).astype(np.float32)
    compute.progress(0.62, "latent fit", f"fitting the generator to {int(mask.sum()):,} visible texels of {size}^2")
    m, ws, history, notes = complete_map(G, baked["map"], mask, options, perceptual,
                                         lambda f, s, msg: compute.progress(0.62 + 0.33 * f / 0.9, s, msg))
    disp = apply_map(compute, head, m, fit.base)["displacement"].astype(np.float64)
    if options.keep_observed:
        w = observed_weight(head.dense.faces, visibility)[:, None]
        disp = w * fit.displacement + (1 - w) * disp
    compute.progress(1.0, "done", "completed")
    return Completion(fit=fit, partial_map=baked["map"], mask=mask, visibility=visibility, map=m, base=fit.base,
                      displacement=disp.astype(np.float32), final=(fit.base + disp).astype(np.float32), ws=ws,
                      loss_history=history, notes=fit.notes + notes)


def observed_weight(faces: np.ndarray, visibility: np.ndarray, rings: int = BLEND_RINGS) -> np.ndarray:
    """1 deep inside the seen part, 0 outside it, fading over `rings` rings inside its border."""
    avg = averaging(unique_edges(np.asarray(faces, np.int64)), len(visibility), self_weight=1.0)
    w = np.asarray(visibility, np.float64)
    for _ in range(rings):          # erode: a vertex stays 1 only when its whole ring is
        w = np.minimum(w, (avg @ w >= 1 - 1e-9).astype(np.float64))
    for _ in range(rings):
        w = avg @ w
    return np.clip(w, 0.0, 1.0) * np.asarray(visibility, np.float64)
