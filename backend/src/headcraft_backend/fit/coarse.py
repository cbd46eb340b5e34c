"""Coarse fit: a similarity from landmarks, then identity, expression and jaw/neck pose from
landmarks plus a robust surface term with Gaussian priors (REFERENCE 2.1)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..head.lbs import axis_angle_to_matrix
from ..head.model import HeadModel
from ..presets import PAPER_WEIGHTS
from .register import vertex_normals
from ..units import MM_PER_UNIT, to_units

JAW, NECK = 2, 1


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with dst ~ s R src + t (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / max((a * a).sum() / len(src), 1e-30))
    return s, R, mu_d - s * R @ mu_s


@dataclasses.dataclass
class Similarity:
    """Maps model-frame points (metres) to scan-frame points: x_scan = s R x + t."""
    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x @ self.rotation.T + self.translation

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (y - self.translation) @ self.rotation / self.scale


@dataclasses.dataclass
class CoarseSettings:
    rounds: int = 40               # nearest-point refreshes; L-BFGS runs between them
    iterations: int = 30           # L-BFGS iterations per round
    rigid_rounds: int = 5          # first rounds move only the similarity
    num_shape: int = 50
    w_landmarks: float = PAPER_WEIGHTS["coarse"]["w_landmarks"]
    w_surface: float = PAPER_WEIGHTS["coarse"]["w_surface"]
    w_shape: float = PAPER_WEIGHTS["coarse"]["w_shape"]
    w_expr: float = PAPER_WEIGHTS["coarse"]["w_expr"]
    w_pose: float = PAPER_WEIGHTS["coarse"]["w_pose"]
    # the jaw's yaw and roll (it opens about x, and never past closed)
    w_jaw_side: float = PAPER_WEIGHTS["coarse"]["w_jaw_side"]
    robust_sigma: float = 0.5      # Geman-McClure scale of the surface term, HeadCraft units
    robust_sigma_start: float = 4.0   # annealed down to robust_sigma over the first half, so
                                      # a neck or scalp that starts far off is still pulled in
    # Scan units per metre when known (1000 for millimetres); None estimates the scale. OpenHead's
    # first identity component is nearly a uniform scale, so only a known scale pins it.
    scale: float | None = None
    hair_weight: float = 0.2       # surface weight of scalp vertices lying under the scan (hair)
    late_landmark_weight: float = 0.1   # landmarks guide the start; the surface decides the end
    # Surface-term weight per region (the robust kernel already discounts hair and clothing).
    region_weights: dict = dataclasses.field(default_factory=lambda: {
        "scalp": 1.0, "neck": 1.0, "ears": 0.5, "eyeballs": 0.0, "inner_mouth": 0.0})


def surface_weights(data, settings: CoarseSettings) -> np.ndarray:
    """Per-vertex weight of the surface term (1 for the face and anything unlisted)."""
    w = np.ones(data.num_vertices, np.float32)
    for name, weight in settings.region_weights.items():
        if name in data.regions:
            w[data.regions[name]] = weight
    return w


@dataclasses.dataclass
class CoarseFit:
    shape: np.ndarray
    expr: np.ndarray
    pose: np.ndarray               # (J, 3) axis-angle
    similarity: Similarity         # model frame -> scan frame
    vertices: np.ndarray           # fitted coarse vertices, model frame, metres
    landmark_rmse_mm: float
    surface_median_mm: float


def fit_coarse(model: HeadModel, scan_points: np.ndarray, scan_landmarks: np.ndarray,
               lmk_faces: np.ndarray, lmk_bary: np.ndarray,
               settings: CoarseSettings = CoarseSettings(),
               report: Callable[[float, str, str], None] | None = None) -> CoarseFit:
    """scan_points (N, 3) and scan_landmarks (L, 3) in the scan frame (any units); the model's
    landmarks are (lmk_faces, lmk_bary) on its triangles.

    Rounds of L-BFGS on fixed nearest-point pairs (an ICP-style loop). The similarity is the
    head's and the neck rotation turns the neck's base under it: landmarks then pin the
    similarity alone, and the neck pose no longer fights them (with the plain parametrisation
    a turned neck is a narrow valley that first-order steps do not leave)."""
    report = report or (lambda f, s, m: None)
    dev = model.v_template.device
    lmk_corners = model.faces[torch.as_tensor(lmk_faces, device=dev)]
    lmk_weights = torch.as_tensor(lmk_bary, dtype=torch.float32, device=dev)[None, :, :, None]
    tri_lmk = lambda v: (v[:, lmk_corners] * lmk_weights).sum(2)  # noqa: E731
    with torch.no_grad():
        lmk0 = tri_lmk(model.v_template[None])[0].cpu().numpy()
    s, R, t = umeyama(lmk0.astype(np.float64), scan_landmarks.astype(np.float64))
    if settings.scale is not None:  # same rotation; translation re-centred for the given scale
        s, t = settings.scale, scan_landmarks.mean(0) - settings.scale * R @ lmk0.mean(0)
    sim0 = Similarity(s, R, t)
    # Work in the model frame, HeadCraft units.
    scan_m = to_units(sim0.inverse(scan_points)).astype(np.float32)
    lmk_m = torch.as_tensor(to_units(sim0.inverse(scan_landmarks)), dtype=torch.float32, device=dev)
    tree = cKDTree(scan_m)
    scan_t = torch.as_tensor(scan_m, device=dev)
    weights = surface_weights(model.data, settings)
    region = torch.as_tensor(np.flatnonzero(weights > 0), dtype=torch.long, device=dev)
    w_region = torch.as_tensor(weights[weights > 0], device=dev)
    is_scalp = np.zeros(model.data.num_vertices, bool)
    is_scalp[np.asarray(model.data.regions.get("scalp", []), np.int64)] = True
    scalp = torch.as_tensor(is_scalp[weights > 0], device=dev)
    ns = min(settings.num_shape, model.data.num_shape)
    shape = torch.zeros(1, ns, device=dev, requires_grad=True)
    expr = torch.zeros(1, model.data.num_expr, device=dev, requires_grad=True)
    jaw_neck = torch.zeros(1, 2, 3, device=dev, requires_grad=True)
    rot = torch.zeros(3, device=dev, requires_grad=True)
    trans = torch.zeros(3, device=dev, requires_grad=True)
    log_scale = torch.zeros(1, device=dev, requires_grad=True)
    blend = model.data.name == "openhead"

    def posed():
        pose = torch.zeros(1, model.num_joints, 3, device=dev)
        jn = torch.cat([jaw_neck[0, :1], torch.cat([jaw_neck[0, 1, :1].clamp(min=0.0), jaw_neck[0, 1, 1:]])[None]])
        pose = pose.index_put((torch.tensor([0]), torch.tensor([NECK, JAW])), jn)
        e = expr.clamp(0, 1) if blend else expr
        return model(shape=shape, expr=e, pose=pose), pose, e

    def head_frame():
        """Posed vertices turned back about the neck joint by the neck rotation (metres), and
        the similarity that turns the head-frame result into the posed model's frame."""
        out, pose, e = posed()
        J = out.joints[:, NECK:NECK + 1]
        P = axis_angle_to_matrix(jaw_neck[0, 0])
        return (out.vertices - J) @ P + J, J[0, 0], P, pose, e

    def forward():
        v = to_units(head_frame()[0])
        return torch.exp(log_scale) * v @ axis_angle_to_matrix(rot).T + trans

    rounds = max(settings.rounds, 1)
    terms: dict[str, float] = {}
    for k in range(rounds):
        rigid = k < min(settings.rigid_rounds, rounds - 1)
        a = min(1.0, k / max(rounds // 2, 1))
        sigma2 = (settings.robust_sigma_start ** (1 - a) * settings.robust_sigma ** a) ** 2
        w_lmk = settings.w_landmarks * (1.0 if k < rounds // 2 else settings.late_landmark_weight)
        with torch.no_grad():
            full = forward()[0]
            v = full[region]
        target = scan_t[torch.as_tensor(tree.query(v.cpu().numpy(), workers=-1)[1], device=dev)]
        w_round = w_region
        if settings.hair_weight != 1.0 and scalp.any():
            # scalp vertices with the scan outside them (hair) pull less than ones outside the scan
            with torch.no_grad():
                n = vertex_normals(full, model.faces)[region]
                hair = scalp & (((target - v) * n).sum(-1) > 0)
            w_round = torch.where(hair, w_region * settings.hair_weight, w_region)
        params = [rot, trans] + ([] if settings.scale else [log_scale]) + ([] if rigid else [shape, expr, jaw_neck])
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=settings.iterations, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            v = forward()
            l_lmk = ((tri_lmk(v)[0] - lmk_m) ** 2).sum(-1).mean()
            d2 = ((v[0, region] - target) ** 2).sum(-1)
            l_surf = (w_round * d2 / (d2 + sigma2)).sum() / w_round.sum()
            loss = w_lmk * l_lmk + settings.w_surface * l_surf
            if not rigid:
                loss = loss + settings.w_shape * (shape ** 2).sum() + settings.w_expr * (expr ** 2).sum() \
                    + settings.w_pose * (jaw_neck ** 2).sum() + settings.w_jaw_side * (jaw_neck[0, 1, 1:] ** 2).sum()
            loss.backward()
            terms.update(landmarks=l_lmk.item(), surface=l_surf.item())
            return loss

        opt.step(closure)
        report((k + 1) / rounds, "coarse fit", f"round {k + 1}/{rounds}  landmarks {terms['landmarks']:.3g}  "
               f"surface {terms['surface']:.3g}")
    with torch.no_grad():
        _, J, P, pose, e = head_frame()
        verts_model = posed()[0].vertices[0].cpu().numpy()
        v = forward()[0]
        lmk_rmse = torch.sqrt(((tri_lmk(v[None])[0] - lmk_m) ** 2).sum(-1).mean()).item()
        surf = tree.query(v[region].cpu().numpy())[0]
    # Compose: posed model (metres) -> head frame -> correction (units) -> model frame -> scan.
    J = J.cpu().numpy().astype(np.float64)
    P = P.cpu().numpy().astype(np.float64)
    Rc = axis_angle_to_matrix(rot.detach()).cpu().numpy().astype(np.float64)
    sc = float(torch.exp(log_scale).item())
    tc = (trans.detach().cpu().numpy().astype(np.float64) / to_units(1.0)) + sc * Rc @ (J - P.T @ J)
    Rc = Rc @ P.T
    sim = Similarity(sim0.scale * sc, sim0.rotation @ Rc, sim0.scale * sim0.rotation @ tc + sim0.translation)
    mm = MM_PER_UNIT
    return CoarseFit(shape=shape.detach().cpu().numpy()[0], expr=e.detach().cpu().numpy()[0],
                     pose=pose[0].cpu().numpy(), similarity=sim, vertices=verts_model,
                     landmark_rmse_mm=lmk_rmse * mm, surface_median_mm=float(np.median(surf)) * mm)
