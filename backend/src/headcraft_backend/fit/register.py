"""Two-stage high-detail displacement registration (paper sec. 3.1, supp. A.1/B.1).

Everything here is in HeadCraft units (units.py). Stage 1 moves the hair/scalp vertices (and,
in the default convention, the ears) freely (vector displacements); stage 2 moves face and hair
along the stage-1 normals. Frozen in stage 2: neck, ears, eyeballs, inner mouth.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial import ConvexHull, Delaunay, cKDTree

from ..head.topology import neighbour_table
from ..presets import PAPER_WEIGHTS
from ..units import MM_PER_UNIT
from .losses import MeshRegulariser, PairedChamfer, exact_search


CONVERGED = 0.002          # the presets' relative loss decrease per window that counts as converged
CONVERGE_WINDOW = 100      # steps
SMOOTH = 10.0              # the default convention's smoothness of steps (StageSettings.smooth)
W_FOLD = 100.0             # and its fold barrier's weight, both stages
HAIRLINE_BAND = 30.0 / MM_PER_UNIT   # face_bands
LID_BAND = 6.0 / MM_PER_UNIT         # face_bands
FAR_REACH = 300.0 / MM_PER_UNIT      # StageSettings.far of the default convention's stage 1


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
    # Barrier against folds: triangles whose normal turns past `fold_cos` (cosine) from the
    # fitted template's cost w_fold * (fold_cos - cos)^2 each (0: off).
    w_fold: float = 0.0
    fold_cos: float = 0.25
    # Optimise u = (I + smooth K) x instead of the displacement x itself, K the graph Laplacian
    # of the moving vertices (Nicolet et al. 2021, "Large Steps in Inverse Rendering"): Adam's
    # per-vertex steps become smooth moves, so no vertex runs ahead of its neighbours (0: off).
    smooth: float = 0.0
    # Chamfer form of this stage (losses.CONVENTIONS; None: the registration convention's).
    chamfer: str | None = None
    # Scan points up to this far (units) from the moving scalp keep their pairs past the pruning
    # radius (losses.PairedChamfer's far pairs; squared Chamfer only; 0: off).
    far: float = 0.0


@dataclasses.dataclass
class RegistrationSettings:
    stage1: StageSettings
    stage2: StageSettings
    convention: str = "default"       # see CONVENTIONS
    stage2_mode: str = "scalar"       # "scalar": alpha * n (paper); "vector": n * 3-vector (reference code)
    refresh: int = 10                 # CPU: nearest-neighbour pairs recomputed every N steps
    bruteforce: bool = False          # exact torch.cdist search every step (the benchmark baseline)
    init_std: float = 1e-4
    untangle: bool = True             # shrink stage-2 moves that cross face/hair triangles (see untangle)
    lid_margin: float = 0.1           # stage 2 also freezes face vertices this close to the eyeballs (units)
    stage1_regions: tuple[str, ...] = ("scalp",)   # what stage 1 moves (the paper: hair and scalp)
    partial: bool = False             # single depth view or sparse cloud (supp. B.1)
    sparse: bool = False              # with partial: a sparse cloud (proximity mask t = 0.3)
    seed: int = 0


# Loss forms (fit/losses.py) of each registration convention: (Chamfer, regularisers).
# "default": the paper's Chamfer (distances, pairs within 1 unit) with the published code's
#   regularisers on the displacement; its preset gives stage 1 the squared Chamfer and both
#   stages smooth steps and a fold barrier.
# "reference": the published code's losses as they are; "paper": the equations as printed.
CONVENTIONS = {"default": ("paper", "reference"), "reference": ("reference", "reference"),
               "paper": ("paper", "paper")}


def preset(name: str = "paper", convention: str = "default", partial: bool = False) -> RegistrationSettings:
    """Paper defaults (weights and learning rates of REFERENCE 2.3/2.4, 1000 + 1000 steps), or
    "preview" (the same losses, 250 + 250 steps with 4x the learning rates, for a quick look).

    The default convention's stage 2 differs from the paper's where real scans showed it must
    (see docs/USER_GUIDE.md, "How the fit works"): 10x the learning rate decayed to 1% (the paper's
    rate stops 0.5-2 mm short on a real face); smooth steps and a fold barrier in both stages."""
    steps = {"paper": 1000, "preview": 250}
    if name not in steps:
        raise ValueError(f"unknown preset {name!r}; choose {', '.join(steps)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose {', '.join(CONVENTIONS)}")
    n = steps[name]
    w1, w2 = PAPER_WEIGHTS["stage1"], PAPER_WEIGHTS["stage2"]
    squared = CONVENTIONS[convention][0] == "reference"
    p1, p2 = (w1["prune"], w2["prune"]) if squared else (1.0, 1.0)
    lr = 1000 / n   # the same total travel in fewer steps
    s1 = StageSettings(n, 3e-2 * lr, w1["w_chamfer"], w1["w_edge"], w1["w_laplacian"], p1, converge=CONVERGED)
    s2 = StageSettings(n, 3e-4 * lr, w2["w_chamfer"], w2["w_edge"], w2["w_laplacian"], p2, converge=CONVERGED)
    if convention == "default":
        # Stage 1 keeps the published code's squared Chamfer: it pulls far hair harder (long hair
        # on procedural scans: whole-head p95 1.5 mm, against 8 mm with distances). Smooth steps
        # and the fold barrier in both stages: without them stage 1 folded the scalp where it
        # meets the frozen ears (220 triangles on the Demosthenes bust), with them none.
        s1 = dataclasses.replace(s1, chamfer="reference", prune=w1["prune"], smooth=SMOOTH, w_fold=W_FOLD,
                                 far=0.0 if partial else FAR_REACH)
        s2 = dataclasses.replace(s2, lr=3e-3 * lr, decay_to=0.01, smooth=SMOOTH, w_fold=W_FOLD)
    if partial:  # stronger stage-1 regularisation and wider pruning for partial observations
        squared1 = (s1.chamfer or CONVENTIONS[convention][0]) == "reference"
        s1 = dataclasses.replace(s1, w_edge=8e5, w_laplacian=1e5, prune=10.0 if squared1 else np.sqrt(10.0))
        s2 = dataclasses.replace(s2, prune=0.1)
    # The default convention's paper preset also moves in stage 1 the ears (the model fits them
    # 2-3 mm off a real ear), the lips (the coarse fit can leave a lip a few mm proud, and stage
    # 2 cannot move a thin flap back along its normals without folding it), the face within
    # 30 mm of the scalp (hair over the temples and forehead) and the lids (face within 6 mm of
    # the eyeballs, which stage 2 keeps still); with smooth steps and the fold barrier they reach
    # the scan, and lids that would cross the eyeballs are untangled after stage 1 (Demosthenes:
    # face p95 2.31 -> 1.44 mm, scalp p95 2.22 -> 1.41 mm, ears median 2.6 -> 1.39 mm, no fold or
    # crossing). The preview preset's 4x steps fold the ear/scalp border (3 triangles), so
    # there they keep the coarse fit.
    regions = (("scalp", "ears", "lips", "hairline", "lids") if convention == "default" and name == "paper"
               else ("scalp",))
    return RegistrationSettings(s1, s2, convention=convention, partial=partial, refresh=10,
                                stage1_regions=regions)


@dataclasses.dataclass
class RegistrationResult:
    stage1: np.ndarray          # (V, 3) vertices after stage 1
    final: np.ndarray           # (V, 3) vertices after stage 2
    displacement: np.ndarray    # (V, 3) final - base (object-space vector displacement)
    visibility: np.ndarray | None   # (V,) bool for partial fits: vertices supported by the cloud
    history: list[dict]         # per logged step: stage, step, loss terms
    untangled: int = 0          # vertices whose moves were shrunk so that no triangles cross or turn over (untangle)


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
             rounds: int = 6, rest: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Halve, round by round, the move from `start` of the vertices of triangles in `region`
    that cross each other in `verts` but not in `start`, or whose normal turned over from
    the one in `rest` (default `start`; halving one vertex's move and not its neighbour's can
    fold a triangle); what is still wrong goes back to `start`. Returns the vertices and how
    many were touched."""
    from .metrics import self_intersecting_pairs
    inside = np.zeros(len(verts), bool)
    inside[region] = True
    tris = faces[inside[faces].any(1)]
    whole = inside[faces].all(1)          # triangles in the region: the crossings that count

    def normals(v):
        return np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])

    def wrong(v, moved):
        # After the first round only pairs with a triangle at a vertex just moved can be new.
        if moved is None:
            pairs = self_intersecting_pairs(v, faces, region, within=True)
        else:
            pairs = self_intersecting_pairs(v, faces, moved)
            pairs = pairs[whole[pairs].all(1)]
        new = np.array([p for p in map(tuple, pairs) if p not in before], np.int64).reshape(-1, 2)
        folded = tris[(normals(v) * rest_n).sum(1) < 0]
        return np.unique(np.r_[faces[new.ravel()].ravel(), folded.ravel()])

    before = set(map(tuple, self_intersecting_pairs(start, faces, region, within=True)))
    rest_n = normals(start if rest is None else rest)
    out = verts.copy()
    touched = np.zeros(len(out), bool)
    moved = None
    for k in range(rounds + 1):
        vs = wrong(out, moved)
        if not len(vs):
            break
        touched[vs] = True
        out[vs] = start[vs] if k == rounds else start[vs] + 0.5 * (out[vs] - start[vs])
        moved = vs
    return out, int(touched.sum())


