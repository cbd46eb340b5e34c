"""Jobs of the generation capability: wire requests to sampling, interpolation, latent fitting
and hair transfer (generate/sample.py, fit_latent.py) applied to a head (layout/maps.py)."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..handlers import CHECKPOINT, LAYOUT, MODEL, Param, job, request_base, request_head, request_map, vectors
from ..layout.maps import apply_map, bake_displacement, check_map
from .checkpoint import cached_generator
from .networks import NOISE_MODES
from .pca import PCAModel
from .sample import check_layout, interpolate_maps, sample_maps, transfer_hair


HEAD = {**MODEL, **LAYOUT, **CHECKPOINT}
PSI = Param("float", 0.7, "truncation in W (0: the average head)", lo=-1, hi=2)


@job("generate.sample", {**HEAD, "seed": Param("int", 0), "psi": PSI,
                         "noise": Param("str", "const", "scalp noise", choices=NOISE_MODES),
                         "mix_seed": Param("int", None, "style mixing: styles from `mix_from` on come from this seed"),
                         "mix_from": Param("int", None, "the first mixed layer (default half the generator's)", lo=0),
                         "lowpass": Param("bool", True, "the face half's extra smoothing")},
     arrays="optional `coarse_vertices (V,3)`",
     result="fields `seed psi layout size generator`; arrays `map (N,N,3)`, head arrays",
     notes="A generated map applied to a head: the request's coarse head or the model's template. Refused: "
           "`mix_from` beyond the generator's layers, `mix_seed` with a PCA checkpoint. A PCA ignores `noise` "
           "and `lowpass`.")
def sample_job(ctx, params, arrays):
    """A generated map (seed, psi in W, optional style mixing) applied to a head: the request's
    coarse head (current identity/expression) or the model's template."""
    G, info = cached_generator(ctx, params["checkpoint"])
    head = request_head(ctx, params)
    check_layout(head.model.data, head.layout, G)
    seed, psi = params["seed"], params["psi"]
    ctx.progress(0.2, "generate", f"seed {seed}, psi {psi}")
    m = sample_maps(G, [seed], psi, params["noise"], params.get("mix_seed"), params.get("mix_from"),
                    lowpass=params["lowpass"])[0]
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), "object")
    out["map"] = m
    return {"seed": seed, "psi": psi, "layout": head.layout.name, "size": int(m.shape[0]),
            "generator": info["source"]}, out


@job("generate.interpolate", {**HEAD, "seed_a": Param("int", 0), "seed_b": Param("int", 1),
                              "steps": Param("int", 8, lo=2, hi=256),
                              "space": Param("str", "w", "`w`: lerp in W, `z`: slerp in Z", choices=("w", "z")),
                              "psi": PSI},
     arrays="optional `coarse_vertices (V,3)`",
     result="fields `steps space layout generator`; arrays `map_<i> (N,N,3)`, `displacement_<i> (Vd,3)`, and "
            "once `dense_faces dense_uv base`",
     notes="Maps between two seeds, each applied to the request's head. A PCA ignores `space`.")
def interpolate_job(ctx, params, arrays):
    """Maps between two seeds (lerp in W, or slerp in Z), each applied to the request's head:
    arrays map_<i>, displacement_<i> (metres) and the shared dense mesh."""
    G, info = cached_generator(ctx, params["checkpoint"])
    steps, space, psi = params["steps"], params["space"], params["psi"]
    seeds = (params["seed_a"], params["seed_b"])
    head = request_head(ctx, params)
    check_layout(head.model.data, head.layout, G)
    maps = interpolate_maps(G, *seeds, steps, psi, space)
    base = request_base(ctx, head, arrays)
    out = {}
    for i, m in enumerate(maps):
        ctx.progress(0.3 + 0.6 * i / steps, "interpolate", f"step {i + 1} of {steps}")
        applied = apply_map(ctx, head, m, base, "object")
        out[f"map_{i}"], out[f"displacement_{i}"] = m, applied["displacement"]
    out.update({k: applied[k] for k in ("dense_faces", "dense_uv", "base")})
    return {"steps": steps, "space": space, "layout": head.layout.name, "generator": info["source"]}, out


