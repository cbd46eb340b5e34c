"""Per-corner UVs of a head model from an OBJ of its topology (FLAME's head_template.obj, the
HeadCraft reference layout, a layout re-unwrapped in another program).

The OBJ must list the model's triangles in the model's order; a face may start at another of
its corners (same orientation), and its UVs are then rotated to match. Vertex positions are
not compared: a layout file may hold the head in any pose or scale.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import HeadModelError


def corner_uvs_from_obj(lines: Iterable[str], faces: np.ndarray, source: str, model: str) -> np.ndarray:
    """(F, 3, 2) float32 UVs; HeadModelError (a UserError) saying what does not match."""
    def fail(msg: str):
        raise HeadModelError(f"{source}: {msg}")

    vt: list[tuple[float, float]] = []
    fv: list[tuple[int, ...]] = []
    ft: list[tuple[int, ...]] = []
    n_v = 0
    try:
        for lineno, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            tag = parts[0]
            if tag == "v":
                n_v += 1
            elif tag == "vt":
                if len(parts) < 3:
                    fail(f"line {lineno}: 'vt' needs two coordinates")
                vt.append((float(parts[1]), float(parts[2])))
            elif tag == "f":
                corners = parts[1:]
                if len(corners) != 3:
                    fail(f"line {lineno}: a face with {len(corners)} corners; only triangles are supported")
                vs, ts = [], []
                for c in corners:
                    fields = c.split("/")
                    if len(fields) < 2 or not fields[1]:
                        fail(f"line {lineno}: face corner '{c}' has no texture coordinate (expected v/vt)")
                    v, t = int(fields[0]), int(fields[1])
                    vs.append(v - 1 if v > 0 else n_v + v)       # OBJ: 1-based or relative
                    ts.append(t - 1 if t > 0 else len(vt) + t)
                fv.append(tuple(vs))
                ft.append(tuple(ts))
    except ValueError as exc:
        fail(f"not a readable OBJ file ({exc})")
    if not ft:
        fail(f"no textured faces (f v/vt ...) found; not a UV layout of {model}")
    F = len(faces)
    if len(ft) != F:
        fail(f"{len(ft)} triangles, but {model} has {F}; this OBJ is not a layout of {model}")
    uvs = np.asarray(vt, np.float64)
    ft_a = np.asarray(ft, np.int64)
    fv_a = np.asarray(fv, np.int64)
    if uvs.size == 0 or ft_a.min() < 0 or ft_a.max() >= len(uvs):
        fail("face texture indices point outside the 'vt' list")
    faces = np.asarray(faces, np.int64)
    rotation = np.full(F, -1)
    for r in range(3):
        ok = (rotation < 0) & (np.roll(fv_a, -r, axis=1) == faces).all(axis=1)
        rotation[ok] = r
    bad = np.flatnonzero(rotation < 0)
    if bad.size:
        i = int(bad[0])
        fail(f"{bad.size} triangles use other vertices than {model}'s (first: triangle {i} is "
             f"{tuple(int(x) for x in fv_a[i] + 1)} (1-based), {model}'s is "
             f"{tuple(int(x) for x in faces[i] + 1)}); this OBJ is not a layout of {model}")
    rows = np.arange(F)[:, None]
    ft_a = ft_a[rows, (np.arange(3)[None, :] + rotation[:, None]) % 3]
    uv = uvs[ft_a].astype(np.float32)
    if not np.isfinite(uv).all():
        fail("texture coordinates contain NaN or infinite values")
    return uv
