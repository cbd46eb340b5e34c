"""Scans in: read files, clean up what real scans get wrong, and say what was done."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..limits import MAX_FACES_PER_VERTEX, MAX_FIT_VERTICES, MAX_SCAN_FACES, MAX_SCAN_VERTICES
from ..errors import UserError

SCAN_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
# Textures are only seen in 512-pixel landmark renders: a face never needs more texels than a
# 4096-pixel atlas gives it, and a 16K atlas would take 0.8 GB.
MAX_TEXTURE_SIZE = 4096
# Above this many faces, normals come from the nearest vertex (smooth normals) rather than the
# nearest triangle: the exact search would hold several copies of every triangle.
_EXACT_NORMALS_MAX_FACES = 1_000_000


@dataclasses.dataclass
class Scan:
    vertices: np.ndarray                # (N, 3) float32, scan frame, any unit
    faces: np.ndarray | None            # (F, 3) int32, None for a point cloud
    colors: np.ndarray | None = None    # (N, 3) float32 in [0, 1]
    notes: list[str] = dataclasses.field(default_factory=list)
    texture: np.ndarray | None = None   # (H, W, 3) uint8 image, with `uv`
    uv: np.ndarray | None = None        # (N, 2) float32 per-vertex texture coordinates (v up)

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None and len(self.faces) > 0

    def sample_points(self, n: int, seed: int = 0) -> np.ndarray:
        """n points spread over the surface by area (a mesh) or a subset (a cloud). Only the picked
        triangles are gathered, so a scan of millions of triangles costs a few arrays of F floats."""
        rng = np.random.default_rng(seed)
        if not self.is_mesh:
            if len(self.vertices) <= n:
                return self.vertices
            return self.vertices[rng.choice(len(self.vertices), n, replace=False)]
        assert self.faces is not None   # a mesh
        area = _double_areas(self.vertices, self.faces)
        pick = rng.choice(len(area), n, p=area / area.sum())
        w = rng.random((n, 2))
        flip = w.sum(1) > 1
        w[flip] = 1 - w[flip]
        t = self.vertices[self.faces[pick]].astype(np.float64)
        return (t[:, 0] + w[:, :1] * (t[:, 1] - t[:, 0]) + w[:, 1:] * (t[:, 2] - t[:, 0])).astype(np.float32)

    def surface_normals(self, points: np.ndarray, k: int = 12) -> np.ndarray:
        """Unit normals at points on the scan (their sign is arbitrary): the nearest triangle's
        for a mesh (the nearest vertex's area-weighted normal for meshes of over a million
        triangles), the direction of least spread of the k nearest points for a cloud."""
        points = np.asarray(points, np.float64)
        if self.faces is not None and len(self.faces) > _EXACT_NORMALS_MAX_FACES:   # a big mesh
            _, nearest = cKDTree(self.vertices).query(points, workers=-1)
            from .render import vertex_normals
            n = vertex_normals(self.vertices, self.faces)[nearest]
        elif self.is_mesh:
            assert self.faces is not None
            from .metrics import surface_distances
            _, tri, _ = surface_distances(points, self.vertices, self.faces, return_closest=True)
            t = self.vertices[self.faces[tri]].astype(np.float64)
            n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        else:
            cloud = np.asarray(self.vertices, np.float64)
            _, nb = cKDTree(cloud).query(points, k=min(k, len(cloud)), workers=-1)
            local = cloud[nb] - cloud[nb].mean(1, keepdims=True)
            n = np.linalg.eigh(np.einsum("nki,nkj->nij", local, local))[1][:, :, 0]
        return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_scan_file(path: str | Path) -> Scan:
    """OBJ, PLY, GLB/glTF, STL or OFF through trimesh (scenes are merged)."""
    import trimesh
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if path.suffix.lower() not in SCAN_SUFFIXES:
        raise UserError(f"{path.name}: unsupported scan format; use {', '.join(SCAN_SUFFIXES)}")
    try:
        declared = declared_counts(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path.name}: cannot read it as a scan ({exc})") from None
    if declared is not None:
        check_scan_counts(path.name, *declared)
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many kinds for broken files
        raise UserError(f"{path.name}: cannot read it as a scan ({exc})") from None
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise UserError(f"{path.name}: the file holds no geometry")
        parts = loaded.dump()
        if len(parts) > 1:      # several atlases cannot share one image: their colours go to the vertices
            for part in parts:    # (a path has no visual)
                if isinstance(part, trimesh.Trimesh) and isinstance(part.visual, trimesh.visual.TextureVisuals):
                    part.visual = part.visual.to_color()
        loaded = trimesh.util.concatenate(parts)
    colors = texture = uv = None
    if isinstance(loaded, trimesh.PointCloud):
        verts, faces = np.asarray(loaded.vertices), None
        if getattr(loaded, "colors", None) is not None and len(loaded.colors) == len(verts):
            colors = np.asarray(loaded.colors)[:, :3] / 255.0
    elif isinstance(loaded, trimesh.Trimesh):
        verts, faces = np.asarray(loaded.vertices), np.asarray(loaded.faces)
        visual = loaded.visual
        assert visual is not None    # a Trimesh always has one (trimesh types it Optional)
        vc = getattr(visual, "vertex_colors", None) if visual.kind == "vertex" else None
        if vc is not None and len(vc) == len(verts):
            colors = np.asarray(vc)[:, :3] / 255.0
        if visual.kind == "texture":
            texture, uv = _texture_of(visual)
    else:
        raise UserError(f"{path.name}: not a mesh or point cloud ({type(loaded).__name__})")
    return sanitize(verts, faces, colors, name=path.name, texture=texture, uv=uv)


def _texture_of(visual) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A textured trimesh's (image (H, W, 3) uint8 at most MAX_TEXTURE_SIZE a side, per-vertex uv):
    an OBJ's map_Kd, a glTF's baseColorTexture; (None, None) when it has no image."""
    material = visual.material
    if hasattr(material, "to_simple"):          # glTF PBR: the base colour texture
        material = material.to_simple()
    image = getattr(material, "image", None)
    if image is None or visual.uv is None:
        return None, None
    if max(image.size) > MAX_TEXTURE_SIZE:
        image = image.copy()
        image.thumbnail((MAX_TEXTURE_SIZE, MAX_TEXTURE_SIZE))
    return np.asarray(image.convert("RGB")), np.asarray(visual.uv, np.float32)