@job("generate.fit_latent", {**HEAD, "settings": Param("dict", None, "fields of `LatentFitSettings`: `steps_w "
                                                      "steps_z steps_noise lr w_lpips w_l1 preserve face_pull noise_l2 "
                                                      "avg_samples`"),
                             "lpips": Param("bool", True, "false: L1 only")},
     arrays="a detailed head (`base`, `displacement (Vd,3)`, optional `visibility (Vd,)`; baked in object space "
            "at the generator's size) or a map; optional `mask (N,N)` (visible texels; from `visibility` when not "
            "sent); optional `coarse_vertices (V,3)`",
     result="fields `notes final_loss layout`; arrays `map (N,N,3)`, `ws (1,num_ws,w_dim)`, head arrays",
     notes="Styles for a map, optionally partial with a visibility mask; the generator's version of the map "
           "comes back applied to the head. Refused: a PCA checkpoint, a map of another size than the "
           "generator's, a mask of another shape, an unknown settings field. Settings values are not "
           "range-checked.")
def fit_latent_job(ctx, params, arrays):
    """Styles for a map (a fitted scan's bake, or any map file), optionally partial with a
    visibility mask; the generator's version of the map comes back applied to the head."""
    from .fit_latent import L1_ONLY, LatentFitSettings, fit_latent
    from .perceptual import load_lpips
    G, info = cached_generator(ctx, params["checkpoint"])
    if isinstance(G, PCAModel):
        raise UserError("latent fitting needs a StyleGAN checkpoint")
    head = request_head(ctx, params)
    check_layout(head.model.data, head.layout, G)
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
        settings = LatentFitSettings(**params.get("settings") or {})
    except TypeError as exc:
        raise UserError(f"bad latent-fit settings: {exc}") from None
    net, why = load_lpips() if params["lpips"] else (None, "LPIPS off by request; L1 only")
    res = fit_latent(G, target, mask, settings, net,
                     report=lambda f, stage, msg: ctx.progress(0.05 + 0.8 * f, stage, msg))
    if why:     # the specific reason replaces the generic note
        res.notes[res.notes.index(L1_ONLY)] = why
    out = apply_map(ctx, head, res.map, request_base(ctx, head, arrays), "object")
    out.update({"map": res.map, "ws": res.ws.numpy().astype(np.float32)})
    return {"notes": res.notes, "final_loss": res.loss_history[-1] if res.loss_history else None,
            "layout": head.layout.name}, out


@job("generate.transfer_hair", {**HEAD, "face_seed": Param("int", 0), "hair_seed": Param("int", 1), "psi": PSI},
     arrays="optional `face_map`, `hair_map (N,N,3)` (both, or neither: then the seeds are sampled); optional "
            "`coarse_vertices (V,3)`",
     result="field `layout`; arrays `map (N,N,3)` (the face map's left half, the hair map's right half), head "
            "arrays",
     notes="The face of one head with the hair (scalp chart) of another. Refused: maps of different sizes, not "
           "finite square 3-channel, or outside 64-8192 texels a side.")
def transfer_hair_job(ctx, params, arrays):
    """The face of one head with the hair (scalp chart) of another: two maps (`face_map`,
    `hair_map`), or two seeds of a generator; applied to the request's head."""
    head = request_head(ctx, params)
    if "face_map" in arrays and "hair_map" in arrays:
        check_layout(head.model.data, head.layout)
        maps = [check_map(arrays[k], k) for k in ("face_map", "hair_map")]
    else:
        G, _ = cached_generator(ctx, params["checkpoint"])
        check_layout(head.model.data, head.layout, G)
        seeds, psi = [params["face_seed"], params["hair_seed"]], params["psi"]
        maps = sample_maps(G, seeds, psi)
    try:
        m = transfer_hair(*maps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), "object")
    out["map"] = m
    return {"layout": head.layout.name}, out
