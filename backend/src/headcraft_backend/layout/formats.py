"""Displacement map files: float OpenEXR, HeadCraft's three 16-bit PNGs, NumPy .npy.

Maps hold displacements in HeadCraft units (REFERENCE section 1), as (H, W, 3) float32 with
row 0 at the top. The PNG convention is the published registrations' (REFERENCE section 3):
values clipped to [-20, 20], one single-channel 16-bit PNG per axis named
`<stem>_-20_to_20_ch{0,1,2}.png`, code = floor((x + 20) / 40 * 65536) capped at 65535,
decoded as code / 65536 * 40 - 20 (one code step = 40 / 65536 ~ 6.1e-4 units).
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from ..limits import MAX_MAP_SIZE

PNG_RANGE = 20.0
PNG_STEP = 2 * PNG_RANGE / 65536
FORMATS = ("exr", "png16", "npy")


def range_report(m: np.ndarray, covered: np.ndarray) -> tuple[float, float]:
    """Of a map's covered texels: the fraction beyond the PNG range (+-PNG_RANGE units, clipped
    in 16-bit PNGs) and the largest |value| in units."""
    values = np.abs(np.asarray(m)[np.asarray(covered, bool)])
    clipped = float((values > PNG_RANGE).mean()) if values.size else 0.0
    return clipped, float(values.max(initial=0.0))


def encode_png_codes(m: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(m, np.float64), -PNG_RANGE, PNG_RANGE)
    return np.minimum(np.floor((x + PNG_RANGE) / (2 * PNG_RANGE) * 65536), 65535).astype(np.uint16)


def decode_png_codes(codes: np.ndarray) -> np.ndarray:
    return (codes.astype(np.float64) / 65536 * 2 * PNG_RANGE - PNG_RANGE).astype(np.float32)


def png16_bytes(channel_codes: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(channel_codes, np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def colour_png_bytes(m: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of colours in [0, 1] (already display-encoded, as scan colours are)."""
    from PIL import Image
    buf = io.BytesIO()
    rgb = np.clip(np.round(np.asarray(m)[..., :3] * 255), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def exr_bytes(m: np.ndarray) -> bytes:
    import OpenEXR
    m = np.ascontiguousarray(m, np.float32)
    channels = {"RGB": m} if m.ndim == 3 and m.shape[2] == 3 else {"Y": m.reshape(m.shape[:2])}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "map.exr"
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                          channels) as f:
            f.write(str(path))
        return path.read_bytes()


def npy_bytes(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(m, np.float32), allow_pickle=False)
    return buf.getvalue()


def encode(m: np.ndarray, fmt: str, stem: str) -> dict[str, bytes]:
    """File name -> file content for one map in one format."""
    if fmt == "exr":
        return {f"{stem}.exr": exr_bytes(m)}
    if fmt == "npy":
        return {f"{stem}.npy": npy_bytes(m)}
    if fmt == "png16":
        codes = encode_png_codes(m)
        return {f"{stem}_-20_to_20_ch{c}.png": png16_bytes(codes[..., c]) for c in range(codes.shape[2])}
    raise ValueError(f"unknown map format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write(m: np.ndarray, folder: str | Path, stem: str, fmt: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in encode(m, fmt, stem).items():
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out


def _png_paths(path: Path) -> list[Path]:
    name = path.name
    stem = name.split("_-20_to_20")[0] if "_-20_to_20" in name else path.stem
    return [path.parent / f"{stem}_-20_to_20_ch{c}.png" for c in range(3)]


def stored_shape(path: Path) -> tuple:
    """A map file's array shape from its header alone (no pixel decoded): (H, W[, C])."""
    if path.name.endswith(".exr"):
        import OpenEXR
        with OpenEXR.File(str(path), header_only=True) as f:      # (the header empties on closing)
            header = f.header()
            lo, hi = (np.asarray(v, np.int64) for v in header["dataWindow"])
            return (int(hi[1] - lo[1] + 1), int(hi[0] - lo[0] + 1), len(header["channels"]))
    if path.name.endswith(".npy"):
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            return tuple(read_header(fh)[0])
    from PIL import Image
    sizes = set()
    for p in _png_paths(path):
        with Image.open(p) as im:       # reads the header only
            sizes.add((im.size[1], im.size[0], len(im.getbands())))
    if len(sizes) != 1 or next(iter(sizes))[2] != 1:
        raise ValueError(f"the three PNGs are not single-channel images of one size ({sorted(sizes)})")
    return (*next(iter(sizes))[:2], 3)


def read(path: str | Path, max_size: int = MAX_MAP_SIZE) -> np.ndarray:
    """A map from any of the formats: an .exr, an .npy, or one of the three PNGs (or their stem
    `<stem>_-20_to_20`); raises ValueError with the reason when it is not a readable map. Its
    size is checked from the file's header before any pixel is decoded."""
    from PIL import Image
    path = Path(path)
    name = path.name
    try:
        shape = stored_shape(path)
        if len(shape) not in (2, 3) or max(shape[:2]) > max_size or (len(shape) == 3 and shape[2] > 4):
            raise ValueError(f"its array is {'x'.join(map(str, shape))}; a map has at most "
                             f"{max_size}x{max_size} texels and 4 channels")
        if name.endswith(".exr"):
            import OpenEXR
            with OpenEXR.File(str(path)) as f:
                ch = f.channels()
                arr = ch["RGB"].pixels if "RGB" in ch else np.stack([ch[k].pixels for k in sorted(ch)], -1)
            m = np.asarray(arr, np.float32)
        elif name.endswith(".npy"):
            m = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            chans = []
            for p in _png_paths(path):
                with Image.open(p) as im:
                    a = np.array(im)
                if a.ndim != 2 or a.dtype.kind not in "ui" or a.max() > 65535:
                    raise ValueError(f"{p.name} is not a single-channel 16-bit PNG")
                chans.append(decode_png_codes(a.astype(np.uint16)))
            m = np.stack(chans, -1)
    except (OSError, KeyError, ValueError, RuntimeError, EOFError, Image.DecompressionBombError) as exc:
        # OpenEXR raises RuntimeError
        raise ValueError(f"{path}: not a readable displacement map ({exc})") from None
    if m.ndim == 2:
        m = m[..., None]
    if m.ndim != 3 or m.shape[0] != m.shape[1] or m.shape[2] not in (1, 3):
        raise ValueError(f"{path}: expected a square map with 1 or 3 channels, got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: the map contains NaN or infinite values")
    return m