def check_scan_counts(name: str, n_vertices: int, n_faces: int) -> None:
    """Refuse a scan too large to hold, before anything is allocated for it. The limits are far
    above real photogrammetry (MAX_SCAN_VERTICES, MAX_SCAN_FACES); large scans within them are
    accepted here, for decimation or the fit's own limit to deal with. A surface has about two
    triangles per vertex: more than MAX_FACES_PER_VERTEX is not a scan."""
    if n_vertices > MAX_SCAN_VERTICES or n_faces > MAX_SCAN_FACES:
        raise UserError(f"{name} has {n_vertices:,} vertices and {n_faces:,} faces; a scan may have at most "
                        f"{MAX_SCAN_VERTICES:,} vertices and {MAX_SCAN_FACES:,} faces")
    if n_faces > MAX_FACES_PER_VERTEX * n_vertices:
        raise UserError(f"{name} has {n_faces:,} faces on {n_vertices:,} vertices: not a surface (a scan "
                        f"has about two triangles per vertex)")


def declared_counts(path: Path) -> tuple[int, int] | None:
    """(vertices, faces) a scan file declares, found without loading it: PLY/OFF headers, an
    STL's triangle count, an OBJ's 'v'/'f' lines. ValueError when the file is too small to hold
    what its header claims; None for formats read whole (glTF)."""
    suffix, size = path.suffix.lower(), path.stat().st_size
    with open(path, "rb") as fh:
        if suffix == ".obj":
            return _count_obj_lines(fh)
        head = fh.read(1 << 16)
    if suffix == ".ply":
        return _ply_counts(head, size)
    if suffix == ".off":
        words = b" ".join(line.split(b"#")[0] for line in head.splitlines()[:8]).split()
        if not words or not words[0].endswith(b"OFF") or len(words) < 3:
            raise ValueError("no OFF header")
        nv, nf = int(words[1]), int(words[2])
        if 6 * nv + 8 * nf > size:     # at least "0 0 0\n" per vertex, "3 0 0 0\n" per face
            raise ValueError(f"its header claims {nv:,} vertices and {nf:,} faces, more than "
                             f"{size:,} bytes can hold")
        return nv, nf
    if suffix == ".stl":
        if head[:5].lower() == b"solid" and b"facet" in head[:1024]:     # ASCII
            with open(path, "rb") as fh:
                n = _count_in_chunks(fh, b"endfacet")
            return 3 * n, n
        n = int.from_bytes(head[80:84], "little") if len(head) >= 84 else 0
        if 84 + 50 * n > size:
            raise ValueError(f"it claims {n:,} triangles, more than {size:,} bytes can hold")
        return 3 * n, n
    return None


