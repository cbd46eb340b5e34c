"""Jobs of the generation capability: wire requests to sampling, interpolation, latent fitting
and hair transfer (generate/sample.py, fit_latent.py) applied to a head (layout/maps.py)."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..fit.depth import CAMERA_FORWARD, CAMERA_UP, Intrinsics
from ..fit.jobs import SCAN_PARAMS, directions
from ..fit.pipeline import fit_options
from ..fit.scan import sanitize
from ..handlers import CHECKPOINT, LAYOUT, MODEL, Param, job, request_base, request_head, request_map, vectors
from ..layout.maps import apply_map, bake_displacement, check_map
from .checkpoint import cached_generator
from .fit_latent import require_stylegan
from .fitted import HAIR_SOURCES, DetailedHead, fitted_styles, hair_transfer_map, head_map, interpolation_bases, \
    resized, styles_maps
from .networks import NOISE_MODES
from .sample import check_layout, interpolate_maps, sample_maps


HEAD = {**MODEL, **LAYOUT, **CHECKPOINT}
DEPTH_UNITS = {"mm": 1000.0, "cm": 100.0, "m": 1.0}     # depth units -> scan units per metre
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
                                                      "steps_z steps_delta steps_noise seed lr w_lpips w_l1 preserve face_pull noise_l2 "
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
    head = request_head(ctx, params)
    G, info = _stylegan(ctx, params, head)
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


TRANSFER_SIZE = 1024      # texels a side of the maps a hair transfer between detailed heads goes through
LPIPS = Param("bool", True, "latent fits with LPIPS (false: L1 only)")
FIT_STEPS = Param("int", 1000, "steps of each head's latent fit (the paper: 1000)", lo=1, hi=100_000)


def _detailed(head, arrays: dict, suffix: str) -> DetailedHead:
    n = head.dense.num_vertices
    return DetailedHead(vectors(arrays, f"base_{suffix}", n), vectors(arrays, f"displacement_{suffix}", n))


def _stylegan(ctx, params, head):
    G, info = cached_generator(ctx, params["checkpoint"])
    G = require_stylegan(G)
    check_layout(head.model.data, head.layout, G)
    return G, info


def _fit_heads(ctx, params, head, G, info, heads: list[DetailedHead], start: float, span: float):
    """Each head's map fitted to G (cached): [LatentFitResult], progress from start to start + span."""
    from .fit_latent import LatentFitSettings
    from .perceptual import load_lpips
    net, _ = load_lpips() if params["lpips"] else (None, "")
    settings = LatentFitSettings(steps_w=params["fit_steps"])
    out = []
    for i, d in enumerate(heads):
        lo = start + span * i / len(heads)
        report = lambda f, stage, msg, lo=lo, i=i: ctx.progress(  # noqa: E731
            lo + span / len(heads) * min(f / 0.3, 1.0), stage, f"head {i + 1} of {len(heads)}: {msg}")
        target = head_map(ctx, head, d, G.img_resolution)
        out.append(fitted_styles(ctx, G, f"{info['source']}:{params['checkpoint']}", target, settings, net, report))
    return out


@job("generate.interpolate_heads", {**HEAD, "steps": Param("int", 8, lo=2, hi=256), "fit_steps": FIT_STEPS,
                                    "lpips": LPIPS},
     arrays="two detailed heads: `base_a`, `displacement_a`, `base_b`, `displacement_b` (Vd,3)",
     result="fields `steps layout generator final_losses`; arrays `map_<i> (N,N,3)`, `base_<i>`, "
            "`displacement_<i> (Vd,3)`, `ws_a`, `ws_b (1,num_ws,w_dim)`, and once `dense_faces dense_uv base`",
     notes="Two detailed heads (e.g. fitted scans) each fitted to the generator (latent fitting of their "
           "object-space maps at its size, cached while the backend runs), then the styles interpolated in W+ "
           "and the identities blended (paper Fig. 11). Refused: a PCA checkpoint, heads of another dense size.")
def interpolate_heads_job(ctx, params, arrays):
    head = request_head(ctx, params)
    G, info = _stylegan(ctx, params, head)
    a, b = _detailed(head, arrays, "a"), _detailed(head, arrays, "b")
    fits = _fit_heads(ctx, params, head, G, info, [a, b], 0.05, 0.75)
    steps = params["steps"]
    maps, bases = styles_maps(G, fits[0].ws, fits[1].ws, steps), interpolation_bases(a, b, steps)
    out = {"ws_a": fits[0].ws.cpu().numpy(), "ws_b": fits[1].ws.cpu().numpy()}
    for i, (m, base) in enumerate(zip(maps, bases)):
        ctx.progress(0.8 + 0.15 * i / steps, "interpolate", f"step {i + 1} of {steps}")
        applied = apply_map(ctx, head, m, base, "object")
        out[f"map_{i}"], out[f"base_{i}"], out[f"displacement_{i}"] = m, base, applied["displacement"]
    out.update({"dense_faces": applied["dense_faces"], "dense_uv": applied["dense_uv"], "base": bases[0]})
    return {"steps": steps, "layout": head.layout.name, "generator": info["source"],
            "final_losses": [f.loss_history[-1] if f.loss_history else None for f in fits]}, out


