"""`headcraft-backend synth`: procedural scans (procedural/scans.py) with their ground truth,
written to a folder deterministically from one seed. Scan i has the seed `seed + i` and is the
same whatever else is generated with it.

OUT/
  manifest.json                 the scans: file, seed, hair style (and look), orientation hints, units
  scan_000007.ply               a scan mesh (PLY or OBJ; vertex colours with `colour`)
  truth/scan_000007.npz         its ground truth: SyntheticScan's fields (`read_truth`), ~9 MB
  views/scan_000007_view0.ply   `views`: partial depth views, points and normals (scan frame)
  sparse/scan_000007_view0.ply  `sparse`: that many points of each view

The folder is ready for `register-dataset`, which reads only the top level (the meshes) and
takes each scan's up and forward directions from the manifest; views/ and sparse/ have their
own manifests, for `register-dataset --partial depth` / `--partial sparse`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..procedural.scans import HAIRSTYLES, HEADWEAR, SyntheticScan, make_scan, partial_view, random_look, sparse_subset
from ..head.data import HeadModelData

# The names for styles that HAIRSTYLES spells differently.
HAIR_ALIASES = {"buzz-cut": "buzz", "shoulder-length": "long", "bald": "none"}
MESH_FORMATS = ("ply", "obj")
MAX_VIEWS = 32


@dataclasses.dataclass
class SynthOptions:
    n: int = 10
    seed: int = 0
    hair: str = "random"          # a style (or alias), "random": HAIRSTYLES[scan seed % 9], or
                                  # "varied": random_look(scan seed) (hair volumes, beards, headwear...)
    colour: bool = False          # procedural vertex colours (they help the automatic landmarks)
    noise_mm: float = 0.2         # scanner noise along the normals (standard deviation)
    holes: int = 3                # random holes in the scan
    max_rotation_deg: float = 25.0  # random rotation about each axis (0: upright, face +Z)
    views: int = 0                # partial depth views per scan
    sparse: int = 0               # points per sparse cloud (one per view)
    mesh_format: str = "ply"
    headwear: str = "random"      # with "varied": a HEADWEAR kind on every scan, or as drawn

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        if self.n < 1 or self.seed < 0:
            raise ValueError("--n must be at least 1 and --seed at least 0")
        if self.hair not in ("random", "varied"):
            style(self.hair)
        if self.headwear != "random" and (self.hair != "varied" or self.headwear not in HEADWEAR):
            raise ValueError(f"--headwear takes random or one of {', '.join(HEADWEAR)}, and needs --hair varied")
        if self.noise_mm < 0 or self.holes < 0:
            raise ValueError("--noise-mm and --holes must be at least 0")
        if not 0 <= self.max_rotation_deg <= 180:
            raise ValueError("--max-rotation must be between 0 and 180 degrees")
        if not 0 <= self.views <= MAX_VIEWS:
            raise ValueError(f"--views must be between 0 and {MAX_VIEWS}")
        if self.sparse < 0 or (self.sparse and not self.views):
            raise ValueError("--sparse takes points from the depth views: give --views 1 or more")
        if self.mesh_format not in MESH_FORMATS:
            raise ValueError(f"unknown mesh format {self.mesh_format!r}; choose {', '.join(MESH_FORMATS)}")


def style(name: str) -> str:
    """A HAIRSTYLES name from a style or an alias; ValueError for anything else."""
    name = HAIR_ALIASES.get(name, name)
    if name not in HAIRSTYLES:
        known = ", ".join([*HAIRSTYLES, *HAIR_ALIASES])
        raise ValueError(f"unknown hair style {name!r}; choose random, varied or one of {known}")
    return name


def scan_style(hair: str, scan_seed: int) -> str:
    return HAIRSTYLES[scan_seed % len(HAIRSTYLES)] if hair == "random" else style(hair)


def view_seed(scan_seed: int, k: int) -> int:
    """An independent seed for view k of a scan."""
    return int(np.random.SeedSequence([scan_seed, k]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def write_ply(path: Path, vertices, faces=None, colors=None, normals=None) -> None:
    """Binary little-endian PLY: float32 positions, optional normals, uint8 RGB colours and
    triangles."""
    v = np.asarray(vertices)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(v), dtype=fields)
    rec["x"], rec["y"], rec["z"] = v.T
    if normals is not None:
        rec["nx"], rec["ny"], rec["nz"] = np.asarray(normals).T
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = np.asarray(colors, np.uint8).T
    kind = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              *(f"property {kind[t]} {n}" for n, t in fields)]
    body = [rec.tobytes()]
    if faces is not None:
        f = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        f["n"], f["i"] = 3, faces
        header += [f"element face {len(f)}", "property list uchar int vertex_indices"]
        body.append(f.tobytes())
    path.write_bytes(("\n".join(header) + "\nend_header\n").encode() + b"".join(body))


def write_obj(path: Path, vertices, faces, colors=None) -> None:
    """OBJ; vertex colours as `v x y z r g b` (0-1), which trimesh and Blender read."""
    v = np.asarray(vertices, np.float64)
    if colors is None:
        lines = ("v %.9g %.9g %.9g\n" * len(v)) % tuple(v.ravel())
    else:
        both = np.concatenate([v, np.asarray(colors, np.float64) / 255.0], 1)
        lines = ("v %.9g %.9g %.9g %.4f %.4f %.4f\n" * len(v)) % tuple(both.ravel())
    f = np.asarray(faces, np.int64) + 1
    path.write_text(lines + ("f %d %d %d\n" * len(f)) % tuple(f.ravel()))


def truth_arrays(scan: SyntheticScan) -> dict[str, np.ndarray]:
    """Every field of the scan but the mesh itself (in the scan file, same vertex order) as a
    plain array (strings as unicode arrays, so loading needs no pickle); a dict field becomes
    one `<field>.<key>` entry per key. Adds `similarity_matrix` (4x4, model metres -> scan)."""
    out = {}
    for field in dataclasses.fields(scan):
        value = getattr(scan, field.name)
        if field.name in ("vertices", "faces", "colors"):
            continue
        if isinstance(value, dict):
            out.update({f"{field.name}.{k}": np.asarray(x) for k, x in value.items()})
        elif value is not None:
            out[field.name] = np.asarray(value)
    out["similarity_matrix"] = scan.similarity_matrix()
    return out


def read_truth(path: str | Path) -> dict:
    """A truth file back as a dict: arrays, plain numbers/strings for scalars, and the dict
    fields (`truth_regions`, `expression_keys`) regrouped."""
    out: dict = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            value = z[key]
            value = value.item() if value.ndim == 0 else value
            head, dot, tail = key.partition(".")
            if dot:
                out.setdefault(head, {})[tail] = value
            else:
                out[key] = value
    return out


# ------------------------------------------------------------------------------------------------
# The set
# ------------------------------------------------------------------------------------------------
def write_set(data: HeadModelData, out: str | Path, options: SynthOptions,
              report: Callable[[str], None] = print) -> dict:
    """Writes options.n scans (see the module doc) and returns the manifest."""
    options.check()
    out = Path(out)
    for sub in ("truth", *(("views",) if options.views else ()), *(("sparse",) if options.sparse else ())):
        (out / sub).mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(options)
    done = _finished_entries(out, settings)
    entries = []
    for i in range(options.n):
        seed = options.seed + i
        e = done.get(seed) or _write_scan(data, out, options, seed)
        entries.append(e)
        report(f"[{i + 1}/{options.n}] {e['file']}: hair {e['hair']}, {e['vertices']:,} vertices"
               + (f", {len(e['views'])} view(s)" if e["views"] else "") + (" (kept)" if seed in done else ""))
        manifest = {"generator": f"headcraft-backend {__version__} synth", "model": data.name,
                    "model_version": data.version, "seed": options.seed, "n": options.n,
                    "settings": settings, "scans": entries}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")   # after each scan: resumable
    # views/ and sparse/ get the hints too, so `register-dataset OUT/views --partial depth` works.
    for sub in ("views", "sparse"):
        clouds = [{"file": Path(f).name, "scan": e["file"], "up": e["up"], "forward": e["forward"]}
                  for e in entries for f in e[sub]]
        if clouds:
            (out / sub / "manifest.json").write_text(json.dumps({"scans": clouds}, indent=1) + "\n")
    return manifest


def _finished_entries(out: Path, settings: dict) -> dict[int, dict]:
    """Scans of an earlier run with the same settings (but n) whose files all exist, by seed."""
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    # Settings added since an old run had their defaults in it.
    old_settings = {**dataclasses.asdict(SynthOptions()), **old.get("settings", {})}
    same = {k: v for k, v in old_settings.items() if k not in ("n", "seed")} == \
        {k: v for k, v in settings.items() if k not in ("n", "seed")}
    return {e["seed"]: e for e in old.get("scans", []) if same and all(
        (out / f).is_file() for f in (e["file"], e["truth"], *e["views"], *e["sparse"]))}


def _write_scan(data: HeadModelData, out: Path, o: SynthOptions, scan_seed: int) -> dict:
    if o.hair == "varied":
        fixed = {} if o.headwear == "random" else {"headwear": o.headwear}
        scan = make_scan(data, scan_seed, look=random_look(scan_seed, **fixed), noise_mm=o.noise_mm,
                         holes=o.holes, color=o.colour, max_rotation_deg=o.max_rotation_deg)
    else:
        scan = make_scan(data, scan_seed, hair=scan_style(o.hair, scan_seed), noise_mm=o.noise_mm,
                         holes=o.holes, color=o.colour, max_rotation_deg=o.max_rotation_deg)
    name = f"scan_{scan_seed:06d}"
    mesh = f"{name}.{o.mesh_format}"
    if o.mesh_format == "ply":
        write_ply(out / mesh, scan.vertices, scan.faces, scan.colors)
    else:
        write_obj(out / mesh, scan.vertices, scan.faces, scan.colors)
    truth = truth_arrays(scan)
    views, sparse = [], []
    for k in range(o.views):
        vs = view_seed(scan_seed, k)
        pv = partial_view(scan, vs)
        views.append(f"views/{name}_view{k}.ply")
        write_ply(out / views[-1], pv.points, normals=pv.normals)
        for field in dataclasses.fields(pv):
            if field.name not in ("points", "normals"):     # those are in the view's file
                truth[f"view{k}_{field.name}"] = np.asarray(getattr(pv, field.name))
        if o.sparse:
            pts, idx = sparse_subset(pv.points, o.sparse, seed=vs, return_index=True)
            sparse.append(f"sparse/{name}_view{k}.ply")
            write_ply(out / sparse[-1], pts, normals=pv.normals[idx])
            truth[f"view{k}_sparse_index"] = idx    # into view k's points
    np.savez_compressed(out / "truth" / f"{name}.npz", **truth)
    return {"file": mesh, "truth": f"truth/{name}.npz", "seed": scan_seed, "hair": scan.hair,
            **({"look": scan.look} if scan.look else {}),
            # The head's up (+Y) and forward (+Z) axes in the scan frame: register-dataset's hints.
            "up": (scan.rotation @ [0.0, 1.0, 0.0]).tolist(),
            "forward": (scan.rotation @ [0.0, 0.0, 1.0]).tolist(),
            "mm_per_unit": scan.mm_per_scan_unit, "vertices": len(scan.vertices),
            "views": views, "sparse": sparse}