def _count_in_chunks(fh, needle: bytes, chunk: int = 1 << 24) -> int:
    count, tail = 0, b""
    while block := fh.read(chunk):
        data = tail + block             # the tail is too short to hold the needle alone
        count += data.count(needle)
        tail = data[-(len(needle) - 1):]
    return count


def _count_obj_lines(fh, chunk: int = 1 << 24) -> tuple[int, int]:
    """'v' and 'f' lines of an OBJ, read in chunks (a polygon counts once)."""
    counts = {b"\nv ": 0, b"\nf ": 0}
    tail = b"\n"                        # the first line starts a line too
    while block := fh.read(chunk):
        data = tail + block             # a 2-byte tail cannot hold a 3-byte needle alone
        for k in counts:
            counts[k] += data.count(k)
        tail = data[-2:]
    return counts[b"\nv "], counts[b"\nf "]


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2,
              "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
              "double": 8, "float64": 8}


def _ply_counts(head: bytes, size: int) -> tuple[int, int]:
    """Vertex and face counts of a PLY header, checked against the bytes the file has."""
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise ValueError("no PLY header (or one over 64 KiB)")
    ascii_ = b"format ascii" in head[:end]
    counts, least, element = {}, 0, None
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["element"] and len(words) == 3:
            element, n = words[1], int(words[2])
            counts[element] = n
        elif words[:1] == ["property"] and element is not None:   # the fewest bytes one element takes
            item = 2 if ascii_ else _PLY_SIZES.get(words[2] if words[1] == "list" else words[1], 1)
            least += counts[element] * item
    if least > size - end:
        raise ValueError(f"its header claims {counts}, more than {size:,} bytes can hold")
    return counts.get("vertex", 0), counts.get("face", 0)