@job("generate.transfer_hair", {**HEAD, "face_seed": Param("int", 0), "hair_seed": Param("int", 1), "psi": PSI,
                                "hair_source": Param("str", "generator", "with detailed heads: the driver's hair "
                                                     "from its latent fit (`generator`, the paper's) or its own "
                                                     "displacements (`map`)", choices=HAIR_SOURCES),
                                "fit_steps": FIT_STEPS, "lpips": LPIPS},
     arrays="two detailed heads (`base_face`, `displacement_face`: the source; `base_hair`, `displacement_hair`: "
            "the driver), or two maps `face_map`, `hair_map (N,N,3)`, or neither (then the seeds are sampled); "
            "optional `coarse_vertices (V,3)` (seeds and maps only)",
     result="field `layout`; arrays `map (N,N,3)` (the face map's left half, the hair map's right half), head "
            "arrays",
     notes="The face of one head with the hair (scalp chart) of another. With detailed heads the result is on "
           "the source's head: its own face, the driver's hair (sec. 4.4). Refused: maps of different sizes, not "
           "finite square 3-channel, or outside 64-8192 texels a side; a PCA checkpoint for `generator`.")
def transfer_hair_job(ctx, params, arrays):
    """The face of one head with the hair (scalp chart) of another: two detailed heads, two maps
    (`face_map`, `hair_map`), or two seeds of a generator."""
    head = request_head(ctx, params)
    if "base_face" in arrays or "base_hair" in arrays:
        source, driver = _detailed(head, arrays, "face"), _detailed(head, arrays, "hair")
        size = TRANSFER_SIZE      # the source's face keeps its detail; a generator's hair is upsampled
        if params["hair_source"] == "generator":
            G, info = _stylegan(ctx, params, head)
            size = max(size, G.img_resolution)
            hair = resized(_fit_heads(ctx, params, head, G, info, [driver], 0.05, 0.7)[0].map, size)
        else:
            check_layout(head.model.data, head.layout)
            hair = head_map(ctx, head, driver, size)
        m = hair_transfer_map(head_map(ctx, head, source, size), hair)
        out = apply_map(ctx, head, m, source.base, "object")
        out["map"] = m
        return {"layout": head.layout.name}, out
    if "face_map" in arrays and "hair_map" in arrays:
        check_layout(head.model.data, head.layout)
        maps = [check_map(arrays[k], k) for k in ("face_map", "hair_map")]
    else:
        G, _ = cached_generator(ctx, params["checkpoint"])
        check_layout(head.model.data, head.layout, G)
        seeds, psi = [params["face_seed"], params["hair_seed"]], params["psi"]
        maps = sample_maps(G, seeds, psi)
    m = hair_transfer_map(*maps)
    out = apply_map(ctx, head, m, request_base(ctx, head, arrays), "object")
    out["map"] = m
    return {"layout": head.layout.name}, out


