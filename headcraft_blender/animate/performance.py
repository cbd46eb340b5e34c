"""Performance files, read into per-frame channels (no bpy here; objects.py writes the keyframes).

ARKit CSV as face-capture apps export it (Live Link Face): `Timecode,BlendShapeCount,` then the 52
blendshapes in capitalised ARKit names (EyeBlinkLeft, JawOpen, ...) and optionally HeadYaw,
HeadPitch, HeadRoll and Left/RightEye Yaw/Pitch/Roll (radians). Timecodes are HH:MM:SS:FF[.sub]
at the capture rate, which is read from the file when not given.

FLAME parameter sequences (.npz) as FLAME trackers write them: per-frame `expr` (T, E), and
axis-angle `jaw_pose`, `neck_pose`, a global rotation (`global_pose`/`rotation`/`global_orient`)
and `eyes_pose` (T, 6: left then right), with an optional `fps`.
"""
from __future__ import annotations

import csv
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..client.limits import MAX_PERFORMANCE_CHANNELS, MAX_PERFORMANCE_FRAMES

FLOAT32_MAX = float(np.finfo(np.float32).max)      # keyframes are float32
STANDARD_RATES = (24, 25, 30, 48, 50, 60, 120)
ARKIT_ROTATIONS = {"HeadYaw": ("neck", 1), "HeadPitch": ("neck", 0), "HeadRoll": ("neck", 2),
                   "LeftEyeYaw": ("eye_L", 1), "LeftEyePitch": ("eye_L", 0), "LeftEyeRoll": ("eye_L", 2),
                   "RightEyeYaw": ("eye_R", 1), "RightEyePitch": ("eye_R", 0), "RightEyeRoll": ("eye_R", 2)}
FLAME_KEYS = {"expr": ("expr", "expression", "exp", "expression_params"),
              "jaw": ("jaw_pose", "jaw"), "neck": ("neck_pose", "neck"),
              "global": ("global_pose", "rotation", "global_orient", "root_pose", "global_rotation"),
              "eyes": ("eyes_pose", "eye_pose"), "fps": ("fps", "frame_rate", "framerate")}


class PerformanceError(ValueError):
    pass


@dataclass
class Performance:
    """Sample times (seconds from the first sample), key values per name, and per-joint
    axis-angle rotations in the model frame (X subject's left, Y up, Z forward)."""
    times: np.ndarray
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    rotations: dict[str, np.ndarray] = field(default_factory=dict)     # joint -> (T, 3)
    source: str = ""

    @property
    def duration(self) -> float:
        return float(self.times[-1]) if len(self.times) else 0.0


def _timecode_parts(tc: str) -> tuple[float, float]:
    """HH:MM:SS:FF[.sub] -> (whole seconds, frame number with its fraction)."""
    parts = tc.strip().split(":")
    if len(parts) != 4:
        raise PerformanceError(f"timecode {tc!r}: expected HH:MM:SS:FF")
    h, m, s = (int(p) for p in parts[:3])
    frame = float(parts[3])
    if not math.isfinite(frame) or max(h, m, s) > 10 ** 6:     # (huge hours would not fit a float)
        raise PerformanceError(f"timecode {tc[:40]!r}: not a time")
    return h * 3600 + m * 60 + s, frame


def _check_values(name: str, what: str, a: np.ndarray) -> None:
    """Finite and within float32, the keyframes' precision."""
    if not np.isfinite(a).all():
        raise PerformanceError(f"{name}: NaN or infinite values{what}")
    if a.size and np.abs(a).max() > FLOAT32_MAX:
        raise PerformanceError(f"{name}: values beyond {FLOAT32_MAX:.3g}{what}, more than a keyframe holds")


def _check_frames(name: str, n: float) -> None:
    if not n <= MAX_PERFORMANCE_FRAMES:     # NaN too
        raise PerformanceError(f"{name}: {n:.3g} frames; a performance has at most {MAX_PERFORMANCE_FRAMES:,} "
                               f"(check its timecodes or frame rate)")