def sanitize(vertices, faces=None, colors=None, name: str = "the scan", min_component: float = 0.02,
             max_vertices: int = MAX_FIT_VERTICES, near: float = 0.03, texture=None, uv=None) -> Scan:
    """Drop NaN/inf vertices, degenerate faces and small detached pieces; refuse what cannot
    be fitted, with a message that names the problem. A small piece stays when it lies close
    to the big ones (median distance under `near` times their size): eyeballs, teeth, an ear
    scanned apart; floating fragments and background go. A scan of more than `max_vertices`
    is decimated (:func:`cluster_decimate`), a textured one getting its texture's colours as
    vertex colours. texture (H, W, 3|4) with uv (N, 2) per vertex: kept for the landmark renders."""
    check_scan_counts(name, len(vertices), 0 if faces is None else len(faces))
    notes: list[str] = []
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise UserError(f"{name} is empty (no vertices)")
    f = None if faces is None or len(faces) == 0 else np.asarray(faces, dtype=np.int64)
    if f is not None and (f.ndim != 2 or f.shape[1] != 3):
        raise UserError(f"{name}: faces must be triangles (triangulate the mesh first)")
    if f is not None and (f.min() < 0 or f.max() >= len(v)):
        raise UserError(f"{name}: faces index vertices that do not exist")
    c = None
    if colors is not None:
        c = np.asarray(colors)
        if c.ndim != 2 or c.shape[0] != len(v) or c.shape[1] < 3:
            notes.append("ignored the vertex colours (not one RGB colour per vertex)")
            c = None
        else:   # 8-bit colours (0-255) become 0-1 like Blender's and trimesh's
            c = c[:, :3].astype(np.float32) / (255.0 if np.issubdtype(c.dtype, np.integer) else 1.0)
            c = np.clip(np.nan_to_num(c), 0.0, 1.0)
    tex, t_uv = _texture_inputs(texture, uv, len(v), notes)
    good = np.isfinite(v).all(1)
    if not good.all():
        bad = int((~good).sum())
        if bad > len(v) // 2:
            raise UserError(f"{name}: {bad:,} of {len(v):,} vertices are NaN or infinite")
        notes.append(f"dropped {bad:,} NaN/infinite vertices")
        v, f, (c, t_uv) = _keep_vertices(v, f, good, c, t_uv)
    if len(v) > max_vertices:
        baked = tex is not None
        if baked:
            assert tex is not None and t_uv is not None   # _texture_inputs gives both or neither
            from .render import sample_texture
            c, tex, t_uv = sample_texture(tex, t_uv), None, None
        n = len(v)
        v, f, (c,), cell = cluster_decimate(v, f, max_vertices, c)
        c = None if c is None else c.astype(np.float32)
        notes.append(f"decimated from {n:,} to {len(v):,} vertices (merged within cells of {cell:.3g} units)"
                     + ("; the texture became vertex colours" if baked else ""))
    if f is not None:
        area2 = _double_areas(v, f)
        ok = (area2 > 1e-12 * max(_surface_scale(v, f), 1e-12) ** 2) & \
             (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        if not ok.all():
            notes.append(f"dropped {int((~ok).sum()):,} degenerate triangles")
            f = f[ok]
        if len(f) == 0:
            raise UserError(f"{name}: every triangle is degenerate (zero area)")
        n_comp, label = connected_components(
            coo_matrix((np.ones(f.size), (np.repeat(f[:, 0], 3), f.reshape(-1))), shape=(len(v), len(v))),
            directed=False)
        used = np.zeros(len(v), bool)
        used[f.reshape(-1)] = True
        if n_comp > 1:
            sizes = np.bincount(label[used], minlength=n_comp)
            keep_comp = sizes >= min_component * sizes.max()
            keep_comp |= _close_pieces(v, label, sizes, keep_comp, near)
            keep = used & keep_comp[label]
            dropped = int((sizes > 0).sum() - keep_comp.sum())
            if dropped:
                notes.append(f"dropped {dropped} small detached piece(s) ({int(used.sum() - keep.sum()):,} vertices)")
        else:
            keep = used
        if not keep.all():
            v, f, (c, t_uv) = _keep_vertices(v, f, keep, c, t_uv)
    if np.ptp(v, axis=0).max() <= 0:
        raise UserError(f"{name} is degenerate: all its points coincide")
    if len(v) < 100:
        raise UserError(f"{name} has only {len(v)} usable points; a head scan needs thousands")
    return Scan(v.astype(np.float32), None if f is None else f.astype(np.int32), c, notes,
                tex, None if t_uv is None else t_uv.astype(np.float32))


def _texture_inputs(texture, uv, n: int, notes: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A texture as (H, W, 3) uint8 at most MAX_TEXTURE_SIZE a side (larger ones are strided) and
    its (n, 2) float64 uv, or (None, None) with a note when they do not go together."""
    if texture is None and uv is None:
        return None, None
    tex = None if texture is None else np.asarray(texture)
    t_uv = None if uv is None else np.asarray(uv, np.float64)
    if (tex is None or t_uv is None or tex.ndim not in (2, 3) or tex.size == 0
            or (tex.ndim == 3 and tex.shape[2] < 3) or t_uv.shape != (n, 2) or not np.isfinite(t_uv).all()):
        notes.append("ignored the texture (it needs an RGB image and one finite (u, v) per vertex)")
        return None, None
    step = -(-max(tex.shape[:2]) // MAX_TEXTURE_SIZE)
    tex = tex[::step, ::step]
    tex = np.repeat(tex[..., None], 3, 2) if tex.ndim == 2 else tex[..., :3]
    if tex.dtype == np.uint16:
        tex = tex >> 8
    elif not np.issubdtype(tex.dtype, np.integer):
        tex = np.clip(np.nan_to_num(tex.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5
    return np.ascontiguousarray(tex, dtype=np.uint8), t_uv


def cluster_decimate(vertices, faces, max_vertices: int, *per_vertex):
    """Vertex clustering: the vertices in each cell of a cubic grid merge into their mean (and so
    do their per-vertex arrays, e.g. colours; None stays None), triangles take the merged vertices
    and those left with a repeated corner go. The cell grows until at most `max_vertices` cells
    are occupied. One sort of the vertices: seconds for 20 M, where quadric edge collapse takes
    minutes; the surface stays within a cell of the input, and sub-cell noise averages out.

    Returns (vertices (M, 3) float64, faces (K, 3) int64 or None, [per-vertex arrays], cell size).
    """
    v = np.asarray(vertices)
    lo = v.min(0)
    if faces is not None:       # a surface of area A occupies about 1.5 A / cell^2 cells
        cell = math.sqrt(float(_double_areas(v, faces).sum()) / max_vertices)
    else:
        cell = float(np.ptp(v, axis=0).max()) / math.sqrt(max_vertices)
    cell = max(cell, 1e-12 * float(np.ptp(v, axis=0).max()))
    while True:
        ijk = ((v - lo) / cell).astype(np.int64)
        size = ijk.max(0) + 1
        _, inverse, counts = np.unique((ijk[:, 0] * size[1] + ijk[:, 1]) * size[2] + ijk[:, 2],
                                       return_inverse=True, return_counts=True)
        if len(counts) <= max_vertices:
            break
        cell *= 1.05 * math.sqrt(len(counts) / max_vertices)
    del ijk

    def mean(a):
        a = np.asarray(a).reshape(len(v), -1)
        return np.stack([np.bincount(inverse, a[:, k], len(counts)) for k in range(a.shape[1])], 1) / counts[:, None]

    out_f = None
    if faces is not None:
        g = inverse[np.asarray(faces)]
        out_f = g[(g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])]
    return mean(v), out_f, [None if a is None else mean(a) for a in per_vertex], cell


def surface_from_points(points: np.ndarray, depth: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A triangle surface through a point cloud (screened Poisson, MeshLab), so a cloud can be
    rendered for automatic landmarks. Normals from 10 neighbours, turned away from the
    centroid (a head is roughly star-shaped about it); faces far from every point are dropped."""
    import pymeshlab
    p = np.asarray(points, np.float64)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=p))
    ms.compute_normal_for_point_clouds(k=10)
    n = ms.current_mesh().vertex_normal_matrix()
    n[((p - p.mean(0)) * n).sum(1) < 0] *= -1
    ms.clear()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=p, v_normals_matrix=n))
    ms.generate_surface_reconstruction_screened_poisson(depth=depth, preclean=True)
    m = ms.current_mesh()
    v, f = m.vertex_matrix(), m.face_matrix()
    tree = cKDTree(p)
    spacing = float(np.median(tree.query(p, k=2)[0][:, 1]))
    near = tree.query(v[f].mean(1))[0] < 4.0 * spacing
    return v.astype(np.float32), f[near].astype(np.int32)


