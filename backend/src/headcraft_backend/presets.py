"""The weights of Fit Scan's paper preset (REFERENCE 2.3/2.4, HeadCraft units), stated once.

The registration presets (fit/register.py) and the coarse fit's defaults (fit/coarse.py) use
them; the extension gets a copy beside wire.py (`python build.py sync`) and shows them as the
Fit Scan panel's defaults. Stdlib only.
"""

PAPER_WEIGHTS = {
    # stage 1 prunes pairs whose squared distance is over 3 (the published code's Chamfer,
    # which the default convention keeps for stage 1)
    "stage1": {"w_chamfer": 2e3, "w_edge": 2e5, "w_laplacian": 1e4, "prune": 3.0},
    "stage2": {"w_chamfer": 2e4, "w_edge": 2e4, "w_laplacian": 1e4, "prune": 1.0},
    "coarse": {"w_landmarks": 1.0, "w_surface": 1.0, "w_shape": 1e-3, "w_expr": 1e-2, "w_pose": 1e-2,
               "w_jaw_side": 1.0},
}
