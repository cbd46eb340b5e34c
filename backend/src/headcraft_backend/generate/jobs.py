"""Jobs of the generation capability: sample a detailed head from a generator checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cache import cached_by_files
from ..layout.jobs import _layout, apply_map, bake_displacement, check_map, read_map_arrays, request_base
from ..service.jobs import UserError, job
from . import checkpoint
from .networks import NOISE_MODES
from .pca import PCAModel
from .sample import generate_maps, interpolate_maps, transfer_hair


def get_generator(ctx, path: str):
    """The generator of a checkpoint on the backend's machine (none: the bundled demo model),
    cached until one of its files changes (then the new one replaces it)."""
    if not path:
        if not checkpoint.DEMO_MODEL.is_file():
            raise UserError("no generator checkpoint is set and this backend has no demo model "
                            f"({checkpoint.DEMO_MODEL.name}): choose one (our .json/.safetensors, or a published "
                            ".ckpt with its ema_*.pth beside it), remake the demo model with "
                            "'python build.py demo-model', or train one with 'headcraft-backend train'")
        path = str(checkpoint.DEMO_MODEL)
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found (paths are on the backend's machine)")

    def load():
        ctx.progress(0.05, "checkpoint", f"loading {p.name}")
        try:
            G, info = checkpoint.load(p)
        except checkpoint.CheckpointError as exc:
            raise UserError(str(exc)) from None
        return G.to(ctx.device) if hasattr(G, "to") else G, {"source": p.name, **info}
    return cached_by_files(ctx.cache, ("generator", str(p.resolve()), str(ctx.device)),
                           checkpoint.files_of(p), load)


@job("generate.sample")
def sample_job(ctx, params, arrays):
    """A generated map (seed, psi in W, optional style mixing) applied to a head: the request's
    coarse head (current identity/expression) or the model's template."""
    G, info = get_generator(ctx, str(params.get("checkpoint", "")))
    noise = params.get("noise", "const")
    if noise not in NOISE_MODES:
        raise UserError(f"noise {noise!r}: choose one of {', '.join(NOISE_MODES)}")
    psi = float(params.get("psi", 0.7))
    seed = int(params.get("seed", 0))
    mix_seed = params.get("mix_seed")
    num_ws = getattr(G, "num_ws", 0)
    mix_from = int(params.get("mix_from", num_ws // 2))
    if not 0 <= mix_from <= num_ws:
        raise UserError(f"style mixing starts at a layer from 0 to {num_ws}")
    ctx.progress(0.2, "generate", f"seed {seed}, psi {psi}")
    if isinstance(G, PCAModel):
        if mix_seed is not None:
            raise UserError("style mixing needs a StyleGAN; the PCA baseline has no styles")
        m = G.sample([seed], psi)[0]
    else:
        m = generate_maps(G, [seed], psi, noise, None if mix_seed is None else int(mix_seed), mix_from,
                          lowpass=bool(params.get("lowpass", True)))[0]
    model, dense, layout = _layout(ctx, params)
    out = apply_map(ctx, model, dense, layout, m, request_base(ctx, model, dense, arrays), "object")
    out["map"] = m
    return {"seed": seed, "psi": psi, "layout": layout.name, "size": int(m.shape[0]),
            "generator": info["source"]}, out


@job("generate.interpolate")
def interpolate_job(ctx, params, arrays):
    """Maps between two seeds (lerp in W, or slerp in Z), each applied to the request's head:
    arrays map_<i>, displacement_<i> (metres) and the shared dense mesh."""
    G, info = get_generator(ctx, str(params.get("checkpoint", "")))
    steps = int(params.get("steps", 8))
    if not 2 <= steps <= 256:
        raise UserError("interpolation steps: 2 to 256")
    space = params.get("space", "w")
    if space not in ("w", "z"):
        raise UserError("interpolation space: 'w' (lerp) or 'z' (slerp)")
    seeds, psi = (int(params.get("seed_a", 0)), int(params.get("seed_b", 1))), float(params.get("psi", 0.7))
    if isinstance(G, PCAModel):
        maps = G.interpolate(*seeds, steps, psi)
    else:
        maps = interpolate_maps(G, *seeds, steps, psi, space)
    model, dense, layout = _layout(ctx, params)
    base = request_base(ctx, model, dense, arrays)
    out = {}
    for i, m in enumerate(maps):
        ctx.progress(0.3 + 0.6 * i / steps, "interpolate", f"step {i + 1} of {steps}")
        applied = apply_map(ctx, model, dense, layout, m, base, "object")
        out[f"map_{i}"], out[f"displacement_{i}"] = m, applied["displacement"]
    out.update({k: applied[k] for k in ("dense_faces", "dense_uv", "base")})
    return {"steps": steps, "space": space, "layout": layout.name, "generator": info["source"]}, out


@job("generate.fit_latent")
def fit_latent_job(ctx, params, arrays):
    """Styles for a map (a fitted scan's bake, or any map file), optionally partial with a
    visibility mask; the generator's version of the map comes back applied to the head."""
    from .fit_latent import L1_ONLY, LatentFitSettings, fit_latent
    from .perceptual import load_lpips
    G, info = get_generator(ctx, str(params.get("checkpoint", "")))
    if isinstance(G, PCAModel):
        raise UserError("latent fitting needs a StyleGAN checkpoint")
    model, dense, layout = _layout(ctx, params)
    if "base" in arrays and "displacement" in arrays:     # a detailed head: bake it at the generator's size
        baked = bake_displacement(ctx, model, dense, layout, G.img_resolution, arrays)
        target = baked["map"]
        if "visibility_map" in baked and "mask" not in arrays:
            arrays = {**arrays, "mask": (baked["visibility_map"] > 0.5).astype(np.float32)}
    else:
        target = read_map_arrays(arrays)
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
    out = apply_map(ctx, model, dense, layout, res.map, request_base(ctx, model, dense, arrays), "object")
    out.update({"map": res.map, "ws": res.ws.numpy().astype(np.float32)})
    return {"notes": res.notes, "final_loss": res.loss_history[-1] if res.loss_history else None,
            "layout": layout.name}, out


@job("generate.transfer_hair")
def transfer_hair_job(ctx, params, arrays):
    """The face of one head with the hair (scalp chart) of another: two maps (`face_map`,
    `hair_map`), or two seeds of a generator; applied to the request's head."""
    if "face_map" in arrays and "hair_map" in arrays:
        maps = [check_map(arrays[k], k) for k in ("face_map", "hair_map")]
    else:
        G, _ = get_generator(ctx, str(params.get("checkpoint", "")))
        seeds, psi = [int(params.get("face_seed", 0)), int(params.get("hair_seed", 1))], float(params.get("psi", 0.7))
        maps = G.sample(seeds, psi) if isinstance(G, PCAModel) else generate_maps(G, seeds, psi)
    try:
        m = transfer_hair(*maps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    model, dense, layout = _layout(ctx, params)
    out = apply_map(ctx, model, dense, layout, m, request_base(ctx, model, dense, arrays), "object")
    out["map"] = m
    return {"layout": layout.name}, out