def _double_areas(v, f, chunk: int = 1 << 18) -> np.ndarray:
    """Twice each triangle's area in float64, a chunk of triangles at a time (bounded temporaries)."""
    out = np.empty(len(f))
    for s in range(0, len(f), chunk):
        t = v[f[s:s + chunk]].astype(np.float64, copy=False)
        out[s:s + chunk] = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    return out


def _surface_scale(v, f) -> float:
    """The size of what the faces use, robust to stray points: the widest 1st-99th percentile
    spread over the axes of the vertices the faces use (their whole span when that is 0)."""
    used = np.zeros(len(v), bool)
    used[f.reshape(-1)] = True
    u = v[used]
    sample = u[:: max(1, len(u) // 1_000_000)]
    lo, hi = np.percentile(sample, [1, 99], axis=0)
    spread = float((hi - lo).max())
    return spread if spread > 0 else float(np.ptp(u, axis=0).max())


def _close_pieces(v, label, sizes, big, near) -> np.ndarray:
    """Small pieces whose median distance to the big ones is under `near` times their size."""
    main = np.isin(label, np.flatnonzero(big))
    reach = near * float(np.linalg.norm(np.ptp(v[main], axis=0)))
    cand = np.flatnonzero((~big & (sizes > 0))[label])
    close = np.zeros(len(sizes), bool)
    if not len(cand):
        return close
    d, _ = cKDTree(v[main]).query(v[cand], distance_upper_bound=reach)
    lab = label[cand]
    order = np.lexsort((d, lab))                       # by piece, then by distance
    lab, d = lab[order], d[order]
    comps, start, count = np.unique(lab, return_index=True, return_counts=True)
    median = 0.5 * (d[start + (count - 1) // 2] + d[start + count // 2])
    close[comps] = median < reach
    return close


def _keep_vertices(v, f, keep, *per_vertex):
    """The vertices in `keep`, the faces renumbered (those losing a corner go), and the per-vertex
    arrays cut to match (None stays None)."""
    remap = np.full(len(v), -1, np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    if f is not None:
        f = remap[f]
        f = f[(f >= 0).all(1)]
    return v[keep], f, [None if a is None else a[keep] for a in per_vertex]