class FoldBarrier:
    """Sum over the triangles touching `moving` vertices of relu(cos_min - cos)^2, where cos is
    between a triangle's normal now and in `rest`: zero until a triangle turns past the
    threshold, then rising steeply, so detail may tilt triangles but not flip them.

    Every `every` calls all of them are measured and only those within MARGIN of the threshold
    are evaluated until the next check (a triangle turns a few degrees per step at most; on a
    fitted head they are a few per cent of the triangles)."""

    MARGIN = 0.7

    def __init__(self, faces: torch.Tensor, moving: torch.Tensor, rest: torch.Tensor, cos_min: float,
                 every: int = 10):
        self.all_faces = faces[moving[faces].any(1)]
        self.all_rest = self._normals(rest.detach(), self.all_faces)
        self.cos_min = float(cos_min)
        self.every = max(1, int(every))
        self.calls = 0

    @staticmethod
    def _normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        t = verts[faces]
        n = torch.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], dim=1)
        return n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def __call__(self, verts: torch.Tensor) -> torch.Tensor:
        if self.calls % self.every == 0:
            with torch.no_grad():
                cos = (self._normals(verts, self.all_faces) * self.all_rest).sum(1)
                near = cos < self.cos_min + self.MARGIN
                self.faces, self.rest = self.all_faces[near], self.all_rest[near]
        self.calls += 1
        cos = (self._normals(verts, self.faces) * self.rest).sum(1)
        return torch.relu(self.cos_min - cos).square().sum()


