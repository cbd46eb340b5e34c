"""Jobs of the generation capability: wire requests to sampling, interpolation, latent fitting
and hair transfer (generate/sample.py, fit_latent.py) applied to a head (layout/maps.py)."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..handlers import job, request_base, request_head, request_map, vectors
from ..layout.maps import apply_map, bake_displacement, check_map
from .checkpoint import cached_generator
from .pca import PCAModel
from .sample import interpolate_maps, sample_maps, transfer_hair


@job("generate.sample")
def sample_job(ctx, params, arrays):
    """A generated map (seed, psi in W, optional style mixing) applied to a head: the request's
    coarse head (current identity/expression) or the model's template."""
    G, info = cached_generator(ctx, str(params.get("checkpoint", "")))
    psi = float(params.get("psi", 0.7))
    seed = int(params.get("seed", 0))
    mix_seed = params.get("mix_seed")
    ctx.progress(0.2, "generate", f"seed {seed}, psi {psi}")
    m = sample_maps(G, [seed], psi, params.get("noise", "const"), None if mix_seed is None else int(mix_seed),
                    params.get("mix_from"), lowpass=bool(params.get("lowpass", True)))[0]
    head = request_head(ctx, params)
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), "object")
    out["map"] = m
    return {"seed": seed, "psi": psi, "layout": head.layout.name, "size": int(m.shape[0]),
            "generator": info["source"]}, out


@job("generate.interpolate")
def interpolate_job(ctx, params, arrays):
    """Maps between two seeds (lerp in W, or slerp in Z), each applied to the request's head:
    arrays map_<i>, displacement_<i> (metres) and the shared dense mesh."""
    G, info = cached_generator(ctx, str(params.get("checkpoint", "")))
    steps = int(params.get("steps", 8))
    if not 2 <= steps <= 256:
        raise UserError("interpolation steps: 2 to 256")
    space = params.get("space", "w")
    if space not in ("w", "z"):
        raise UserError("interpolation space: 'w' (lerp) or 'z' (slerp)")
    seeds, psi = (int(params.get("seed_a", 0)), int(params.get("seed_b", 1))), float(params.get("psi", 0.7))
    maps = interpolate_maps(G, *seeds, steps, psi, space)
    head = request_head(ctx, params)
    base = request_base(ctx, head, arrays)
    out = {}
    for i, m in enumerate(maps):
        ctx.progress(0.3 + 0.6 * i / steps, "interpolate", f"step {i + 1} of {steps}")
        applied = apply_map(ctx, head, m, base, "object")
        out[f"map_{i}"], out[f"displacement_{i}"] = m, applied["displacement"]
    out.update({k: applied[k] for k in ("dense_faces", "dense_uv", "base")})
    return {"steps": steps, "space": space, "layout": head.layout.name, "generator": info["source"]}, out


@job("generate.fit_latent")
def fit_latent_job(ctx, params, arrays):
    """Styles for a map (a fitted scan's bake, or any map file), optionally partial with a
    visibility mask; the generator's version of the map comes back applied to the head."""
    from .fit_latent import L1_ONLY, LatentFitSettings, fit_latent
    from .perceptual import load_lpips
    G, info = cached_generator(ctx, str(params.get("checkpoint", "")))
    if isinstance(G, PCAModel):
        raise UserError("latent fitting needs a StyleGAN checkpoint")
    head = request_head(ctx, params)
    if "base" in arrays and "displacement" in arrays:     # a detailed head: bake it at the generator's size
        n = head.dense.num_vertices
        baked = bake_displacement(ctx, head, G.img_resolution, vectors(arrays, "base", n),
                                  vectors(arrays, "displacement", n), arrays.get("visibility"))
        target = baked["map"]
        if "visibility_map" in baked and "mask" not in arrays:
            arrays = {**arrays, "mask": (baked["visibility_map"] > 0.5).astype(np.float32)}
    else:
        target = request_map(arrays)
    if target.shape[0] != G.img_resolution:
        raise UserError(f"the map is {target.shape[0]}^2; this generator makes {G.img_resolution}^2 maps "
                        f"(bake the map at that size)")
    mask = arrays.get("mask")
    if mask is not None and np.shape(mask) != target.shape[:2]:
        raise UserError(f"the mask is {np.shape(mask)}; the map is {target.shape[:2]}")
    try:
        settings = LatentFitSettings(**params.get("settings", {}))
    except TypeError as exc:
        raise UserError(f"bad latent-fit settings: {exc}") from None
    net, why = load_lpips() if params.get("lpips", True) else (None, "LPIPS off by request; L1 only")
    res = fit_latent(G, target, mask, settings, net,
                     report=lambda f, stage, msg: ctx.progress(0.05 + 0.8 * f, stage, msg))
    if why:     # the specific reason replaces the generic note
        res.notes[res.notes.index(L1_ONLY)] = why
    out = apply_map(ctx, head, res.map, request_base(ctx, head, arrays), "object")
    out.update({"map": res.map, "ws": res.ws.numpy().astype(np.float32)})
    return {"notes": res.notes, "final_loss": res.loss_history[-1] if res.loss_history else None,
            "layout": head.layout.name}, out


@job("generate.transfer_hair")
def transfer_hair_job(ctx, params, arrays):
    """The face of one head with the hair (scalp chart) of another: two maps (`face_map`,
    `hair_map`), or two seeds of a generator; applied to the request's head."""
    if "face_map" in arrays and "hair_map" in arrays:
        maps = [check_map(arrays[k], k) for k in ("face_map", "hair_map")]
    else:
        G, _ = cached_generator(ctx, str(params.get("checkpoint", "")))
        seeds, psi = [int(params.get("face_seed", 0)), int(params.get("hair_seed", 1))], float(params.get("psi", 0.7))
        maps = sample_maps(G, seeds, psi)
    try:
        m = transfer_hair(*maps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    head = request_head(ctx, params)
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), "object")
    out["map"] = m
    return {"layout": head.layout.name}, out
