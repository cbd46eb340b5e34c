"""Two-stage high-detail displacement registration (paper sec. 3.1, supp. A.1/B.1).

Everything here is in HeadCraft units (fit/units.py). Stage 1 moves the hair/scalp vertices
freely (vector displacements); stage 2 moves face and hair along the stage-1 normals. Frozen in
stage 2: neck, ears, eyeballs, inner mouth.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from scipy.spatial import ConvexHull, Delaunay, cKDTree

from .losses import MeshRegulariser, PairedChamfer


CONVERGED = 0.002          # the presets' relative loss decrease per window that counts as converged
CONVERGE_WINDOW = 100      # steps


@dataclasses.dataclass
class StageSettings:
    steps: int
    lr: float
    w_chamfer: float
    w_edge: float
    w_laplacian: float
    prune: float          # squared-distance threshold ("reference") or distance ("paper")
    # Stop early once the loss fell by less than this fraction over the last CONVERGE_WINDOW
    # steps (0: always run `steps`). On real scans stage 1 is flat after 100-200 of 1000 steps.
    converge: float = 0.0
    # Cosine decay of the learning rate to this fraction of `lr` over `steps` (None: constant).
    decay_to: float | None = None


@dataclasses.dataclass
class RegistrationSettings:
    stage1: StageSettings
    stage2: StageSettings
    convention: str = "reference"     # see losses.CONVENTIONS
    stage2_mode: str = "scalar"       # "scalar": alpha * n (paper); "vector": n * 3-vector (reference code)
    refresh: int = 10                 # CPU: nearest-neighbour pairs recomputed every N steps
    bruteforce: bool = False          # exact torch.cdist search every step (the benchmark baseline)
    init_std: float = 1e-4
    untangle: bool = True             # shrink stage-2 moves that cross face triangles (see untangle)
    lid_margin: float = 0.4           # stage 2 also freezes face vertices this close to the eyeballs (units)
    partial: bool = False             # single depth view or sparse cloud (supp. B.1)
    sparse: bool = False              # with partial: a sparse cloud (proximity mask t = 0.3)
    taper: float = 0.0                # units over which a stage's moves fade out towards the vertices
                                      # it keeps still (0: a step at the border, which shows as a ridge)
    plane: float | None = None        # with scan normals: weight of the distance along the tangent
                                      # plane (None: point-to-point pairs, see losses.PairedChamfer)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RegistrationSettings":
        d = dict(d)
        return cls(stage1=StageSettings(**d.pop("stage1")), stage2=StageSettings(**d.pop("stage2")), **d)


def preset(name: str = "paper", convention: str = "reference", partial: bool = False) -> RegistrationSettings:
    """Paper defaults (weights and learning rates of REFERENCE 2.3/2.4, 1000 + 1000 steps), or
    "preview" (the same losses, 250 + 250 steps with 4x the learning rates, for a quick look)."""
    steps = {"paper": 1000, "preview": 250}
    if name not in steps:
        raise ValueError(f"unknown preset {name!r}; choose {', '.join(steps)}")
    n = steps[name]
    if convention == "reference":
        p1, p2 = 3.0, 1.0
    else:
        p1 = p2 = 1.0
    lr = 1000 / n   # the same total travel in fewer steps
    s1 = StageSettings(n, 3e-2 * lr, 2e3, 2e5, 1e4, p1, converge=CONVERGED)
    s2 = StageSettings(n, 3e-4 * lr, 2e4, 2e4, 1e4, p2, converge=CONVERGED)
    if partial:  # stronger stage-1 regularisation and wider pruning for partial observations
        s1 = dataclasses.replace(s1, w_edge=8e5, w_laplacian=1e5, prune=10.0 if convention == "reference" else np.sqrt(10.0))
        s2 = dataclasses.replace(s2, prune=0.1)
    return RegistrationSettings(s1, s2, convention=convention, partial=partial,
                                refresh=10)


@dataclasses.dataclass
class RegistrationResult:
    stage1: np.ndarray          # (V, 3) vertices after stage 1
    final: np.ndarray           # (V, 3) vertices after stage 2
    displacement: np.ndarray    # (V, 3) final - base (object-space vector displacement)
    visibility: np.ndarray | None   # (V,) bool for partial fits: vertices supported by the cloud
    history: list[dict]         # per logged step: stage, step, loss terms
    untangled: int = 0          # vertices whose stage-2 displacement was shrunk to uncross the face


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    vn = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), n.repeat_interleave(3, 0))
    return vn / vn.norm(dim=1, keepdim=True).clamp_min(1e-12)


def hull_mask(points: np.ndarray, verts: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0]),
              scale: float = 1.5, low_quantile: float = 0.3) -> np.ndarray:
    """Vertices inside the cloud's convex hull scaled about its centre (points below the
    height quantile ignored when building the hull): who may move in a partial fit."""
    h = points @ up
    pts = points[h >= np.quantile(h, low_quantile)]
    centre = pts.mean(0)
    hull = ConvexHull(pts)
    scaled = centre + scale * (pts[hull.vertices] - centre)
    return Delaunay(scaled).find_simplex(verts) >= 0


def untangle(verts: np.ndarray, start: np.ndarray, faces: np.ndarray, region: np.ndarray,
             rounds: int = 6) -> tuple[np.ndarray, int]:
    """Halve, round by round, the move from `start` of the vertices of triangles in `region`
    that cross each other in `verts` but not in `start`; what still crosses goes back to
    `start`. Returns the vertices and how many were touched."""
    from .metrics import self_intersecting_pairs

    def new_crossings(v):
        pairs = self_intersecting_pairs(v, faces, region, within=True)
        return [p for p in map(tuple, pairs) if p not in before]

    before = set(map(tuple, self_intersecting_pairs(start, faces, region, within=True)))
    out = verts.copy()
    touched = np.zeros(len(out), bool)
    for k in range(rounds + 1):
        new = new_crossings(out)
        if not new:
            break
        vs = np.unique(faces[np.array(new).ravel()])
        touched[vs] = True
        out[vs] = start[vs] if k == rounds else start[vs] + 0.5 * (out[vs] - start[vs])
    return out, int(touched.sum())


def taper_weights(verts: np.ndarray, faces: np.ndarray, moving: np.ndarray, width: float) -> np.ndarray:
    """(V,) float32 weights of a stage's moves: 0 where vertices stay, rising linearly with the
    distance along the mesh's edges from them to 1 at `width` (0: the plain mask)."""
    w = moving.astype(np.float32)
    if width <= 0 or moving.all() or not moving.any():
        return w
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    length = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1) + 1e-9
    graph = coo_matrix((length, (e[:, 0], e[:, 1])), shape=(len(verts),) * 2).tocsr()
    # distances from the still vertices that border moving ones (enough sources, far fewer)
    still = ~moving
    border = np.unique(e[still[e[:, 0]] != still[e[:, 1]]].ravel())
    border = border[still[border]]
    d = dijkstra(graph, directed=False, indices=border, min_only=True, limit=width)
    w[moving] = np.clip(d[moving] / width, 0.0, 1.0)
    return w.astype(np.float32)