class SmoothField:
    """x = (I + smooth K)^-1 u on a subset of a mesh's vertices (the rest held at zero), with
    its gradient; one sparse LU factorisation, two triangular solves per step each way, in
    single precision (the matrix is well conditioned: its eigenvalues lie in [1, 1 + 2 smooth
    max degree]; a third less time per step than double)."""

    def __init__(self, faces: np.ndarray, moving: np.ndarray, smooth: float):
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu
        from ..head.topology import adjacency, unique_edges
        A = adjacency(unique_edges(faces), len(moving))
        K = sp.diags(np.asarray(A.sum(1)).ravel()) - A   # rows keep edges to still vertices: x = 0 there
        idx = np.flatnonzero(moving)
        self.M = (sp.identity(len(idx)) + smooth * K[idx][:, idx]).tocsc()
        self.lu = splu(self.M.astype(np.float32), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})

    def to_parameter(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.M @ x.detach().cpu().double().numpy(), dtype=x.dtype).to(x.device)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.lu.solve(b.detach().cpu().float().numpy()), dtype=b.dtype).to(b.device)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return _Solve.apply(u, self)


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, field):
        ctx.field = field
        return field.solve(u)

    @staticmethod
    def backward(ctx, g):
        return ctx.field.solve(g), None    # the matrix is symmetric