@job("generate.complete", {**HEAD, **SCAN_PARAMS,
                           "preset": Param("str", "paper", "the partial registration's steps",
                                           choices=("paper", "preview")),
                           "sparse": Param("bool", False, "a sparse cloud (proximity threshold 0.3, not 0.1)"),
                           "num_points": Param("int", 200_000, "scan samples", lo=1000, hi=5_000_000),
                           "coarse": Param("dict", None, "fields of `CoarseSettings`, as for `fit.scan`"),
                           "stage1": Param("dict", None, "as for `fit.scan`"),
                           "stage2": Param("dict", None, "as for `fit.scan`"),
                           "intrinsics": Param("any", None, "with a `depth` array: `[fx, fy, cx, cy]` in pixels"),
                           "depth_units": Param("str", "m", "with a `depth` array: the unit of its values",
                                                choices=tuple(DEPTH_UNITS)),
                           "settings": Param("dict", None, "fields of `LatentFitSettings` (partial: `steps_z "
                                             "steps_delta steps_noise seed` ...)"),
                           "keep_observed": Param("bool", False, "the registered displacements where the scan saw "
                                                  "the head (the paper: the generator's everywhere)"),
                           "lpips": LPIPS},
     arrays="a partial scan (`vertices`, optional `faces`), or `depth (H,W)` (z-depth, 0 = no measurement) with "
            "the `intrinsics` param; optional hand-placed `landmark_ids (K,)` with `landmark_points (K,3)` (scan "
            "or camera frame)",
     result="fields `model version similarity {scale, rotation, translation} report notes layout generator seen "
            "final_loss`; arrays `dense_faces dense_uv base final displacement (Vd,3) visibility (Vd,) |u1 "
            "coarse_vertices (V,3) map partial_map (N,N,3) mask (N,N)`",
     notes="A partial scan or a single depth view completed into a whole detailed head (supp. B.1): partial "
           "registration, the visible part baked with its mask, the generator's masked latent fit (a PCA "
           "checkpoint: its masked least squares), applied to the fitted head. Refused: a depth image with NaN, "
           "infinite or negative values or no measured pixel, intrinsics that are not four numbers with positive "
           "focal lengths and the principal point in the image, fewer than 6 usable landmarks, a view of which "
           "nothing registers onto the head.")
def complete_job(ctx, params, arrays):
    from .complete import complete_scan, completion_options, depth_scan
    from .fit_latent import L1_ONLY, LatentFitSettings
    from .perceptual import load_lpips
    name = params.get("name") or "the scan"
    up, forward = directions(params)
    scale = (params.get("coarse") or {}).get("scale")
    if "depth" in arrays:
        k = params.get("intrinsics")
        if not (isinstance(k, list) and len(k) == 4 and all(isinstance(x, (int, float)) for x in k)):
            raise UserError("a depth image needs the `intrinsics` param: [fx, fy, cx, cy] in pixels")
        scan = depth_scan(arrays["depth"], Intrinsics(*map(float, k)), name)
        up, forward, scale = CAMERA_UP, CAMERA_FORWARD, DEPTH_UNITS[params["depth_units"]]
    elif "vertices" in arrays:
        scan = sanitize(arrays["vertices"], arrays.get("faces"), name=name)
    else:
        raise UserError("no scan was sent: a `vertices` array (a partial scan) or a `depth` image")
    manual = None
    if "landmark_ids" in arrays:
        ids, pts = arrays["landmark_ids"], arrays.get("landmark_points")
        if pts is None or np.shape(pts) != (len(ids), 3) or not np.isfinite(pts).all():
            raise UserError("hand-placed landmarks must be finite (K, 3) points, one per id")
        manual = {int(i): np.asarray(p, np.float64) for i, p in zip(ids, pts)}
    coarse = {**(params.get("coarse") or {}), **({} if scale is None else {"scale": scale})}
    fit = fit_options(params["preset"], partial=True, sparse=params["sparse"], num_points=params["num_points"],
                      up=up, forward=forward, seed=params.get("seed", 0), coarse=coarse or None,
                      stage1=params.get("stage1"), stage2=params.get("stage2"))
    try:
        latent = LatentFitSettings(**params.get("settings") or {})
    except TypeError as exc:
        raise UserError(f"bad latent-fit settings: {exc}") from None
    options = completion_options(fit, latent, keep_observed=params["keep_observed"])
    head = request_head(ctx, params)
    G, info = cached_generator(ctx, params["checkpoint"])
    check_layout(head.model.data, head.layout, G)
    net, why = load_lpips() if params["lpips"] else (None, "LPIPS off by request; L1 only")
    res = complete_scan(ctx, head, G, scan, options, manual, net)
    notes = list(res.notes)
    if why and L1_ONLY in notes:     # the specific reason replaces the generic note
        notes[notes.index(L1_ONLY)] = why
    sim = res.fit.coarse.similarity
    out = {"dense_faces": head.dense.faces.astype(np.int32), "dense_uv": head.dense.uv.astype(np.float32),
           "base": res.base.astype(np.float32), "final": res.final, "displacement": res.displacement,
           "visibility": res.visibility.astype(np.uint8), "coarse_vertices": res.fit.coarse.vertices.astype(np.float32),
           "map": res.map, "partial_map": res.partial_map, "mask": res.mask}
    return {"model": head.model.data.name, "version": head.model.data.version,
            "similarity": {"scale": sim.scale, "rotation": sim.rotation.ravel().tolist(),
                           "translation": sim.translation.tolist()},
            "report": res.fit.report, "notes": notes, "layout": head.layout.name, "generator": info["source"],
            "seen": float(res.visibility.mean()),
            "final_loss": res.loss_history[-1] if res.loss_history else None}, out