def _adam(params, lr):
    """Adam, fused into one kernel where this torch build has it (5x faster on the CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class Registration:
    """Runs both stages on one dense template and one scan (both (N, 3) HeadCraft units)."""

    def __init__(self, base: np.ndarray, faces: np.ndarray, regions: dict[str, np.ndarray],
                 scan: np.ndarray, settings: RegistrationSettings, device="cpu",
                 report: Callable[[float, str, str], None] | None = None,
                 scan_normals: np.ndarray | None = None):
        self.device = torch.device(device)
        self.scan_normals = None if scan_normals is None or settings.plane is None else \
            torch.as_tensor(scan_normals, dtype=torch.float32, device=self.device)
        self.settings = settings
        self.report = report or (lambda f, s, m: None)
        self.base = torch.as_tensor(base, dtype=torch.float32, device=self.device)
        self.faces = torch.as_tensor(faces, dtype=torch.long, device=self.device)
        self.scan = torch.as_tensor(scan, dtype=torch.float32, device=self.device)
        V = len(base)
        self.regulariser = MeshRegulariser(np.asarray(faces), V, self.device, settings.convention)
        region = lambda name: np.asarray(regions.get(name, []), np.int64)  # noqa: E731
        move1 = np.zeros(V, bool)
        move1[region("scalp")] = True
        move2 = np.zeros(V, bool)
        move2[np.concatenate([region("face"), region("scalp")])] = True
        for frozen in ("neck", "ears", "eyeballs", "inner_mouth"):
            move2[region(frozen)] = False
        if len(region("eyeballs")) and settings.lid_margin > 0:
            # The lid rims touch the eyeballs: moved along their normals they fold over them.
            near, _ = cKDTree(np.asarray(base)[region("eyeballs")]).query(np.asarray(base), workers=-1)
            move2[near < settings.lid_margin] = False
        self.support = None
        if settings.partial:
            self.support = hull_mask(np.asarray(scan), np.asarray(base))
            move1 &= self.support
            move2 &= self.support
        self.move1 = torch.as_tensor(move1, device=self.device)
        self.move2 = torch.as_tensor(move2, device=self.device)
        self.weight1, self.weight2 = (torch.as_tensor(taper_weights(np.asarray(base), np.asarray(faces), m,
                                                                    settings.taper), device=self.device)[:, None]
                                      for m in (move1, move2))
        self.history: list[dict] = []
        self.faces_np, self.face = np.asarray(faces), region("face")

    def _optimise(self, name: str, params: list[torch.Tensor], verts_fn, s: StageSettings, rest: torch.Tensor,
                  moving: torch.Tensor, progress0: float, progress1: float) -> torch.Tensor:
        """Adam on `params`. rest: the stage's starting mesh (the reference convention
        regularises the displacement from it); moving (V,) bool: the vertices this stage may
        move (the reference convention's template->scan term averages over them only)."""
        opt = _adam(params, s.lr)
        sched = None if s.decay_to is None else torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, s.steps), eta_min=s.lr * s.decay_to)
        self.regulariser.set_rest(rest)
        conv = self.settings.convention
        chamfer = PairedChamfer(self.scan, s.prune, conv, moving if conv == "reference" else None,
                                self.settings.refresh, self.settings.bruteforce, self.scan_normals,
                                self.settings.plane if self.settings.plane is not None else 1.0)
        losses: dict[int, float] = {}
        for step in range(s.steps):
            verts = verts_fn()
            lc = chamfer(verts)
            le, ll = self.regulariser(verts)
            loss = s.w_chamfer * lc + s.w_edge * le + s.w_laplacian * ll
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            converged = False
            if step % 10 == 0 or step == s.steps - 1:
                row = {"stage": name, "step": step, "loss": loss.item(), "chamfer": lc.item(),
                       "edge": le.item(), "laplacian": ll.item()}
                self.history.append(row)
                losses[step] = row["loss"]
                before = losses.get(step - CONVERGE_WINDOW)
                converged = s.converge > 0 and before is not None and before - row["loss"] < s.converge * before
                frac = progress0 + (progress1 - progress0) * (s.steps if converged else step + 1) / s.steps
                self.report(frac, name, f"step {step + 1}/{s.steps}  loss {row['loss']:.4g}  "
                                        f"chamfer {row['chamfer']:.4g}" + ("  (converged)" if converged else ""))
            if converged:
                row["converged"] = True
                break
        with torch.no_grad():
            return verts_fn()

    def run(self) -> RegistrationResult:
        s = self.settings
        gen = torch.Generator(device="cpu").manual_seed(s.seed)
        m1 = self.weight1
        D = (torch.randn(self.base.shape, generator=gen) * s.init_std).to(self.device).requires_grad_()
        stage1 = self._optimise("stage 1", [D], lambda: self.base + D * m1, s.stage1, self.base, self.move1, 0.0, 0.5)
        normals = vertex_normals(stage1, self.faces).detach()
        m2 = self.weight2
        width = 1 if s.stage2_mode == "scalar" else 3
        if s.stage2_mode not in ("scalar", "vector"):
            raise ValueError(f"stage2_mode must be 'scalar' or 'vector', got {s.stage2_mode!r}")
        alpha = torch.zeros(len(stage1), width, device=self.device, requires_grad=True)
        final = self._optimise("stage 2", [alpha], lambda: stage1 + alpha * normals * m2, s.stage2, stage1, self.move2, 0.5, 1.0)
        visibility = None
        if s.partial:
            t = 0.3 if s.sparse else 0.1
            d, _ = cKDTree(self.scan.cpu().numpy()).query(final.cpu().numpy(), workers=-1)
            visibility = d < t
        stage1_np, final_np = stage1.cpu().numpy(), final.cpu().numpy()
        untangled = 0
        if len(self.face) and s.untangle:
            self.report(0.99, "stage 2", "checking the face for crossed triangles")
            final_np, untangled = untangle(final_np, stage1_np, self.faces_np, self.face)
        return RegistrationResult(stage1=stage1_np, final=final_np,
                                  displacement=final_np - self.base.cpu().numpy(),
                                  visibility=visibility, history=self.history, untangled=untangled)
