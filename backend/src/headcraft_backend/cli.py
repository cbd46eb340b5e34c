"""`headcraft-backend` command line."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import secrets
import sys
from pathlib import Path

from . import __version__

TOKEN_ENV = "HEADCRAFT_TOKEN"


def _read_token(args) -> str:
    """The token comes from the environment, stdin, or is generated and written to a 0600 file;
    it never appears on the command line or in logs."""
    token = os.environ.pop(TOKEN_ENV, "")
    if not token and args.token_stdin:
        token = sys.stdin.readline().strip()
    if not token:
        token = secrets.token_urlsafe(32)
        path = Path(args.token_file).expanduser()
        write_token_file(path, token)
        print(f"token written to {path} (copy it into the add-on preferences)", flush=True)
    return token


def write_token_file(path: Path, token: str) -> None:
    """A new 0600 file (mkstemp's mode) renamed over `path`: never through a symbolic link,
    never keeping an older file's wider mode, never half written."""
    from .cache import write_atomic
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; the token is not written through one (remove it "
                      f"or choose another --token-file)")
    write_atomic(path, lambda tmp: Path(tmp).write_text(token + "\n"), required=True)


def cmd_serve(args) -> int:
    from .errors import UserError
    from .service.server import Server
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=args.log_file or None)
    try:
        token = _read_token(args)
    except OSError as exc:
        print(f"headcraft-backend: cannot write the token: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        server = Server(token, host=args.host, port=args.port, device=args.device,
                        max_payload=args.max_frame_mb << 20, parent_pid=args.parent_pid)
    except (UserError, OSError) as exc:
        print(f"headcraft-backend: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    server.serve_forever(ready=lambda line: print(line, flush=True))
    return 0


def cmd_info(args) -> int:
    from .compute import describe_device, resolve_device
    from .service.server import load_all
    info = {"backend_version": __version__, **describe_device(resolve_device(args.device)),
            "jobs": sorted(load_all())}
    print(json.dumps(info, indent=2))
    return 0


def _compute(device: str = "auto"):
    """Where a command's work runs: the device, a cache, progress lines every 2 %."""
    from .compute import Compute, print_progress
    last = [-1.0]

    def send(event):
        if event["fraction"] - last[0] >= 0.02 or event["fraction"] >= 1.0:
            last[0] = event["fraction"]
            print_progress(event)
    return Compute(device, send=send, interval=0.0)


def _user_errors(what: str):
    """A command whose UserErrors (bad input, missing files) print one line and exit with 2."""
    def wrap(fn):
        def run(args) -> int:
            from .errors import UserError
            try:
                return fn(args)
            except UserError as exc:
                print(f"headcraft-backend {what}: {exc}", file=sys.stderr)
                return 2
        return run
    return wrap


def _model_params(args) -> dict:
    params = {"model": args.model}
    if args.model == "flame":
        d = Path(args.flame_dir).expanduser()
        model = next((d / n for n in ("flame2023.pkl", "generic_model.pkl") if (d / n).exists()), d / "generic_model.pkl")
        lmk = d / "mediapipe_landmark_embedding.npz"
        params["flame"] = {"model_path": str(model), "masks_path": str(d / "FLAME_masks.pkl"),
                           "uv_path": str(d / "head_template.obj"),
                           "landmark_path": str(lmk) if lmk.exists() else ""}
    return params


UNITS_PER_METRE_OF = {"mm": 1000.0, "cm": 100.0, "m": 1.0}
DIRECTION_HELP = ("auto (search every axis for the face), an axis (+X, -Z, Y, ...; write --up=-Z for a "
                  "negative one) or three numbers X Y Z")


def parse_direction(words) -> tuple[float, float, float] | None:
    """An --up/--forward value: auto (None), an axis (+X, -Z, Y, ...) or three numbers (X Y Z,
    or X,Y,Z). Raises ValueError."""
    text = " ".join(words).replace(",", " ").strip()
    if text.lower() == "auto":
        return None
    name = text.lower().lstrip("+-")
    if name in ("x", "y", "z") and len(text) <= 2:
        axis = [0.0, 0.0, 0.0]
        axis["xyz".index(name)] = -1.0 if text.startswith("-") else 1.0
        x, y, z = axis
        return x, y, z
    d: tuple[float, ...]
    try:
        d = tuple(float(w) for w in text.split())
    except ValueError:
        d = ()
    if len(d) != 3 or not all(math.isfinite(x) for x in d) or not any(d):
        raise ValueError(f"{' '.join(words)!r} is not a direction: use {DIRECTION_HELP}")
    return d


@_user_errors("fit")
def cmd_fit(args) -> int:
    import numpy as np
    from .fit.landmark_file import read_landmark_file
    from .fit.pipeline import fit_options, fit_scan, format_report
    from .fit.scan import load_scan_file
    from .head.dense import dense_template
    from .head.registry import get_model
    try:
        up, forward = parse_direction(args.up), parse_direction(args.forward)
    except ValueError as exc:
        print(f"headcraft-backend fit: --up/--forward: {exc}", file=sys.stderr)
        return 2
    scan = load_scan_file(args.scan)
    steps = {"steps": args.steps} if args.steps else None
    options = fit_options(args.preset, args.convention, partial=args.partial != "none",
                          sparse=args.partial == "sparse", up=up, forward=forward, stage1=steps, stage2=steps,
                          coarse=None if args.units == "auto" else {"scale": UNITS_PER_METRE_OF[args.units]})
    manual = read_landmark_file(args.landmarks) if args.landmarks else None
    compute = _compute(args.device)
    model = get_model(compute, _model_params(args))
    dense = dense_template(model.data)
    res = fit_scan(model, dense, scan, options, manual, report=compute.progress, device=compute.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.scan).stem
    sim = res.coarse.similarity
    _write_obj(out_dir / f"{stem}_detailed.obj", sim.apply(res.final), dense.faces)
    _write_obj(out_dir / f"{stem}_fitted.obj", sim.apply(res.base), dense.faces)
    np.savez_compressed(out_dir / f"{stem}_fit.npz", **res.arrays(dense), shape=res.coarse.shape, expr=res.coarse.expr,
                        pose=res.coarse.pose, scale=sim.scale, rotation=sim.rotation, translation=sim.translation)
    (out_dir / f"{stem}_report.json").write_text(json.dumps(
        {"model": model.data.name, "version": model.data.version, "report": res.report, "notes": res.notes,
         "landmarks_used": res.landmarks_used, "landmark_rmse_mm": res.coarse.landmark_rmse_mm,
         "surface_median_mm": res.coarse.surface_median_mm}, indent=2))
    print(format_report(res.report))
    print(f"wrote {out_dir}/{stem}_detailed.obj, _fitted.obj, _fit.npz, _report.json")
    return 0


@_user_errors("complete")
def cmd_complete(args) -> int:
    import numpy as np
    from .errors import UserError
    from .fit.depth import CAMERA_FORWARD, CAMERA_UP, Intrinsics, read_depth_file
    from .fit.landmark_file import read_landmark_file
    from .fit.pipeline import fit_options, format_report
    from .fit.scan import load_scan_file
    from .generate.checkpoint import cached_generator
    from .generate.complete import complete_scan, completion_options, depth_scan
    from .generate.fit_latent import L1_ONLY, LatentFitSettings
    from .generate.perceptual import load_lpips
    if bool(args.scan) == bool(args.depth):
        raise UserError("give a partial scan file or --depth FILE (one of them)")
    up: tuple[float, float, float] | None
    forward: tuple[float, float, float] | None
    scale: float | None
    if args.depth:
        if not args.intrinsics:
            raise UserError("--depth needs --intrinsics fx,fy,cx,cy (pixels)")
        scan = depth_scan(read_depth_file(args.depth, args.depth_scale), Intrinsics.parse(args.intrinsics),
                          Path(args.depth).name)
        up, forward, scale = CAMERA_UP, CAMERA_FORWARD, UNITS_PER_METRE_OF[args.depth_units]
        source = args.depth
    else:
        try:
            up, forward = parse_direction(args.up), parse_direction(args.forward)
        except ValueError as exc:
            raise UserError(f"--up/--forward: {exc}") from None
        scan = load_scan_file(args.scan)
        scale = None if args.units == "auto" else UNITS_PER_METRE_OF[args.units]
        source = args.scan
    steps = {"steps": args.steps} if args.steps else None
    fit = fit_options(args.preset, partial=True, sparse=args.sparse, up=up, forward=forward, stage1=steps,
                      stage2=steps, coarse=None if scale is None else {"scale": scale})
    latent = LatentFitSettings(steps_z=args.latent_steps // 2, steps_delta=args.latent_steps // 2,
                               steps_noise=args.noise_steps, seed=args.seed)
    options = completion_options(fit, latent, keep_observed=args.keep_observed)
    manual = read_landmark_file(args.landmarks) if args.landmarks else None
    compute = _compute(args.device)
    G, info = cached_generator(compute, args.checkpoint)
    head = _generator_head(compute, args, G)
    net, why = load_lpips()
    res = complete_scan(compute, head, G, scan, options, manual, net)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem
    sim = res.fit.coarse.similarity
    _write_obj(out_dir / f"{stem}_completed.obj", sim.apply(res.final), head.dense.faces)
    _write_obj(out_dir / f"{stem}_fitted.obj", sim.apply(res.base), head.dense.faces)
    written = [f"{stem}_completed.obj", f"{stem}_fitted.obj"]
    if args.maps:
        written += _write_map_files(res.map, args.format, f"{stem}_completed", out_dir)
        written += _write_map_files(res.partial_map, args.format, f"{stem}_partial", out_dir)
        np.save(out_dir / f"{stem}_mask.npy", res.mask)
        written.append(f"{stem}_mask.npy")
    notes = res.notes
    if why and L1_ONLY in notes:     # the specific reason replaces the generic note
        notes[notes.index(L1_ONLY)] = why
    print(format_report(res.fit.report))
    for note in notes:
        print(f"note: {note}")
    print(f"{res.visibility.mean():.0%} of the head seen, {res.mask.mean():.0%} of the {res.mask.shape[0]}^2 map; "
          f"completed with {info['source']}; wrote " + ", ".join(str(out_dir / n) for n in written))
    return 0


def _write_obj(path: Path, verts, faces, uv=None) -> None:
    """OBJ with optional per-corner UVs (F, 3, 2); formatted in one call per block (fast)."""
    import numpy as np
    verts, faces = np.asarray(verts, np.float64), np.asarray(faces, np.int64) + 1
    parts = [("v %.6g %.6g %.6g\n" * len(verts)) % tuple(verts.ravel())]
    if uv is None:
        parts.append(("f %d %d %d\n" * len(faces)) % tuple(faces.ravel()))
    else:
        parts.append(("vt %.9g %.9g\n" * (3 * len(faces))) % tuple(np.asarray(uv, np.float64).ravel()))
        corner = np.arange(1, 3 * len(faces) + 1).reshape(-1, 3)
        both = np.stack([faces, corner], -1).reshape(len(faces), 6)
        parts.append(("f %d/%d %d/%d %d/%d\n" * len(faces)) % tuple(both.ravel()))
    path.write_text("".join(parts))


@_user_errors("layout")
def cmd_layout(args) -> int:
    from .layout.maps import mapped_head
    from .layout.store import list_layouts
    head = mapped_head(_compute(), _model_params(args), args.layout)
    data, layout = head.model.data, head.layout
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{data.name}_{layout.name}"
    _write_obj(out_dir / f"{stem}.obj", data.v_template, data.faces, layout.uv)
    (out_dir / f"{stem}_report.json").write_text(json.dumps(layout.report, indent=2))
    _print_layout_report(data, layout)
    print(f"available layouts: {', '.join(list_layouts(data))}\nwrote {out_dir / stem}.obj and _report.json")
    return 0


@_user_errors("import-layout")
def cmd_import_layout(args) -> int:
    from .head.registry import load_model_data
    from .layout.store import LAYOUT_FORMATS, import_layout, list_layouts
    path = Path(args.file)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in LAYOUT_FORMATS:
        print(f"headcraft-backend import-layout: {path.name}: an .obj or .npy file, please", file=sys.stderr)
        return 2
    data = load_model_data(_model_params(args))
    try:
        content = path.read_bytes()
    except OSError as exc:
        print(f"headcraft-backend import-layout: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    layout = import_layout(data, args.name or path.stem, content, fmt, str(path))
    _print_layout_report(data, layout)
    print(f"saved as layout {layout.name!r} of {data.name}; available: {', '.join(list_layouts(data))}")
    return 0


def _print_layout_report(data, layout) -> None:
    rep = layout.report
    print(f"layout {layout.name} of {data.name}: {rep.get('flipped', 0)} flipped triangles, "
          f"{rep.get('overlap_texels_512', 0)} overlapping texels at 512^2, {rep.get('outside_unit_square', 0)} "
          f"triangles outside the unit square, {rep.get('coverage', 0):.0%} of the square covered")
    for name, c in rep.get("charts", {}).items():
        print(f"  {name:12s} pieces {c['pieces']:2d}  area distortion {c['area_distortion']:.3f}  "
              f"angle distortion {c['angle_distortion']:.3f}  {c['mm_per_texel_1024']:.2f} mm/texel at 1024")


def _fit_arrays(path: str) -> dict:
    import numpy as np
    with np.load(path, allow_pickle=False) as z:
        return {k: np.array(z[k]) for k in z.files}


@_user_errors("bake")
def cmd_bake(args) -> int:
    from .layout import formats
    from .layout.maps import bake_displacement, mapped_head
    try:
        fit = _fit_arrays(args.fit)
    except (OSError, ValueError) as exc:
        print(f"headcraft-backend bake: {args.fit}: not a fit file written by 'fit' ({exc})", file=sys.stderr)
        return 2
    if not {"base", "displacement"} <= set(fit):
        print(f"headcraft-backend bake: {args.fit} has no base/displacement arrays", file=sys.stderr)
        return 2
    compute = _compute(args.device)
    head = mapped_head(compute, _model_params(args), args.layout)
    out = bake_displacement(compute, head, args.size, fit["base"], fit["displacement"], fit.get("visibility"),
                            args.space)
    names = _write_map_files(out["map"], args.format, Path(args.fit).stem.removesuffix("_fit") + f"_{args.space}",
                             Path(args.out))
    clipped, max_abs = formats.range_report(out["map"], out["mask"])
    print(f"{args.space}-space map, {args.size}^2, layout {head.layout.name}: max |d| "
          f"{max_abs:.2f} units, {clipped:.2%} of texels beyond +-{formats.PNG_RANGE:g}")
    print("wrote " + ", ".join(str(Path(args.out) / n) for n in names))
    return 0


def _write_map_files(m, fmts: list[str], stem: str, out_dir: Path) -> list[str]:
    """A map's files in each format into out_dir; their names."""
    from .layout import formats
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for fmt in fmts:
        for name, data in formats.encode(m, fmt, stem).items():
            (out_dir / name).write_bytes(data)
            names.append(name)
    return names


def _read_map(path: str, what: str):
    """The map in a file, or None after printing why not."""
    from .layout import formats
    try:
        return formats.read(path)
    except ValueError as exc:
        print(f"headcraft-backend {what}: {exc}", file=sys.stderr)
        return None


@_user_errors("apply")
def cmd_apply(args) -> int:
    from .layout.maps import apply_map, dense_base, mapped_head
    m = _read_map(args.map, "apply")
    if m is None:
        return 2
    compute = _compute(args.device)
    head = mapped_head(compute, _model_params(args), args.layout)
    coarse = _fit_arrays(args.fit)["coarse_vertices"] if args.fit else None
    out = apply_map(compute, head, m, dense_base(compute, head, coarse), args.space)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _write_obj(Path(args.out), out["final"], out["dense_faces"], out["dense_uv"])
    print(f"wrote {args.out} ({len(out['final']):,} vertices)")
    return 0


def cmd_eval_real(args) -> int:
    import json as _json
    from .evaluate.real_scans import evaluate_scan, find_scans, format_rows
    from .fit.pipeline import FitOptions
    from .errors import HeadModelError
    from .head.model import HeadModel
    from .head.registry import load_model_data
    from .errors import UserError
    scans = find_scans(args.folder) if Path(args.folder).is_dir() else []
    if not scans:
        print(f"headcraft-backend eval-real: no scan files in {args.folder}", file=sys.stderr)
        return 2
    options = FitOptions(preset=args.preset)
    if args.steps:
        reg = options.registration_settings()
        reg.stage1.steps = reg.stage2.steps = args.steps
        options.registration = reg
    model = HeadModel(load_model_data(_model_params(args)))
    out_dir, rows = Path(args.out), []
    for path in scans:
        print(f"fitting {path.name} ...", flush=True)
        try:
            rows.append(evaluate_scan(path, model, options, out_dir))
        except (UserError, HeadModelError) as exc:
            print(f"  {path.name}: {exc}", file=sys.stderr)
    if not rows:
        return 2
    print("\n" + format_rows(rows) + "\n(distances in mm; folded: triangles whose normal reversed against the "
          "fitted template; new x: new self-intersections; >30deg: vertices whose normal turns more than "
          "30 degrees from the scan's)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(_json.dumps(rows, indent=2))
    print(f"pictures and report.json in {out_dir}")
    return 0


def cmd_eval_fit(args) -> int:
    from .evaluate.procedural_fits import evaluate, summary
    from .fit.pipeline import FitOptions
    from .head.registry import load_model_data
    options = FitOptions(preset=args.preset)
    if args.steps:
        reg = options.registration_settings()
        reg.stage1.steps = reg.stage2.steps = args.steps
        options.registration = reg
    rows = evaluate(load_model_data(_model_params(args)), n=args.n, options=options)
    print("\n" + summary(rows))
    return 0


@_user_errors("convert")
def cmd_convert(args) -> int:
    from .head.registry import get_model
    from .layout.maps import convert_map
    from .layout.store import get_layout
    m = _read_map(args.map, "convert")
    if m is None:
        return 2
    model = get_model(_compute("cpu"), _model_params(args))
    src, dst = get_layout(model.data, args.source), get_layout(model.data, args.target)
    out = convert_map(model, src, dst, m, args.size or m.shape[0])
    stem = Path(args.map).name.split("_-20_to_20")[0].removesuffix(".exr").removesuffix(".npy")
    names = _write_map_files(out, args.format, f"{stem}_{args.target}", Path(args.out))
    print(f"{src.name} -> {dst.name} ({out.shape[0]}^2): wrote " + ", ".join(str(Path(args.out) / n) for n in names))
    return 0


def _generator_head(compute, args, G):
    """The head a generator's maps go on: --layout, by default `headcraft` for our checkpoints and
    `published` (the authors' layout, imported) for a published .ckpt; checked against G."""
    from .errors import UserError
    from .generate.checkpoint import PUBLISHED_LAYOUT
    from .generate.sample import check_layout
    from .layout.maps import mapped_head
    published = str(args.checkpoint).endswith(".ckpt")
    if published and args.model != "flame":
        raise UserError("the published HeadCraft model is made for FLAME: add --model flame --flame-dir DIR")
    layout = args.layout or (PUBLISHED_LAYOUT if published else "headcraft")
    head = mapped_head(compute, _model_params(args), layout)
    check_layout(head.model.data, head.layout, G)
    return head


@_user_errors("generate")
def cmd_generate(args) -> int:
    import numpy as np
    from .generate.checkpoint import cached_generator
    from .generate.sample import sample_maps
    from .layout import formats
    from .layout.maps import apply_map, dense_base
    compute = _compute(args.device)
    G, info = cached_generator(compute, args.checkpoint)
    head = _generator_head(compute, args, G)
    base = dense_base(compute, head)
    out_dir = Path(args.out)
    for seed in args.seeds:
        m = sample_maps(G, [seed], args.psi, args.noise, args.mix_seed, args.mix_from)[0]
        out = apply_map(compute, head, m, base)
        stem = f"seed{seed:04d}"
        formats.write(m, out_dir, stem, "exr")
        np.save(out_dir / f"{stem}.npy", m)
        _write_obj(out_dir / f"{stem}.obj", out["final"], out["dense_faces"], out["dense_uv"])
        print(f"seed {seed}: wrote {out_dir / stem}.exr, .npy and .obj (psi {args.psi}, layout {head.layout.name}, "
              f"generator {info['source']})")
    return 0


@_user_errors("interpolate")
def cmd_interpolate(args) -> int:
    from .errors import UserError
    from .generate.checkpoint import cached_generator
    from .generate.sample import interpolate_maps
    from .layout import formats
    from .layout.maps import apply_map, dense_base
    compute = _compute(args.device)
    G, _ = cached_generator(compute, args.checkpoint)
    head = _generator_head(compute, args, G)
    base = dense_base(compute, head)
    if bool(args.from_map) != bool(args.to_map):
        raise UserError("give both --from-map and --to-map (or neither, for two seeds)")
    if args.from_map:
        maps = _fitted_interpolation(compute, args, G)
        what = f"from {Path(args.from_map).name} to {Path(args.to_map).name} (fitted styles, W+)"
    else:
        maps = interpolate_maps(G, args.seeds[0], args.seeds[1], args.steps, args.psi, args.space)
        what = f"from seed {args.seeds[0]} to {args.seeds[1]} ({args.space})"
    out_dir = Path(args.out)
    for i, m in enumerate(maps):
        out = apply_map(compute, head, m, base)
        stem = f"step{i:03d}"
        formats.write(m, out_dir, stem, "exr")
        _write_obj(out_dir / f"{stem}.obj", out["final"], out["dense_faces"], out["dense_uv"])
    print(f"{len(maps)} steps {what}: wrote {out_dir}")
    return 0


def _fitted_styles_of(compute, args, G, path: str):
    """A map file's styles: the map resampled to the generator's size, then fitted (cached)."""
    from .errors import UserError
    from .generate.fit_latent import LatentFitSettings, require_stylegan
    from .generate.fitted import fitted_styles, resized
    from .generate.perceptual import load_lpips
    G = require_stylegan(G)
    from .layout import formats
    try:
        m = formats.read(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    net, _ = load_lpips()
    print(f"fitting {Path(path).name} to the generator ({args.fit_steps} steps)", flush=True)
    return fitted_styles(compute, G, str(args.checkpoint), resized(m, G.img_resolution),
                         LatentFitSettings(steps_w=args.fit_steps), net, compute.progress)


def _fitted_interpolation(compute, args, G):
    from .generate.fitted import styles_maps
    a = _fitted_styles_of(compute, args, G, args.from_map)
    b = _fitted_styles_of(compute, args, G, args.to_map)
    return styles_maps(G, a.ws, b.ws, args.steps)


@_user_errors("transfer-hair")
def cmd_transfer_hair(args) -> int:
    import numpy as np
    from .generate.checkpoint import cached_generator
    from .generate.fitted import hair_transfer_map, resized
    from .generate.sample import check_layout
    from .layout import formats
    from .layout.maps import apply_map, dense_base, mapped_head
    face, hair = _read_map(args.face_map, "transfer-hair"), _read_map(args.hair_map, "transfer-hair")
    if face is None or hair is None:
        return 2
    compute = _compute(args.device)
    if args.checkpoint:          # the paper's way: the driver's hair from its fitted styles
        G, _ = cached_generator(compute, args.checkpoint)
        head = _generator_head(compute, args, G)
        hair = _fitted_styles_of(compute, args, G, args.hair_map).map
    else:
        head = mapped_head(compute, _model_params(args), args.layout)
        check_layout(head.model.data, head.layout)
    size = max(face.shape[0], hair.shape[0])
    m = hair_transfer_map(resized(face, size), resized(hair, size))
    coarse = _fit_arrays(args.fit)["coarse_vertices"] if args.fit else None
    out = apply_map(compute, head, m, dense_base(compute, head, coarse))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats.write(m, out_dir, "transferred", "exr")
    np.save(out_dir / "transferred.npy", m)
    _write_obj(out_dir / "transferred.obj", out["final"], out["dense_faces"], out["dense_uv"])
    print(f"face of {Path(args.face_map).name}, hair of {Path(args.hair_map).name}"
          f"{' (fitted to the generator)' if args.checkpoint else ''}: wrote {out_dir}/transferred.exr, .npy, .obj")
    return 0


def cmd_pca(args) -> int:
    from .generate.pca import PCAModel, read_maps
    try:
        maps = read_maps(args.maps)
        model = PCAModel.fit(maps, args.components)
    except ValueError as exc:
        print(f"headcraft-backend pca: {exc}", file=sys.stderr)
        return 2
    weights, cfg = model.save(args.out)
    print(f"PCA of {len(maps)} maps ({maps.shape[1]}^2): {model.z_dim} components hold "
          f"{model.explained(maps):.1%} of the variance; wrote {cfg} and {weights.name}")
    return 0


@_user_errors("fit-latent")
def cmd_fit_latent(args) -> int:
    import numpy as np
    from .errors import UserError
    from .generate.checkpoint import cached_generator
    from .generate.fit_latent import L1_ONLY, LatentFitSettings, fit_latent, require_stylegan
    from .generate.perceptual import load_lpips
    from .layout.maps import apply_map, dense_base
    m = _read_map(args.map, "fit-latent")
    if m is None:
        return 2
    mask = np.load(args.mask).astype(np.float32) if args.mask else None
    compute = _compute(args.device)
    G = require_stylegan(cached_generator(compute, args.checkpoint)[0])
    if m.shape[0] != G.img_resolution or (mask is not None and mask.shape != m.shape[:2]):
        raise UserError(f"the map is {m.shape[0]}^2 (mask {None if mask is None else mask.shape}); this "
                        f"generator makes {G.img_resolution}^2 maps")
    head = _generator_head(compute, args, G)
    settings = LatentFitSettings(steps_w=args.steps, steps_z=args.steps // 2, steps_delta=args.steps // 2,
                                 steps_noise=args.noise_steps)
    net, why = load_lpips()
    res = fit_latent(G, m, mask, settings, net, report=compute.progress)
    out = apply_map(compute, head, res.map, dense_base(compute, head))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.map).stem.split("_-20_to_20")[0]
    np.save(out_dir / f"{stem}_ws.npy", res.ws.numpy().astype(np.float32))
    np.save(out_dir / f"{stem}_fitted.npy", res.map)
    _write_obj(out_dir / f"{stem}_fitted.obj", out["final"], out["dense_faces"], out["dense_uv"])
    if why:     # the specific reason replaces the generic note
        res.notes[res.notes.index(L1_ONLY)] = why
    for note in res.notes:
        print(f"note: {note}")
    final = res.loss_history[-1] if res.loss_history else float("nan")
    print(f"final loss {final:.4f}; wrote {out_dir}/{stem}_ws.npy, _fitted.npy, _fitted.obj")
    return 0


TRAIN_OVERRIDES = (("resolution", int), ("z_dim", int), ("w_dim", int), ("mapping_layers", int),
                   ("channel_base", int), ("channel_max", int), ("batch", int), ("lr_g", float), ("lr_d", float),
                   ("r1_gamma", float), ("r1_every", int), ("pl_weight", float), ("pl_every", int), ("style_mixing", float), ("iterations", int),
                   ("seed", int), ("sample_every", int), ("checkpoint_every", int), ("noise", str))


def cmd_train(args) -> int:
    import torch
    from .generate import train
    preset = args.preset or ("paper" if torch.cuda.is_available() else "small")
    try:
        config = train.config_from_args(preset, {k: getattr(args, k) for k, _ in TRAIN_OVERRIDES})
        devices = args.devices if args.devices == "auto" else int(args.devices)
        summary = train.train(args.data, args.out, config, devices=devices, num_nodes=args.num_nodes,
                              accelerator=args.accelerator, strategy=args.strategy, precision=args.precision,
                              workers=args.workers, resume=args.resume, progress=not args.quiet)
    except (ValueError, RuntimeError) as exc:
        print(f"headcraft-backend train: {exc}", file=sys.stderr)
        return 2
    if "generator" in summary:
        print(f"{summary['iterations']} iterations on {summary['maps']} maps in {summary['seconds']} s "
              f"({preset} preset, {summary['world_size']} process(es)); generator: {summary['generator']}; "
              f"TensorBoard: tensorboard --logdir {Path(args.out) / 'tensorboard'}")
    return 0


def cmd_eval(args) -> int:
    """Registration errors per region and the generation metrics, on held-apart procedural heads."""
    from .evaluate.generation import table1
    from .evaluate.procedural_fits import evaluate, summary
    from .fit.pipeline import FitOptions
    from .generate.checkpoint import DEMO_MODEL
    from .head.registry import load_model_data
    data = load_model_data(_model_params(args))
    methods: dict[str, str | None] = {}
    checkpoint = args.checkpoint or (str(DEMO_MODEL) if DEMO_MODEL.is_file() else None)
    pca = args.pca or (str(DEMO_MODEL.with_name("demo_pca.json")) if DEMO_MODEL.with_name("demo_pca.json").is_file()
                       else None)
    for name, path in (("HeadCraft (ours)", checkpoint), ("PCA baseline", pca)):
        if path is None:
            print(f"no {name} checkpoint: pass it (--checkpoint / --pca); its row is left out")
        elif not Path(path).expanduser().is_file():
            print(f"headcraft-backend eval: {path}: not found", file=sys.stderr)
            return 2
        else:
            methods[name] = str(Path(path).expanduser())
    methods["template, no displacement"] = None
    if args.n_fit:
        from .evaluate.generation import HELD_APART_SEED
        print(f"== registration of {args.n_fit} held-apart procedural scans ({args.preset} preset) ==")
        print("\n" + summary(evaluate(data, n=args.n_fit, options=FitOptions(preset=args.preset),
                                      seed=HELD_APART_SEED)))
    print(f"\n== generation: {args.n} heads per method against {args.n} held-apart heads ==")
    from .errors import UserError
    try:
        table1(data, methods, n=args.n, n_points=args.points, device=args.device, population=args.population,
               n_train=args.n_train, resamples=args.bootstrap, psi=args.psi, cache=not args.no_cache)
        if args.n_complete and checkpoint:
            _completion_table(args, data, methods.get("HeadCraft (ours)"), methods.get("PCA baseline"))
    except UserError as exc:      # an unreadable checkpoint: one line, no traceback
        print(f"headcraft-backend eval: {exc}", file=sys.stderr)
        return 2
    return 0


def _completion_table(args, data, checkpoint, pca) -> None:
    from .evaluate.completion import format_table, unseen_errors
    from .fit.pipeline import fit_options
    from .generate.complete import completion_options
    steps = {"steps": args.complete_steps} if args.complete_steps else None
    options = completion_options(fit_options(args.preset, partial=True, stage1=steps, stage2=steps,
                                             coarse={"scale": 1.0}))
    print(f"\n== completion of {args.n_complete} single front depth views ({args.preset} registration, "
          f"the paper's latent fit) ==")
    print(format_table(unseen_errors(data, checkpoint, pca, options, n=args.n_complete, device=args.device)))


def cmd_synth(args) -> int:
    from .dataset.synth import SynthOptions, write_set
    from .errors import HeadModelError
    from .head.registry import load_model_data
    options = SynthOptions(n=args.n, seed=args.seed, hair=args.hair, colour=args.colour, noise_mm=args.noise_mm,
                           holes=args.holes, max_rotation_deg=args.max_rotation, views=args.views,
                           sparse=args.sparse, mesh_format=args.format, headwear=args.headwear)
    try:
        options.check()
        write_set(load_model_data(_model_params(args)), args.out, options)
    except (ValueError, HeadModelError, OSError) as exc:
        print(f"headcraft-backend synth: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} scans to {args.out} (manifest.json lists them)")
    return 0


def cmd_register_dataset(args) -> int:
    from .dataset.register import Cluster, RegisterOptions, format_summary, register_folder
    try:
        up, forward = parse_direction(args.up), parse_direction(args.forward)
    except ValueError as exc:
        print(f"headcraft-backend register-dataset: --up/--forward: {exc}", file=sys.stderr)
        return 2
    options = RegisterOptions(model=_model_params(args), preset=args.preset, steps=args.steps, partial=args.partial,
                              layout=args.layout, size=args.size, spaces=tuple(dict.fromkeys(args.space)),
                              fmt=args.format, up=up, forward=forward, landmarks=args.landmarks)
    cluster = Cluster(address=args.address, workers=args.workers, cpus_per_scan=args.cpus_per_scan,
                      gpus_per_scan=args.gpus_per_scan)
    try:
        summary = register_folder(args.scans, args.out, options, cluster)
    except ValueError as exc:
        print(f"headcraft-backend register-dataset: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headcraft-backend register-dataset: interrupted; run it again to go on where it stopped",
              file=sys.stderr)
        return 130
    print(format_summary(summary, Path(args.out), options))
    return 1 if summary["failed"] else 0


def _model_args(parser) -> None:
    parser.add_argument("--model", default="openhead", choices=("openhead", "flame"))
    parser.add_argument("--flame-dir", default="~/FLAME", help="folder with the FLAME files")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="headcraft-backend", description=__doc__)
    p.add_argument("--version", action="version", version=f"headcraft-backend {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the job service the Blender extension talks to")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default loopback; use an SSH tunnel for remote use)")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--token-stdin", action="store_true", help="read the token from the first stdin line")
    s.add_argument("--token-file", default="~/.headcraft/backend.token",
                   help=f"where a generated token is written when {TOKEN_ENV} and --token-stdin are absent")
    s.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    s.add_argument("--max-frame-mb", type=int, default=1024, help="largest accepted frame payload")
    s.add_argument("--log-file", default="", help="log here instead of stderr")
    s.add_argument("--log-level", default="info")
    s.set_defaults(fn=cmd_serve)
    i = sub.add_parser("info", help="print version, device and available jobs as JSON")
    i.add_argument("--device", default="auto")
    i.set_defaults(fn=cmd_info)
    f = sub.add_parser("fit", help="fit a head model and high-detail displacements to a scan file")
    f.add_argument("scan", help="OBJ, PLY, GLB/glTF, STL or OFF")
    _model_args(f)
    f.add_argument("--preset", default="paper", choices=("paper", "preview"))
    f.add_argument("--convention", default="default", choices=("default", "reference", "paper"),
                   help="registration losses: default (clean on real scans), reference (the published "
                        "code's) or paper (the equations as printed); see docs/USER_GUIDE.md")
    f.add_argument("--partial", default="none", choices=("none", "depth", "sparse"))
    f.add_argument("--steps", type=int, default=0, help="registration steps per stage (0: preset)")
    f.add_argument("--units", default="auto", choices=tuple(UNITS_PER_METRE_OF) + ("auto",),
                   help="what the scan's coordinates are (auto: estimate the scale from the face)")
    f.add_argument("--landmarks", default="",
                   help="landmarks you already have, instead of detecting them: a JSON or CSV file "
                        "(see fit/landmark_file.py; MediaPipe, 68-point or named ids)")
    f.add_argument("--up", nargs="+", default=["+Y"], metavar="DIR",
                   help=f"the head's up direction in the scan file, for the landmark renders: {DIRECTION_HELP}; "
                        f"when no face is found from --up/--forward, every axis is searched anyway")
    f.add_argument("--forward", nargs="+", default=["+Z"], metavar="DIR",
                   help="the direction the face looks in (the same forms; auto for either means both are unknown)")
    f.add_argument("--device", default="auto")
    f.add_argument("--out", default="fit-output")
    f.set_defaults(fn=cmd_fit)
    cp = sub.add_parser("complete", help="complete a partial scan or a single depth view into a whole detailed head "
                        "(partial registration, then the generator's masked latent fit)")
    cp.add_argument("scan", nargs="?", default="",
                    help="a partial scan: OBJ, PLY, GLB/glTF, STL or OFF (mesh or cloud)")
    cp.add_argument("--depth", default="", help="a depth image instead: float .npy, or a 16-bit .png (0 = no "
                    "measurement; z-depth along the camera's axis)")
    cp.add_argument("--intrinsics", default="", help="with --depth: fx,fy,cx,cy in pixels (OpenCV: pixel centres "
                    "at integer coordinates)")
    cp.add_argument("--depth-scale", type=float, default=1.0, help="with --depth: multiplies the stored values "
                    "(e.g. 0.1 for a PNG in tenths of millimetres with --depth-units mm)")
    cp.add_argument("--depth-units", default="m", choices=tuple(UNITS_PER_METRE_OF),
                    help="with --depth: the unit of the (scaled) depths")
    cp.add_argument("--checkpoint", default="", help="the generator (default: the bundled demo model); a PCA "
                    ".json completes with the PCA baseline")
    _model_args(cp)
    cp.add_argument("--layout", default=None, help="as for generate")
    cp.add_argument("--sparse", action="store_true", help="a sparse cloud (proximity threshold 0.3 instead of 0.1)")
    cp.add_argument("--preset", default="paper", choices=("paper", "preview"))
    cp.add_argument("--steps", type=int, default=0, help="registration steps per stage (0: preset)")
    cp.add_argument("--latent-steps", type=int, default=1000, help="latent-fit steps, half for z and half for the "
                    "W+ delta (the paper: 500 + 500)")
    cp.add_argument("--noise-steps", type=int, default=None, help="scalp-noise steps (default 500, the paper's)")
    cp.add_argument("--seed", type=int, default=0, help="the z sample the latent fit starts from")
    cp.add_argument("--keep-observed", action="store_true", help="keep the registered displacements where the "
                    "scan saw the head (the paper: the generator's everywhere)")
    cp.add_argument("--units", default="auto", choices=tuple(UNITS_PER_METRE_OF) + ("auto",),
                    help="a scan file's units")
    cp.add_argument("--landmarks", default="", help="hand-placed landmarks in the scan's (or camera's) frame, as "
                    "for fit")
    cp.add_argument("--up", nargs="+", default=["+Y"], metavar="DIR", help=f"a scan file's up: {DIRECTION_HELP}")
    cp.add_argument("--forward", nargs="+", default=["+Z"], metavar="DIR", help="the way its face looks")
    cp.add_argument("--maps", action="store_true", help="also write the completed and partial maps and the mask")
    cp.add_argument("--format", nargs="+", default=["exr"], choices=("exr", "png16", "npy"))
    cp.add_argument("--device", default="auto")
    cp.add_argument("--out", default="completed")
    cp.set_defaults(fn=cmd_complete)

    er = sub.add_parser("eval-real", help="fit the real scans in a folder and print quality figures per region")
    er.add_argument("folder", help="a folder of scan files (OBJ, PLY, ...)")
    _model_args(er)
    er.add_argument("--preset", default="paper", choices=("paper", "preview"))
    er.add_argument("--steps", type=int, default=0, help="registration steps per stage (0: preset)")
    er.add_argument("--out", default="out/eval-real", help="where the pictures and report.json go")
    er.set_defaults(fn=cmd_eval_real)
    e = sub.add_parser("eval-fit", help="fit procedural scans with ground truth and print the errors")
    e.add_argument("--n", type=int, default=3, help="number of scans (no hair, short, long, ...)")
    _model_args(e)
    e.add_argument("--preset", default="paper", choices=("paper", "preview"))
    e.add_argument("--steps", type=int, default=0)
    e.set_defaults(fn=cmd_eval_fit)
    lay = sub.add_parser("layout", help="build (or load) a UV layout and write it as an OBJ with a report")
    _model_args(lay)
    lay.add_argument("--layout", default="headcraft", help="headcraft, standard or a saved custom layout")
    lay.add_argument("--out", default="layout-output")
    lay.set_defaults(fn=cmd_layout)
    il = sub.add_parser("import-layout", help="import a UV layout of the model's topology (an OBJ with per-corner "
                        "UVs, e.g. the published HeadCraft layout, or a .npy of shape (F, 3, 2)) as a named layout")
    il.add_argument("file")
    _model_args(il)
    il.add_argument("--name", default="", help="the layout's name (default: the file's stem); 'published' is the "
                    "name a published .ckpt looks for")
    il.set_defaults(fn=cmd_import_layout)
    b = sub.add_parser("bake", help="bake a fit's displacements (the _fit.npz of 'fit') into a map")
    b.add_argument("fit")
    _model_args(b)
    b.add_argument("--layout", default="headcraft")
    b.add_argument("--size", type=int, default=1024)
    b.add_argument("--space", default="object", choices=("object", "tangent"))
    b.add_argument("--format", nargs="+", default=["exr", "png16"], choices=("exr", "png16", "npy"))
    b.add_argument("--device", default="auto")
    b.add_argument("--out", default="maps")
    b.set_defaults(fn=cmd_bake)
    a = sub.add_parser("apply", help="displace a head by a map (EXR, one of the 16-bit PNGs, or .npy)")
    a.add_argument("map")
    _model_args(a)
    a.add_argument("--layout", default="headcraft")
    a.add_argument("--space", default="object", choices=("object", "tangent"))
    a.add_argument("--fit", default="", help="a _fit.npz whose fitted head to use (default: the template)")
    a.add_argument("--device", default="auto")
    a.add_argument("--out", default="detailed.obj")
    a.set_defaults(fn=cmd_apply)
    c = sub.add_parser("convert", help="resample an object-space map from one layout into another")
    c.add_argument("map")
    _model_args(c)
    c.add_argument("--source", default="standard")
    c.add_argument("--target", default="headcraft")
    c.add_argument("--size", type=int, default=0, help="output size (0: the input's)")
    c.add_argument("--format", nargs="+", default=["exr"], choices=("exr", "png16", "npy"))
    c.add_argument("--out", default="maps")
    c.set_defaults(fn=cmd_convert)
    g = sub.add_parser("generate", help="sample detailed heads from a generator checkpoint")
    g.add_argument("checkpoint", help="our .json/.safetensors, or a published .ckpt (ema_*.pth beside it)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0])
    g.add_argument("--psi", type=float, default=0.7, help="truncation in W (1 = none)")
    g.add_argument("--noise", default="const", choices=("const", "random", "none"), help="scalp noise")
    g.add_argument("--mix-seed", type=int, default=None, help="style mixing: styles from --mix-from on")
    g.add_argument("--mix-from", type=int, default=None, help="default: half of the generator's layers")
    _model_args(g)
    g.add_argument("--layout", default=None, help="the layout the generator was trained in (default: headcraft; "
                   "for a published .ckpt, the imported authors' layout 'published')")
    g.add_argument("--device", default="auto")
    g.add_argument("--out", default="generated")
    g.set_defaults(fn=cmd_generate)
    it = sub.add_parser("interpolate", help="heads between two seeds (lerp in W or slerp in Z)")
    it.add_argument("checkpoint")
    it.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    it.add_argument("--steps", type=int, default=8)
    it.add_argument("--space", default="w", choices=("w", "z"))
    it.add_argument("--psi", type=float, default=0.7)
    _model_args(it)
    it.add_argument("--from-map", default="", help="interpolate between two detailed heads instead of seeds: "
                    "their object-space maps (EXR, PNG triplet or .npy), each fitted to the generator")
    it.add_argument("--to-map", default="")
    it.add_argument("--fit-steps", type=int, default=1000, help="latent-fit steps per map (the paper: 1000)")
    it.add_argument("--layout", default=None, help="as for generate")
    it.add_argument("--device", default="auto")
    it.add_argument("--out", default="interpolated")
    it.set_defaults(fn=cmd_interpolate)
    th = sub.add_parser("transfer-hair", help="the face of one detailed head with the hair of another (their maps)")
    th.add_argument("--face-map", required=True, help="the source head's object-space map")
    th.add_argument("--hair-map", required=True, help="the driver head's object-space map")
    th.add_argument("--checkpoint", default="", help="fit the driver's map to this generator first and take the "
                    "hair from the fit (the paper's way); without it the driver's own map is used")
    th.add_argument("--fit-steps", type=int, default=1000)
    th.add_argument("--fit", default="", help="the source's _fit.npz: its fitted head (default: the template)")
    _model_args(th)
    th.add_argument("--layout", default=None, help="as for generate")
    th.add_argument("--device", default="auto")
    th.add_argument("--out", default="transferred")
    th.set_defaults(fn=cmd_transfer_hair)
    pc = sub.add_parser("pca", help="fit the PCA baseline generator to a folder of baked maps")
    pc.add_argument("maps", help="folder of .exr, .npy or 16-bit PNG triplets (one size)")
    pc.add_argument("--components", type=int, default=32)
    pc.add_argument("--out", default="pca-model")
    pc.set_defaults(fn=cmd_pca)
    tr = sub.add_parser("train", help="train a generator on a folder of baked maps (Lightning: resume, "
                        "TensorBoard logs, sample grids, multi-GPU/multi-node DDP)")
    tr.add_argument("data", help="folder of .exr, .npy or 16-bit PNG triplets")
    tr.add_argument("--out", default="runs/generator", help="run folder: checkpoints/, tensorboard/, samples/")
    tr.add_argument("--preset", choices=("paper", "small", "demo"), default=None,
                    help="paper: 256^2, 512-d (default with CUDA); small: 64^2, 128-d for a CPU (default without); "
                    "demo: 128^2, 256-d, the bundled model's")
    for name, kind in TRAIN_OVERRIDES:
        tr.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    tr.add_argument("--devices", default="auto", help="processes per node (GPUs, or CPU processes with ddp)")
    tr.add_argument("--num-nodes", type=int, default=1)
    tr.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    tr.add_argument("--strategy", default="auto", help="auto, or ddp for several processes/nodes")
    tr.add_argument("--precision", default="32-true")
    tr.add_argument("--workers", type=int, default=2, help="data-loading processes")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)
    fl = sub.add_parser("fit-latent", help="find a generator's styles for a map (optionally partial)")
    fl.add_argument("map", help="EXR, one of the 16-bit PNGs, or .npy, at the generator's size")
    fl.add_argument("checkpoint")
    fl.add_argument("--mask", default="", help=".npy (H, W) of visible texels, for a partial map")
    fl.add_argument("--steps", type=int, default=1000, help="W+ steps of a full map; with --mask, half of them "
                    "for z and half for the W+ delta (the paper: 1000, 500 + 500)")
    fl.add_argument("--noise-steps", type=int, default=None,
                    help="scalp-noise steps (default: 0 for a full map, 500 with --mask, as the paper)")
    _model_args(fl)
    fl.add_argument("--layout", default=None, help="as for generate")
    fl.add_argument("--device", default="auto")
    fl.add_argument("--out", default="fitted-latent")
    fl.set_defaults(fn=cmd_fit_latent)
    ev = sub.add_parser("eval", help="held-apart procedural heads: registration errors per region, and MMD/COV/JSD "
                        "of generated heads, the PCA baseline and the bare template (the paper's Table 1)")
    ev.add_argument("--checkpoint", default="", help="generator (default: the bundled demo model)")
    ev.add_argument("--pca", default="", help="PCA baseline .json (default: the bundled one)")
    ev.add_argument("--n", type=int, default=100, help="held-apart reference heads, and generated heads per method")
    ev.add_argument("--points", type=int, default=2048, help="surface points per mesh (the paper: 10000; ~25x slower)")
    ev.add_argument("--n-train", type=int, default=100,
                    help="training heads for the nearest-training-head check (0: skip it)")
    ev.add_argument("--population", choices=("styles", "looks"), default="styles",
                    help="how the procedural heads are drawn: styles = synth --hair random (the bundled model's "
                    "data), looks = synth --hair varied")
    ev.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the error bars (0: none)")
    ev.add_argument("--psi", type=float, default=1.0, help="truncation of the generated samples")
    ev.add_argument("--no-cache", action="store_true", help="make the procedural heads again (not from the cache)")
    ev.add_argument("--n-fit", type=int, default=3, help="scans to register (0: skip)")
    ev.add_argument("--n-complete", type=int, default=3, help="depth views to complete (0: skip)")
    ev.add_argument("--complete-steps", type=int, default=0, help="their registration steps per stage (0: preset)")
    ev.add_argument("--preset", default="preview", choices=("paper", "preview"))
    ev.add_argument("--device", default="auto")
    _model_args(ev)
    ev.set_defaults(fn=cmd_eval)
    sy = sub.add_parser("synth", help="write procedural scans with ground truth (a test or training set)")
    sy.add_argument("--n", type=int, default=10, help="number of scans (scan i has the seed SEED + i)")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", default="synthetic-scans")
    sy.add_argument("--hair", default="random",
                    help="random (every style in turn), varied (a random look per scan: hair from bald to 8 cm "
                         "afros, buns, ponytails, fringes, partings, receding hairlines; beards; headwear; ears; "
                         "age), or one style: none, buzz, short, long (shoulder-length), bob, bun, "
                         "ponytail, fringe or beard; aliases buzz-cut, shoulder-length, bald")
    sy.add_argument("--headwear", default="random",
                    help="with --hair varied: none, cap, beanie, headband or turban (10-20 cm tall) on every "
                         "scan; random (default): about one scan in four wears something")
    sy.add_argument("--colour", action="store_true", help="vertex colours (they help the automatic landmarks)")
    sy.add_argument("--noise-mm", type=float, default=0.2, help="scanner noise along the normals (std)")
    sy.add_argument("--holes", type=int, default=3, help="random holes per scan")
    sy.add_argument("--max-rotation", type=float, default=25.0,
                    help="random rotation about each axis, degrees (0: upright, face +Z)")
    sy.add_argument("--views", type=int, default=0, help="partial depth views per scan (point clouds)")
    sy.add_argument("--sparse", type=int, default=0, help="also a sparse cloud of this many points per view")
    sy.add_argument("--format", default="ply", choices=("ply", "obj"), help="scan mesh format")
    _model_args(sy)
    sy.set_defaults(fn=cmd_synth)
    rd = sub.add_parser("register-dataset", help="fit every scan of a folder and bake its displacement maps "
                        "(Ray: a local cluster, or --address; resumable)")
    rd.add_argument("scans", help="folder of scan files (OBJ, PLY, GLB/glTF, STL, OFF; not its subfolders)")
    rd.add_argument("--out", default="registered",
                    help="object-space maps here (a training folder), tangent/, visibility/, fits/, errors.json")
    _model_args(rd)
    rd.add_argument("--preset", default="preview", choices=("paper", "preview"))
    rd.add_argument("--steps", type=int, default=0, help="registration steps per stage (0: preset)")
    rd.add_argument("--partial", default="none", choices=("none", "depth", "sparse"), help="the kind of scans")
    rd.add_argument("--layout", default="headcraft")
    rd.add_argument("--size", type=int, default=256)
    rd.add_argument("--space", nargs="+", default=["object"], choices=("object", "tangent"))
    rd.add_argument("--format", default="exr", choices=("exr", "png16", "npy"))
    rd.add_argument("--up", nargs="+", default=["+Y"], metavar="DIR",
                    help=f"the heads' up direction in the scan files (scans listed in the folder's "
                         f"manifest.json use theirs): {DIRECTION_HELP}; when no face is found from "
                         f"--up/--forward, every axis is searched anyway")
    rd.add_argument("--forward", nargs="+", default=["+Z"], metavar="DIR",
                    help="the direction the faces look in (the same forms)")
    rd.add_argument("--landmarks", default="", metavar="FOLDER",
                    help="landmarks a dataset already has: FOLDER/<scan name>.json or .csv per scan, in the "
                         "format of fit --landmarks; scans without a file get detected landmarks")
    rd.add_argument("--address", default="", help="an existing Ray cluster (default: start a local one)")
    rd.add_argument("--workers", type=int, default=0,
                    help="scans at a time (default: this machine's CPUs; on a cluster, no limit)")
    rd.add_argument("--cpus-per-scan", type=int, default=1)
    rd.add_argument("--gpus-per-scan", type=float, default=0.0, help="fractions share a GPU; 0 fits on CPUs")
    rd.set_defaults(fn=cmd_register_dataset)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
