"""Writes demo/arkit_performance.csv: a short face-capture take in the Live Link Face CSV layout,
made procedurally by this project (speech-like jaw and lip syllables, blinks, a smile, brow
raises, a slow head turn). Deterministic: `python tools/make_performance.py` rewrites the same
file."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo" / "arkit_performance.csv"
SIDES = ("Left", "Right")
# Live Link Face's column order
NAMES = [f"Eye{k}{s}" for s in SIDES for k in ("Blink", "LookDown", "LookIn", "LookOut", "LookUp", "Squint", "Wide")]
NAMES += ["JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight",
          "MouthLeft"]
NAMES += [f"Mouth{k}{s}" for k in ("Smile", "Frown", "Dimple", "Stretch") for s in SIDES]
NAMES += ["MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper"]
NAMES += [f"Mouth{k}{s}" for k in ("Press", "LowerDown", "UpperUp") for s in SIDES]
NAMES += ["BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff",
          "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut"]
ROTATIONS = [f"{p}{a}" for p in ("Head", "LeftEye", "RightEye") for a in ("Yaw", "Pitch", "Roll")]


def bump(t, centre, width):
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def performance(seconds: float = 4.0, rate: int = 60, seed: int = 3) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    ch = {n: np.zeros_like(t) for n in NAMES + ROTATIONS}
    syllables = np.sort(rng.uniform(0.3, seconds - 0.4, 9))
    for c in syllables:
        a = rng.uniform(0.25, 0.6)
        ch["JawOpen"] += a * bump(t, c, 0.07)
        for s in SIDES:
            ch[f"MouthLowerDown{s}"] += 0.6 * a * bump(t, c, 0.07)
            ch[f"MouthUpperUp{s}"] += 0.3 * a * bump(t, c + 0.02, 0.06)
        if rng.random() < 0.4:
            ch["MouthFunnel"] += 0.5 * bump(t, c + 0.05, 0.08)
            ch["MouthPucker"] += 0.4 * bump(t, c + 0.05, 0.08)
        else:
            ch["MouthClose"] += 0.2 * bump(t, c + 0.12, 0.04)
    for c in (0.9, 2.6, 3.6):                                         # blinks
        for s in SIDES:
            ch[f"EyeBlink{s}"] += bump(t, c, 0.05)
            ch[f"EyeSquint{s}"] += 0.2 * bump(t, c, 0.06)
    smile = np.clip((t - 1.6) / 0.4, 0, 1) * np.clip((3.4 - t) / 0.4, 0, 1)
    for s in SIDES:
        ch[f"MouthSmile{s}"] += 0.7 * smile
        ch[f"CheekSquint{s}"] += 0.35 * smile
        ch[f"MouthDimple{s}"] += 0.2 * smile
    ch["BrowInnerUp"] += 0.6 * bump(t, 1.2, 0.25)
    for s in SIDES:
        ch[f"BrowOuterUp{s}"] += 0.45 * bump(t, 1.2, 0.25)
    ch["HeadYaw"] = 0.25 * np.sin(2 * np.pi * t / seconds)
    ch["HeadPitch"] = 0.06 * np.sin(2 * np.pi * t / 1.7)
    ch["HeadRoll"] = 0.04 * np.sin(2 * np.pi * t / 2.3)
    for e in ("LeftEye", "RightEye"):
        ch[f"{e}Yaw"] = -0.5 * ch["HeadYaw"]                           # the eyes hold the gaze
    return t, {k: np.clip(v, 0, 1) if k in NAMES else v for k, v in ch.items()}


def write(path: Path = OUT, rate: int = 60) -> Path:
    t, ch = performance(rate=rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["Timecode", "BlendShapeCount", *NAMES, *ROTATIONS])
        start = 10 * 3600 + 30 * 60                                    # 10:30:00:00
        for i in range(len(t)):
            sec, frame = divmod(i, rate)
            s = start + sec
            tc = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{frame:02d}.000"
            w.writerow([tc, len(NAMES), *(f"{ch[n][i]:.5f}" for n in NAMES + ROTATIONS)])
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
    sys.exit(0)
