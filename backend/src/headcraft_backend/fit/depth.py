"""Depth images as partial scans: read a depth file, back-project its pixels through pinhole
intrinsics into a point cloud in the camera's frame.

Conventions (OpenCV's): camera frame x right, y down, z forward (away from the camera); the
depth of a pixel is its point's z (not the distance along the ray); pixel (row v, column u) has
its centre at (u, v) in the coordinates the principal point (cx, cy) is given in, so a pixel's
point is ((u - cx) z / fx, (v - cy) z / fy, z). A depth of 0 marks a pixel without a measurement.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..limits import MAX_SCAN_VERTICES

# The camera frame's hints for the landmark renders: image up is -y, the face looks at the camera (-z).
CAMERA_UP = (0.0, -1.0, 0.0)
CAMERA_FORWARD = (0.0, 0.0, -1.0)
DEPTH_SUFFIXES = (".npy", ".png")


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels: focal lengths and principal point."""
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def parse(cls, text: str) -> "Intrinsics":
        """'fx,fy,cx,cy' (four numbers); UserError otherwise."""
        try:
            values = [float(x) for x in text.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise UserError(f"intrinsics {text!r}: give four numbers fx,fy,cx,cy (pixels)")
        return cls(*values)

    def check(self, shape: tuple[int, int]) -> "Intrinsics":
        """These intrinsics if they can belong to an image of `shape` (H, W); UserError otherwise."""
        h, w = shape
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(values)) or self.fx <= 0 or self.fy <= 0:
            raise UserError(f"intrinsics fx={self.fx:g}, fy={self.fy:g}: focal lengths must be positive "
                            f"numbers of pixels")
        if not (-0.5 <= self.cx <= w - 0.5 and -0.5 <= self.cy <= h - 0.5):
            raise UserError(f"the principal point ({self.cx:g}, {self.cy:g}) lies outside the {w}x{h} depth image "
                            f"(are fx,fy,cx,cy in that order, in pixels of this image?)")
        return self


def read_depth_file(path: str | Path, scale: float = 1.0) -> np.ndarray:
    """A depth image (H, W) float64: a float .npy, or a 16-bit PNG; its values times `scale`."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in DEPTH_SUFFIXES:
        raise UserError(f"{path.name}: a depth image is a float .npy or a 16-bit .png")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if not (np.isfinite(scale) and scale > 0):
        raise UserError(f"depth scale {scale:g}: must be a positive number")
    try:
        if path.suffix.lower() == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            from PIL import Image
            with Image.open(path) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise UserError(f"{path.name} is a {im.mode} PNG; a depth PNG has one 16-bit channel")
                raw = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path.name}: not a readable depth image ({exc})") from None
    if raw.ndim != 2 or not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise UserError(f"{path.name}: a depth image is one number per pixel (H, W), got {raw.dtype} {raw.shape}")
    return raw.astype(np.float64) * scale


def back_project(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """The points (K, 3) of the measured pixels (depth > 0), in the camera frame and the depth's
    unit. UserError for NaN, infinite or negative depths, a depth image without a measured pixel,
    and intrinsics that do not fit the image."""
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise UserError(f"a depth image is (H, W) with H, W >= 2, got {depth.shape}")
    if depth.size > MAX_SCAN_VERTICES:
        raise UserError(f"the depth image has {depth.size:,} pixels; at most {MAX_SCAN_VERTICES:,}")
    bad = ~np.isfinite(depth)
    if bad.any():
        raise UserError(f"the depth image has {int(bad.sum()):,} NaN or infinite pixels; mark pixels without a "
                        f"measurement with 0")
    if (depth < 0).any():
        raise UserError(f"the depth image has {int((depth < 0).sum()):,} negative depths; depths are distances "
                        f"in front of the camera (0: no measurement)")
    k = intrinsics.check((depth.shape[0], depth.shape[1]))
    v, u = np.nonzero(depth > 0)
    if len(v) == 0:
        raise UserError("the depth image has no measured pixel (every depth is 0)")
    z = depth[v, u]
    return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], 1)
