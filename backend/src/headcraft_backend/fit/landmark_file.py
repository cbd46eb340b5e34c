"""Landmarks a user or a dataset already has, read from a file (`fit --landmarks FILE`).

Two formats, coordinates in the scan file's own frame and units:

* JSON: ``{"scheme": "mediapipe" | "ibug68" | "names", "points": {"<id>": [x, y, z], ...}}``.
  ``mediapipe`` ids are MediaPipe face-mesh indices (0-477); ``ibug68`` ids are the 68-point
  (iBUG/300-W, dlib) indices 0-67, of which the surface points below are used; ``names`` are
  the names in :data:`NAMED`.
* CSV or text: one ``id, x, y, z`` per line (commas or spaces; ``#`` starts a comment); an id
  is a MediaPipe index or a name from :data:`NAMED`.

At least six usable points are needed (eye corners, nose, mouth corners); more make the
coarse fit steadier.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError

# Names (the subject's left and right) for MediaPipe face-mesh indices.
NAMED = {"right_eye_outer": 33, "right_eye_inner": 133, "left_eye_inner": 362, "left_eye_outer": 263,
         "nasion": 168, "nose_tip": 4, "nose_base": 2, "right_nostril": 98, "left_nostril": 327,
         "mouth_right": 61, "mouth_left": 291, "upper_lip": 0, "lower_lip": 17,
         "upper_lip_inner": 13, "lower_lip_inner": 14}
# 68-point indices -> the MediaPipe point at the same place (surface points only: the jaw
# contour and the brows slide with the view and are not used).
IBUG68 = {27: 168, 30: 4, 31: 98, 33: 2, 35: 327, 36: 33, 39: 133, 42: 362, 45: 263,
          48: 61, 51: 0, 54: 291, 57: 17, 62: 13, 66: 14}
MAX_BYTES = 1 << 20


def _id(key, scheme: str, source: str) -> int | None:
    """The MediaPipe index for a key, None for a known id that is not used."""
    key = str(key).strip()
    if scheme == "names" or (scheme == "mediapipe" and not key.lstrip("-").isdigit()):
        if key not in NAMED:
            raise UserError(f"{source}: unknown landmark name {key!r}; known: {', '.join(NAMED)}")
        return NAMED[key]
    try:
        i = int(key)
    except ValueError:
        raise UserError(f"{source}: landmark id {key!r} is not a number") from None
    if scheme == "ibug68":
        if not 0 <= i < 68:
            raise UserError(f"{source}: 68-point ids are 0-67, not {i}")
        return IBUG68.get(i)
    if not 0 <= i < 478:
        raise UserError(f"{source}: MediaPipe ids are 0-477, not {i}")
    return i


def read_landmark_file(path: str | Path) -> dict[int, np.ndarray]:
    """MediaPipe index -> point (scan frame) from a landmark file; UserError when unusable."""
    path = Path(path)
    source = path.name
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{source}: a landmark file is a few kilobytes; this one is too large")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the landmark file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{source}: not a text file") from None
    rows: list[tuple[object, object]] = []
    scheme = "mediapipe"
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("points"), dict):
            raise UserError(f'{source}: expected {{"scheme": ..., "points": {{"id": [x, y, z], ...}}}}')
        scheme = doc.get("scheme", "mediapipe")
        if scheme not in ("mediapipe", "ibug68", "names"):
            raise UserError(f"{source}: scheme must be mediapipe, ibug68 or names, not {scheme!r}")
        rows = list(doc["points"].items())
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 4:
                raise UserError(f"{source}, line {n}: expected 'id, x, y, z'")
            if n == 1 and parts[1].lower() == "x":
                continue                       # a header line
            rows.append((parts[0], parts[1:]))
    out: dict[int, np.ndarray] = {}
    for key, xyz in rows:
        i = _id(key, scheme, source)
        try:
            p = np.asarray(xyz, np.float64).reshape(3)
        except (TypeError, ValueError):
            raise UserError(f"{source}: landmark {key!r} needs three numbers x, y, z") from None
        if not np.isfinite(p).all():
            raise UserError(f"{source}: landmark {key!r} is not finite")
        if i is not None:
            out[i] = p
    if len(out) < 6:
        raise UserError(f"{source}: {len(out)} usable landmarks; at least 6 are needed (eye corners, "
                        f"nose, mouth corners)")
    return out