def _adam(params, lr):
    """Adam, fused into one kernel where this torch build has it (5x faster on the CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def face_bands(base: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parts of the face that stage 1 may move (RegistrationSettings.stage1_regions), found on
    the fitted template (units): "hairline", the face vertices within HAIRLINE_BAND of the
    scalp, where hair, a fringe or sideburns may cover the skin and stage 2's moves along the
    normals cannot reach the hair's surface."""
    face = np.asarray(regions.get("face", []), np.int64)
    bands = {}
    for name, near, width in (("hairline", "scalp", HAIRLINE_BAND), ("lids", "eyeballs", LID_BAND)):
        other = np.asarray(regions.get(near, []), np.int64)
        if len(face) and len(other):
            d, _ = cKDTree(base[other]).query(base[face], workers=-1)
            bands[name] = face[d < width]
    return bands


class Registration:
    """Runs both stages on one dense template and one scan (both (N, 3) HeadCraft units)."""

    def __init__(self, base: np.ndarray, faces: np.ndarray, regions: dict[str, np.ndarray],
                 scan: np.ndarray, settings: RegistrationSettings, device="cpu",
                 report: Callable[[float, str, str], None] | None = None):
        self.device = torch.device(device)
        self.settings = settings
        self.report = report or (lambda f, s, m: None)
        self.base = torch.as_tensor(base, dtype=torch.float32, device=self.device)
        self.faces = torch.as_tensor(faces, dtype=torch.long, device=self.device)
        self.scan = torch.as_tensor(scan, dtype=torch.float32, device=self.device)
        V = len(base)
        if settings.convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {settings.convention!r}; choose {', '.join(CONVENTIONS)}")
        self.chamfer_form, regularise = CONVENTIONS[settings.convention]
        self.regulariser = MeshRegulariser(np.asarray(faces), V, self.device, regularise)
        regions = {**regions, **face_bands(np.asarray(base), regions)}
        region = lambda name: np.asarray(regions.get(name, []), np.int64)  # noqa: E731
        move1 = np.zeros(V, bool)
        for name in settings.stage1_regions:
            move1[region(name)] = True
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
        # lids moved in stage 1 are untangled from the (still) eyeballs after it
        self.lid_check = np.r_[region("lids"), region("eyeballs")] if "lids" in settings.stage1_regions else None
        far = np.zeros(V, bool)
        far[region("scalp")] = True
        self.far = torch.as_tensor(far & move1, device=self.device)   # who may take far pairs
        self.move2 = torch.as_tensor(move2, device=self.device)
        self.history: list[dict] = []
        self.faces_np = np.asarray(faces)
        # the template's neighbours, for the pair search's walks (not needed by an exact search)
        self.neighbours = (None if exact_search(self.scan, settings.bruteforce)
                           else torch.as_tensor(neighbour_table(self.faces_np, V)))
        # untangled after stage 2: what either stage moved, and the eyeballs the lids may cross
        self.checked = np.unique(np.concatenate([region(n) for n in ("face", "scalp", "eyeballs",
                                                                       *settings.stage1_regions)]))

    def _optimise(self, name: str, params: list[torch.Tensor], verts_fn, s: StageSettings, rest: torch.Tensor,
                  moving: torch.Tensor, progress0: float, progress1: float) -> torch.Tensor:
        """Adam on `params`. rest: the stage's starting mesh (the reference convention
        regularises the displacement from it); moving (V,) bool: the vertices this stage may
        move (the reference convention's template->scan term averages over them only)."""
        opt = _adam(params, s.lr)
        sched = None if s.decay_to is None else torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, s.steps), eta_min=s.lr * s.decay_to)
        self.regulariser.set_rest(rest)
        conv = s.chamfer or self.chamfer_form
        # folds count against the fitted template, so a triangle may not turn over in two halves
        fold = (FoldBarrier(self.faces, moving, self.base, s.fold_cos, self.settings.refresh)
                if s.w_fold > 0 else None)
        chamfer = PairedChamfer(self.scan, s.prune, conv, moving if conv == "reference" else None,
                                self.settings.refresh, self.settings.bruteforce,
                                far=(self.far & moving, s.far) if s.far > 0 else None,
                                neighbours=self.neighbours)
        losses: dict[int, float] = {}
        for step in range(s.steps):
            verts = verts_fn()
            lc = chamfer(verts)
            le, ll = self.regulariser(verts)
            loss = s.w_chamfer * lc + s.w_edge * le + s.w_laplacian * ll
            lf = fold(verts) if fold is not None else None
            if lf is not None:
                loss = loss + s.w_fold * lf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            converged = False
            if step % 10 == 0 or step == s.steps - 1:
                row: dict[str, Any] = {"stage": name, "step": step, "loss": loss.item(), "chamfer": lc.item(),
                       "edge": le.item(), "laplacian": ll.item(), "fold": 0.0 if lf is None else lf.item(),
                       "far_pairs": chamfer.far_pairs}
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

    def _field(self, start: torch.Tensor, moving: torch.Tensor, smooth: float):
        """The stage's parameter and a function of it giving the (V, k) displacement field."""
        if smooth <= 0:
            p = start.clone().requires_grad_()
            mask = moving[:, None].to(start.dtype)
            return p, lambda: p * mask
        sm = SmoothField(self.faces_np, moving.cpu().numpy(), smooth)
        rows = torch.nonzero(moving).squeeze(1)
        p = sm.to_parameter(start[rows]).requires_grad_()

        def field():
            return torch.zeros_like(start).index_copy(0, rows, sm(p))
        return p, field

    def run(self) -> RegistrationResult:
        s = self.settings
        gen = torch.Generator(device="cpu").manual_seed(s.seed)
        D0 = (torch.randn(self.base.shape, generator=gen) * s.init_std).to(self.device)
        D, field1 = self._field(D0, self.move1, s.stage1.smooth)
        stage1 = self._optimise("stage 1", [D], lambda: self.base + field1(), s.stage1, self.base, self.move1, 0.0, 0.5)
        untangled = 0
        if self.lid_check is not None and s.untangle:
            fixed, n = untangle(stage1.cpu().numpy(), self.base.cpu().numpy(), self.faces_np, self.lid_check)
            stage1, untangled = torch.as_tensor(fixed, device=self.device), n
        normals = vertex_normals(stage1, self.faces).detach()
        width = 1 if s.stage2_mode == "scalar" else 3
        if s.stage2_mode not in ("scalar", "vector"):
            raise ValueError(f"stage2_mode must be 'scalar' or 'vector', got {s.stage2_mode!r}")
        alpha, field2 = self._field(torch.zeros(len(stage1), width, device=self.device), self.move2, s.stage2.smooth)
        final = self._optimise("stage 2", [alpha], lambda: stage1 + field2() * normals, s.stage2, stage1, self.move2, 0.5, 1.0)
        visibility = None
        if s.partial:
            t = 0.3 if s.sparse else 0.1
            d, _ = cKDTree(self.scan.cpu().numpy()).query(final.cpu().numpy(), workers=-1)
            visibility = (d <= t) & self.support     # supp. B.1: m_final = m * [distance <= t]
        stage1_np, final_np = stage1.cpu().numpy(), final.cpu().numpy()
        if len(self.checked) and s.untangle:
            self.report(0.99, "stage 2", "checking face and hair for crossed triangles")
            final_np, n = untangle(final_np, stage1_np, self.faces_np, self.checked, rest=self.base.cpu().numpy())
            untangled += n
        return RegistrationResult(stage1=stage1_np, final=final_np,
                                  displacement=final_np - self.base.cpu().numpy(),
                                  visibility=visibility, history=self.history, untangled=untangled)
