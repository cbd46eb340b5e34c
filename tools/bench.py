"""Benchmarks (`python build.py bench [names] [--device cpu|cuda]`): each prints our time and
the ratio to a straightforward baseline measured in the same run. Timings are medians of
several repeats. With --device cuda the torch work (registration, whole fit, sampling,
animation, the backend of the wire round trip) runs on the GPU, both ours and the baseline;
the bake and map rows are numpy on the CPU either way and say so."""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import bpy  # noqa: E402

from blender_session import disable_extension, enable_extension  # noqa: E402

ARGS = [a for a in sys.argv[1:] if not a.startswith("--device")]
DEVICE = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--device=")), "cpu")
if "--device" in sys.argv:
    DEVICE = sys.argv[sys.argv.index("--device") + 1]
    ARGS.remove(DEVICE)

ext = enable_extension("bench")
from bl_ext.bench.headcraft.client.launcher import LocalBackend  # noqa: E402
from bl_ext.bench.headcraft.meshdata import new_mesh, read_vertices, write_vertices  # noqa: E402


def _sync() -> None:
    """Wait for queued GPU work, so that timings cover it."""
    if DEVICE.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def median_ms(fn, repeats=7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def sphere_mesh(n_side: int):
    """A closed-ish UV sphere with n_side^2 vertices, radius 0.1 m, and its triangles."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n_side, endpoint=False),
                       np.linspace(0.05, np.pi - 0.05, n_side), indexing="xy")
    verts = 0.1 * np.stack([np.sin(v) * np.cos(u), np.sin(v) * np.sin(u), np.cos(v)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_side - 1), np.arange(n_side), indexing="ij")
    a = i * n_side + j
    b = i * n_side + (j + 1) % n_side
    c, d = a + n_side, b + n_side
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return verts.astype(np.float32), faces.astype(np.int32)


def bench_roundtrip(conn) -> None:
    verts, faces = sphere_mesh(317)  # 100,489 vertices
    me = new_mesh("bench", verts, faces)

    def ours():
        co = read_vertices(me)
        back = conn.call("diagnostics.echo", {}, {"co": co}).arrays["co"]
        write_vertices(me, back)

    def json_baseline():
        co = read_vertices(me)
        payload = np.frombuffer(json.dumps(co.tolist()).encode(), np.uint8)
        back = conn.call("diagnostics.echo", {}, {"json": payload}).arrays["json"]
        write_vertices(me, np.array(json.loads(back.tobytes()), np.float32))

    t_ours, t_base = median_ms(ours), median_ms(json_baseline, 3)
    print(f"mesh round trip Blender->backend->Blender, {len(verts):,} vertices: {t_ours:.1f} ms "
          f"(target <= 30 ms) | JSON baseline {t_base:.1f} ms | speed-up x{t_base / t_ours:.1f}")
    bpy.data.meshes.remove(me)


def bench_add_head() -> None:
    """Add Head's Blender side on a 100K-vertex head with 152 shape keys (100 identity + 52
    expressions): mesh, UVs, regions, weights, keys, rig."""
    verts, faces = sphere_mesh(317)
    V, S, E, J = len(verts), 100, 52, 5
    rng = np.random.default_rng(0)
    model_verts = np.stack([verts[:, 0], verts[:, 2], -verts[:, 1]], 1)
    weights = np.zeros((V, J), np.float32)
    weights[np.arange(V), rng.integers(0, J, V)] = 1
    result = {"num_shape": S, "num_expr": E, "joint_names": ["global", "neck", "jaw", "eye_L", "eye_R"],
              "expr_names": [f"expr{i:02d}" for i in range(E)], "parents": [-1, 0, 1, 1, 1],
              "model": "bench", "version": "0", "expr_kind": "blendshape"}
    arrays = {"vertices": model_verts, "faces": faces, "uv": rng.random((len(faces), 3, 2), np.float32),
              "shape_deltas": rng.standard_normal((S, V, 3), np.float32) * 1e-3,
              "expr_deltas": rng.standard_normal((E, V, 3), np.float32) * 1e-3,
              "joints": np.array([[0, -0.08, 0], [0, -0.05, 0], [0, -0.03, 0.03], [0.03, 0.03, 0.07],
                                  [-0.03, 0.03, 0.07]], np.float32),
              "joint_shape_deltas": np.zeros((S, J, 3), np.float32), "lbs_weights": weights,
              "region__face": np.arange(0, V // 2, dtype=np.int32)}
    times = []
    for _ in range(3):
        t = time.perf_counter()
        head = ext.head.objects.create_head(bpy.context, result, arrays, name="BenchHead")
        times.append((time.perf_counter() - t) * 1e3)
        rig, me = head.parent, head.data
        bpy.data.objects.remove(head)
        bpy.data.meshes.remove(me)
        arm = rig.data
        bpy.data.objects.remove(rig)
        bpy.data.armatures.remove(arm)
    t_ours = statistics.median(times)

    # Baseline: the same keys written the straightforward way (key_block.data, float64 lists);
    # 10 keys timed, scaled to 152.
    me = new_mesh("base", verts, faces)
    obj = bpy.data.objects.new("base", me)
    bpy.context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    t = time.perf_counter()
    for k in range(10):
        kb = obj.shape_key_add(name=f"k{k}", from_mix=False)
        kb.data.foreach_set("co", (verts + arrays["shape_deltas"][k]).astype(np.float64).ravel().tolist())
    t_keys_base = (time.perf_counter() - t) * 1e3 * (S + E) / 10
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(me)
    print(f"Add Head in Blender, {V:,} vertices, {S + E} shape keys + rig: {t_ours:.0f} ms | "
          f"baseline shape keys alone via key_block.data + float64: {t_keys_base:.0f} ms | "
          f"speed-up x{t_keys_base / t_ours:.1f}")


def _bench_detailed_head():
    """A low-res OpenHead head (52 ARKit expressions) and a detailed head made on it by a small
    random generator (details of about a millimetre)."""
    import tempfile
    import torch
    from headcraft_backend.generate import checkpoint
    from headcraft_backend.generate.networks import Generator, ToRGBLayer
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=10, num_expr=52) == {"FINISHED"}
    head = bpy.context.active_object
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, w_num_layers=2, img_resolution=64, img_channels=6, channel_base=512,
                  channel_max=32)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, ToRGBLayer):
                m.weight.mul_(0.15)
    _, cfg = checkpoint.save(G, Path(tempfile.mkdtemp()) / "bench")
    s = bpy.context.scene.headcraft
    s.generate.checkpoint, s.generate.seed, s.layout.uv_layout = str(cfg), 1, "headcraft"
    assert bpy.ops.headcraft.generate() == {"FINISHED"}
    return head, bpy.context.active_object


def bench_animate() -> None:
    """The shape-key rig (52 expressions) on the 124K-vertex detailed head, an exact bake of
    300 frames, and one frame of the rig in Blender. Baselines: expressions carried one at a time
    and written through key_block.data as float64 lists; the bake sent one frame per request;
    computing the exact head for a frame instead of evaluating the rig."""
    from headcraft_backend.animate import rig as anim
    from headcraft_backend.compute import Compute
    from headcraft_backend.head.dense import dense_template
    from headcraft_backend.head.registry import get_model
    head, det = _bench_detailed_head()
    V, objects, scene = len(det.data.vertices), ext.animate.objects, bpy.context.scene
    ctx = Compute(DEVICE)
    model = get_model(ctx, {"model": "openhead"})
    dense = dense_template(model.data)
    request = objects.rig_request(det, head)
    coords = anim.detail_coordinates(ctx, model, dense, request["base"], request["displacement"])

    # a 300-frame performance on the low-res head: keys and jaw/neck rotations
    frames = 300
    keys = head.data.shape_keys.key_blocks
    jaw, neck = head.parent.pose.bones["jaw"], head.parent.pose.bones["neck"]
    for f in range(1, frames + 1, 10):
        phase = f / frames * 2 * np.pi
        for name, amp in (("jawOpen", 0.6), ("mouthSmileLeft", 0.8), ("browInnerUp", 0.5), ("eyeBlinkLeft", 1.0)):
            keys[name].value = amp * (0.5 + 0.5 * np.sin(3 * phase + len(name)))
            keys[name].keyframe_insert("value", frame=f)
        jaw.rotation_euler = (0.15 * (0.5 + 0.5 * np.sin(2 * phase)), 0, 0)
        neck.rotation_euler = (0.1 * np.sin(phase), 0.3 * np.sin(phase), 0)
        jaw.keyframe_insert("rotation_euler", frame=f)
        neck.keyframe_insert("rotation_euler", frame=f)
    scene.frame_start, scene.frame_end = 1, frames
    scene.headcraft.animate.scene_range = True
    # the exact bake before the rig exists (with a rig, its deviation is measured on top)
    t = time.perf_counter()
    assert bpy.ops.headcraft.bake_animation() == {"FINISHED"}
    t_bake = time.perf_counter() - t
    scene.objects[f"{det.name} Baked"].hide_viewport = True
    anim.carried(ctx, model, dense, request["coarse_neutral"][None], coords)       # warm caches
    t = time.perf_counter()
    for f in range(1, 11):
        anim.carried(ctx, model, dense, objects.coarse_frames(bpy.context, head, range(f, f + 1)), coords)
    per_frame_exact = (time.perf_counter() - t) / 10
    print(f"exact bake, {frames} frames of {V:,} vertices to PC2 (Blender + backend): {t_bake:.1f} s (target <= 30) | "
          f"one frame per request: {per_frame_exact * frames:.1f} s | x{per_frame_exact * frames / t_bake:.1f}")

    t = time.perf_counter()
    assert bpy.ops.headcraft.build_rig() == {"FINISHED"}
    t_rig = time.perf_counter() - t
    rig = objects.rig_of(det)
    coarse = request["coarse_neutral"][None] + model.data.exprdirs[..., :10].transpose(2, 0, 1)
    t = time.perf_counter()
    for c in coarse:
        heads = anim.carried(ctx, model, dense, c[None], coords)
    obj = bpy.data.objects.new("base", det.data.copy())
    scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for k in range(10):
        kb = obj.shape_key_add(name=f"k{k}", from_mix=False)
        kb.data.foreach_set("co", heads[0].astype(np.float64).ravel().tolist())
    t_rig_base = (time.perf_counter() - t) * 53 / 10
    me = obj.data
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(me)
    print(f"detailed rig, 52 expression keys on {V:,} vertices (backend + Blender): {t_rig:.1f} s (target <= 10) | "
          f"one expression at a time, key_block.data float64: {t_rig_base:.1f} s | x{t_rig_base / t_rig:.1f}")

    dg = bpy.context.evaluated_depsgraph_get()
    times = []
    for f in range(1, 49):
        t = time.perf_counter()
        scene.frame_set(f)
        rig.evaluated_get(dg).data.vertices[0].co.x
        times.append((time.perf_counter() - t) * 1e3)
    per = statistics.median(times)
    print(f"one frame of the detailed rig in Blender (52 keys + armature, {V:,} vertices): {per:.0f} ms "
          f"(target <= 40) | the exact head per frame: {per_frame_exact * 1e3:.0f} ms | "
          f"x{per_frame_exact * 1e3 / per:.1f}")


def main() -> int:
    backend = LocalBackend(sys.executable, DEVICE)
    backend.start()
    conn = backend.connect()
    try:
        print(f"backend and torch rows on {DEVICE}: {conn.info['device_name']} ({conn.info['torch_version']})")
        chosen = set(ARGS) or {"wire", "add-head", "registration", "real-fit", "maps",
                                             "generate", "animate"}   # e.g. bench.py maps
        if "wire" in chosen:
            bench_roundtrip(conn)
        if "add-head" in chosen:
            bench_add_head()
        if "registration" in chosen:
            bench_registration()
        if "real-fit" in chosen:
            bench_real_fit()
        if "maps" in chosen:
            bench_maps()
        if "generate" in chosen:
            bench_generate()
        if "animate" in chosen:
            bench_animate()
    finally:
        backend.stop(conn)
        disable_extension(ext)
    return 0




def bench_registration() -> None:
    """Both registration stages on the 124K-vertex OpenHead dense template against a 200K-point
    scan: our KD-tree pairs vs an exact torch.cdist search every step (the straightforward
    implementation), per step; and final Chamfer of both on a smaller problem run to the end."""
    import resource

    import torch
    from headcraft_backend.fit.register import Registration, preset
    from headcraft_backend.fit.scan import Scan
    from headcraft_backend.head.dense import DenseRebuild, dense_template
    from headcraft_backend.units import to_units
    from headcraft_backend.head.model import HeadModel
    from headcraft_backend.head.registry import load_model_data
    d = load_model_data({"model": "openhead"})
    dense = dense_template(d)
    m = HeadModel(d)
    with torch.no_grad():
        rb = DenseRebuild(dense, d.faces)
        base = to_units(rb(m.v_template[None])[0]).numpy()
        target = to_units(rb(m(shape=torch.full((1, 10), 0.6)).vertices)[0]).numpy()
    scan = Scan(target.astype(np.float32), dense.faces).sample_points(200_000)

    s = preset("paper")
    runs = {}
    for n in (25, 75):          # the slope is the step; the intercept the set-up (trees, matrices)
        s.stage1.steps = s.stage2.steps = n
        t = time.perf_counter()
        Registration(base, dense.faces, dense.regions, scan, s, device=DEVICE).run()
        _sync()
        runs[n] = time.perf_counter() - t
    ours = (runs[75] - runs[25]) / 100
    setup = runs[25] - 50 * ours
    # The exact search of one step costs |template| x |scan| distance evaluations each way:
    # timed on 5,000 template vertices and scaled (a whole step takes minutes here).
    from headcraft_backend.fit.losses import _chunked_argmin
    sub, pts = torch.as_tensor(base[:5000], device=DEVICE), torch.as_tensor(scan, device=DEVICE)
    _chunked_argmin(sub[:100], pts, 2048)       # warm-up
    _sync()
    t = time.perf_counter()
    _chunked_argmin(sub, pts, 2048)
    _sync()
    per_pair = (time.perf_counter() - t) / (5000 * len(scan))
    base_step = ours + 2 * per_pair * len(base) * len(scan)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{DEVICE}] registration, {len(base):,}-vertex template, {len(scan):,}-point scan: {ours * 1e3:.0f} ms/step "
          f"+ {setup:.1f} s set-up -> both stages at paper defaults (2 x 1000 steps) ~{setup + ours * 2000:.0f} s "
          f"(target <= 180 s) | "
          f"torch.cdist baseline ~{base_step:.0f} s/step (~{base_step * 2000 / 3600:.0f} h) | "
          f"speed-up x{base_step / ours:.0f} | peak RSS {peak:.0f} MB")
    # Equal final error: coarse template vs 10K points, 100 + 100 steps, both searches.
    small_scan = Scan(to_units(m(shape=torch.full((1, 10), 0.6)).vertices[0].detach().numpy()).astype(np.float32),
                      d.faces).sample_points(10_000)
    from scipy.spatial import cKDTree
    errs = []
    for bf in (False, True):
        s = preset("preview")
        s.stage1.steps = s.stage2.steps = 100
        s.bruteforce = bf
        res = Registration(to_units(d.v_template), d.faces, d.regions, small_scan, s, device=DEVICE).run()
        errs.append(float(np.median(cKDTree(small_scan).query(res.final)[0])))
    print(f"  equal final error check (4,570 vertices, 10K points, 2 x 100 steps): median distance "
          f"{errs[0]:.4f} (KD-tree, refreshed every 10 steps) vs {errs[1]:.4f} units (exact every step)")


def bench_real_fit() -> None:
    """A whole Fit Scan (landmarks, coarse fit, both stages at the paper preset with their early
    stop, error figures) of the real Demosthenes bust subdivided to over 500K vertices, against
    the same fit with the exact all-pairs search per step (its steps timed on a sample)."""
    scan_path = ROOT.parent / "shared" / "data" / "real_scans" / "demosthenes.obj"
    if not scan_path.is_file():
        print(f"real-scan fit: skipped, {scan_path} not found")
        return
    import torch
    import trimesh
    from headcraft_backend.fit.losses import _chunked_argmin
    from headcraft_backend.fit.pipeline import FitOptions, fit_scan
    from headcraft_backend.fit.scan import load_scan_file, sanitize
    from headcraft_backend.head.dense import dense_template
    from headcraft_backend.head.model import HeadModel
    from headcraft_backend.head.registry import load_model_data
    small = load_scan_file(scan_path)
    v, f = np.asarray(small.vertices), np.asarray(small.faces)
    for _ in range(3):               # midpoint subdivision: the same surface, 64x the triangles
        v, f = trimesh.remesh.subdivide(v, f)
    scan = sanitize(v.astype(np.float32), f)
    data = load_model_data({"model": "openhead"})
    dense = dense_template(data)
    t = time.perf_counter()
    res = fit_scan(HeadModel(data).to(DEVICE), dense, scan, FitOptions(preset="paper"), device=DEVICE)
    _sync()
    seconds = time.perf_counter() - t
    steps = sum(1 + max(h["step"] for h in res.registration.history if h["stage"] == st)
                for st in ("stage 1", "stage 2"))
    points = torch.as_tensor(scan.sample_points(200_000), device=DEVICE)
    sub = torch.as_tensor(res.registration.final[:5000], device=DEVICE)
    _chunked_argmin(sub[:100], points, 2048)       # warm-up
    _sync()
    t = time.perf_counter()
    _chunked_argmin(sub, points, 2048)
    _sync()
    per_pair = (time.perf_counter() - t) / (5000 * len(points))
    exact = seconds + steps * 2 * per_pair * len(res.final) * len(points)
    face = res.report["face"]
    print(f"[{DEVICE}] Fit Scan of a real {len(scan.vertices):,}-vertex scan (Demosthenes, subdivided), paper preset, "
          f"{steps} registration steps: {seconds:.0f} s (target <= 180) | exact search every step "
          f"~{exact / 3600:.1f} h | speed-up x{exact / seconds:.0f} | face median "
          f"{face['result_to_scan_median']:.3f} mm")


def bench_maps() -> None:
    """Bake a 1024^2 map from the dense OpenHead (124K vertices, 248K triangles) and apply a
    256^2 map with seam processing, against a per-triangle Python loop doing the same lookups."""
    from headcraft_backend.head.dense import dense_template
    from headcraft_backend.head.registry import load_model_data
    from headcraft_backend.layout import texels
    from headcraft_backend.layout.store import dense_uv, get_layout
    d = load_model_data({"model": "openhead"})
    dense = dense_template(d)
    uv = dense_uv(dense.corner_tri, dense.corner_bary, get_layout(d).uv)
    faces = dense.faces.astype(np.int64)
    values = np.random.default_rng(0).normal(size=(dense.num_vertices, 3)).astype(np.float32)

    def ours_bake():
        texels.bake(texels.rasterize(uv, 1024), faces, values)

    def loop_bake(limit):
        """Per triangle: its texel box, barycentrics, interpolated values (first `limit` triangles)."""
        out = np.zeros((1024, 1024, 3), np.float32)
        for f in range(limit):
            p = texels.texel_coords(uv[f], 1024)
            x0, y0 = np.maximum(np.ceil(p.min(0)).astype(int), 0)
            x1, y1 = np.minimum(np.floor(p.max(0)).astype(int), 1023)
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    b = texels._barycentric(p[None], np.array([[x, y]], float))[0]
                    if (b >= 0).all():
                        out[y, x] = b @ values[faces[f]]
    ms = median_ms(ours_bake, repeats=3)
    n = 20_000
    t = time.perf_counter()
    loop_bake(n)
    loop_ms = (time.perf_counter() - t) * 1e3 * len(faces) / n
    print(f"[cpu, numpy] bake 1024^2 from {len(faces):,} triangles (rasterise + interpolate): {ms:.0f} ms (target <= 1000) | "
          f"per-triangle loop ~{loop_ms / 1e3:.0f} s | x{loop_ms / ms:.0f}")

    t = time.perf_counter()
    ops = texels.map_operators(faces, uv, dense.num_vertices, 256)
    cold = (time.perf_counter() - t) * 1e3
    m = np.random.default_rng(1).normal(size=(256, 256, 3)).astype(np.float32)
    warm = median_ms(lambda: ops.apply(m))

    def loop_apply(limit):
        acc = np.zeros((dense.num_vertices, 3))
        cnt = np.zeros(dense.num_vertices)
        for f in range(limit):
            for c in range(3):
                x, y = np.clip(texels.texel_coords(uv[f, c], 256), 0, 255)
                x0, y0 = min(int(x), 254), min(int(y), 254)
                fx, fy = x - x0, y - y0
                val = ((1 - fx) * (1 - fy) * m[y0, x0] + fx * (1 - fy) * m[y0, x0 + 1]
                       + (1 - fx) * fy * m[y0 + 1, x0] + fx * fy * m[y0 + 1, x0 + 1])
                acc[faces[f, c]] += val
                cnt[faces[f, c]] += 1
    t = time.perf_counter()
    loop_apply(n)
    loop_ms = (time.perf_counter() - t) * 1e3 * len(faces) / n
    print(f"[cpu, numpy] apply 256^2 to {dense.num_vertices:,} vertices with seam processing: {warm:.1f} ms per map "
          f"(target <= 50; operators built once per layout in {cold:.0f} ms) | per-triangle bilinear loop "
          f"without seam processing ~{loop_ms:.0f} ms | x{loop_ms / warm:.0f}")


def bench_generate() -> None:
    """One 256^2 6-channel sample of the published-size generator (random weights): two
    synthesis passes, unpacked, face low-pass, seam-processed and applied to the 124K-vertex
    head. Baseline: the same two passes recorded for autograd as a training loop would, and
    the map operators built for the sample instead of cached per layout."""
    import torch
    from headcraft_backend.head.dense import dense_template
    from headcraft_backend.generate.networks import Generator
    from headcraft_backend.generate.sample import face_lowpass, generate_maps, latents, seeds_to_z, unpack
    from headcraft_backend.head.registry import load_model_data
    from headcraft_backend.layout import texels
    from headcraft_backend.layout.store import dense_uv, get_layout
    torch.manual_seed(0)
    G = Generator().eval().to(DEVICE)
    d = load_model_data({"model": "openhead"})
    dense = dense_template(d)
    uv = dense_uv(dense.corner_tri, dense.corner_bary, get_layout(d).uv)
    faces = dense.faces.astype(np.int64)
    ops = texels.map_operators(faces, uv, dense.num_vertices, 256)

    def ours():
        ops.apply(generate_maps(G, [1])[0])
        _sync()

    def baseline():
        ws = latents(G, seeds_to_z([1], G.z_dim))
        with torch.enable_grad():
            scalp = G.synthesis(ws, noise_mode="const")
            face = G.synthesis(ws, noise_mode="none")
        m = face_lowpass(unpack(torch.cat([face[:, :3], scalp[:, 3:]], 1)[0]))
        texels.map_operators(faces, uv, dense.num_vertices, 256).apply(m)
    ms, base = median_ms(ours, repeats=5), median_ms(baseline, repeats=3)
    print(f"[{DEVICE}] generate one 256^2 sample (2 passes, 23.7M-parameter generator) + unpack + seams + apply to "
          f"{dense.num_vertices:,} vertices: {ms:.0f} ms (target <= 1000) | straightforward: {base:.0f} ms | "
          f"x{base / ms:.1f}")
    base = (d.v_template[d.faces[dense.vertex_tri]] * dense.vertex_bary[..., None]).sum(1)
    bench_scrub(dense, base, uv, ms)


def bench_scrub(dense, base, uv, per_sample_ms: float, steps: int = 8, frames: int = 48) -> None:
    """Scrubbing an interpolation: the keyframed factor drives the cached steps' shape keys, so
    each frame is one depsgraph evaluation. Baseline: a fresh sample per frame (the figure above)."""
    from bl_ext.bench.headcraft.generate.operators import _interpolation_object
    rng = np.random.default_rng(0)
    out = {"base": base.astype(np.float32), "dense_faces": dense.faces, "dense_uv": uv,
           **{f"displacement_{i}": rng.normal(0, 0.05, base.shape).astype(np.float32)
              for i in range(steps)}}
    from mathutils import Matrix
    obj = _interpolation_object(bpy.context, "Scrub", Matrix(), {"layout": "headcraft"}, out, steps)
    scene = bpy.context.scene
    obj["headcraft_factor"] = 0.0
    obj.keyframe_insert('["headcraft_factor"]', frame=1)
    obj["headcraft_factor"] = 1.0
    obj.keyframe_insert('["headcraft_factor"]', frame=frames)
    dg = bpy.context.evaluated_depsgraph_get()
    sample = []
    t = time.perf_counter()
    for f in range(1, frames + 1):
        scene.frame_set(f)
        sample.append(obj.evaluated_get(dg).data.vertices[dense.num_vertices // 2].co.x)
    per_frame = (time.perf_counter() - t) * 1e3 / frames
    assert len(set(sample)) > frames // 2, "the factor did not move the head"
    print(f"interpolation scrubbing, {steps} cached steps on {dense.num_vertices:,} vertices: {1e3 / per_frame:.0f} "
          f"updates/s (target >= 5) | a fresh sample per frame: {1e3 / per_sample_ms:.1f} updates/s | "
          f"x{per_sample_ms / per_frame:.0f}")
    me = obj.data
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(me)


if __name__ == "__main__":
    sys.exit(main())