def read_arkit_csv(path: str | Path, fps: float = 0.0) -> Performance:
    path = Path(path)
    secs, frames = [], []
    rows: list[np.ndarray] = []     # each row parsed as it is read: at most the frame limit
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not header or header[0] != "Timecode":
                raise PerformanceError(f"{path.name}: not an ARKit blendshape CSV (no 'Timecode' header)")
            for r in reader:
                if len(r) != len(header):
                    continue
                _check_frames(path.name, len(rows) + 1)
                sec, frame = _timecode_parts(r[0])
                secs.append(sec)
                frames.append(frame)
                rows.append(np.array([float(x) for x in r[1:]], np.float64))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PerformanceError(f"{path.name}: cannot read ({exc})") from None
    except PerformanceError:
        raise
    except ValueError as exc:
        raise PerformanceError(f"{path.name}: {exc}") from None
    if not rows:
        raise PerformanceError(f"{path.name}: no complete rows")
    values = np.stack(rows)
    _check_values(path.name, "", values)
    rate = fps or min(STANDARD_RATES, key=lambda r: abs(r - (int(max(frames)) + 1)))
    t = np.array(secs, np.float64) + np.array(frames, np.float64) / rate
    order = np.argsort(t, kind="stable")
    t, values = t[order] - t[order[0]], values[order]
    perf = Performance(t, source=f"{path.name} ({rate:g} fps capture)")
    for j, name in enumerate(header[1:]):
        if name == "BlendShapeCount":
            continue
        if name in ARKIT_ROTATIONS:
            joint, axis = ARKIT_ROTATIONS[name]
            rot = perf.rotations.setdefault(joint, np.zeros((len(t), 3)))
            rot[:, axis] = values[:, j]
        else:
            perf.keys[name[:1].lower() + name[1:]] = values[:, j]
    return perf


def _first(z, names):
    for n in names:
        if n in z.files:
            return np.asarray(z[n])
    return None


def _check_npz_shapes(path: Path) -> None:
    """Every member's shape from its .npy header, before anything is decompressed."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape = read_header(fh)[0]
            if shape and (shape[0] > MAX_PERFORMANCE_FRAMES or math.prod(shape[1:]) > MAX_PERFORMANCE_CHANNELS):
                raise PerformanceError(f"{path.name}: {info.filename} is {'x'.join(map(str, shape))}; a performance "
                                       f"has at most {MAX_PERFORMANCE_FRAMES:,} frames of "
                                       f"{MAX_PERFORMANCE_CHANNELS} values")


def read_flame_npz(path: str | Path, fps: float = 0.0) -> Performance:
    path = Path(path)
    try:
        _check_npz_shapes(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: _first(z, names) for k, names in FLAME_KEYS.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, PerformanceError):
            raise
        raise PerformanceError(f"{path.name}: not a readable .npz without pickled objects "
                               f"({exc or type(exc).__name__})") from None
    per_frame = {k: a for k, a in arrays.items() if k != "fps" and a is not None}
    if not per_frame:
        raise PerformanceError(f"{path.name}: none of the FLAME arrays ({', '.join(n[0] for n in FLAME_KEYS.values())})")
    counts = {k: a.reshape(a.shape[0], -1).shape[0] if a.ndim else 0 for k, a in per_frame.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise PerformanceError(f"{path.name}: arrays of different lengths {counts}")
    n = next(iter(counts.values()))
    try:
        rate = float(fps or (arrays["fps"].item() if arrays["fps"] is not None else 30.0))
    except (TypeError, ValueError):
        raise PerformanceError(f"{path.name}: its fps is not one number") from None
    if not 0 < rate < math.inf:
        raise PerformanceError(f"{path.name}: frame rate {rate}")
    perf = Performance(np.arange(n) / rate, source=f"{path.name} ({rate:g} fps)")
    for k, a in per_frame.items():
        try:
            a = a.reshape(n, -1).astype(np.float64)
        except (TypeError, ValueError):
            raise PerformanceError(f"{path.name}: {k} is not numbers") from None
        _check_values(path.name, f" in {k}", a)
        if k == "expr":
            perf.keys.update({f"Exp{i:03d}": a[:, i] for i in range(a.shape[1])})
        elif k == "eyes":
            if a.shape[1] != 6:
                raise PerformanceError(f"{path.name}: eye poses need 6 values per frame, not {a.shape[1]}")
            perf.rotations["eye_L"], perf.rotations["eye_R"] = a[:, :3], a[:, 3:]
        else:
            if a.shape[1] != 3:
                raise PerformanceError(f"{path.name}: {k} pose needs 3 values per frame, not {a.shape[1]}")
            perf.rotations[k] = a
    return perf


def read(path: str | Path, fps: float = 0.0) -> Performance:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_arkit_csv(path, fps)
    if suffix == ".npz":
        return read_flame_npz(path, fps)
    raise PerformanceError(f"{Path(path).name}: choose an ARKit .csv or a FLAME .npz")


def resample(perf: Performance, scene_fps: float) -> tuple[np.ndarray, Performance]:
    """Scene frame offsets (0, 1, ...) covering the performance, with every channel linearly
    interpolated at those times (the performance's rate converted to the scene's)."""
    last = perf.duration * scene_fps
    _check_frames(perf.source, last + 1)
    n = int(np.floor(last + 1e-6)) + 1
    t = np.arange(n) / scene_fps
    out = Performance(t, {k: np.interp(t, perf.times, v) for k, v in perf.keys.items()},
                      {j: np.stack([np.interp(t, perf.times, r[:, i]) for i in range(3)], 1)
                       for j, r in perf.rotations.items()}, perf.source)
    return np.arange(n, dtype=np.float64), out
