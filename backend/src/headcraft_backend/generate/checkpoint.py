"""Generator checkpoints: the published HeadCraft files in, our safetensors format in and out.

Published files (docs/STYLEGAN_CHECKPOINT.md): a Lightning `.ckpt` whose `state_dict` holds the
generator under `G.` (and the discriminator, augment pipe and path-length state we do not
need) and whose `hyper_parameters` is an omegaconf DictConfig (with a training data path we
never use), plus an EMA file in torch_ema's format (`shadow_params` in `G.parameters()` order).

Nothing is unpickled beyond tensors and plain containers: files are read with torch's
weights-only unpickler; the globals a file names are listed first
(`get_unsafe_globals_in_checkpoint`) and only the configuration classes of omegaconf and
Lightning are allowed, as inert stand-ins that keep their state and run none of their code.
Any other class (a pickle that would call `os.system`, say) is refused by name.

Our format: `<name>.safetensors` (generator tensors by the same names, no `G.` prefix) and a
small JSON config beside it (`<name>.json`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from ..cache import cached_by_files, write_atomic
from ..errors import UserError
from ..limits import GENERATOR_CONFIG_MAX, MAX_CONFIG_BYTES, MAX_GENERATOR_ELEMENTS, MAX_MAP_SIZE
from .networks import Generator, channels_at

if TYPE_CHECKING:
    from .pca import PCAModel

INERT_MODULES = ("omegaconf.", "pytorch_lightning.", "lightning.", "lightning_fabric.")
FORMAT = "headcraft-stylegan2"
PCA_FORMAT = "headcraft-pca"
PUBLISHED_LAYOUT = "published"    # the name a published .ckpt's layout (the authors', imported) goes by
CONFIG_KEYS = {FORMAT: {"format", "version", "config", "training"},      # what a .json may hold
               PCA_FORMAT: {"format", "version", "components", "size"}}
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_generator.json"   # MODEL_CARD.md beside it


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class _Inert:
    """Stands in for a configuration object in a checkpoint: keeps the pickled state only."""
    qualified_name = ""

    def __init__(self, *args, **kwargs):
        self.args, self.state = args, kwargs or None

    def __setstate__(self, state):
        self.state = state


def _stand_in(name: str) -> tuple[type, str]:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {"qualified_name": name}), name


def safe_load(path: str | Path) -> object:
    """torch.load restricted to tensors, containers and inert configuration objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:    # not a torch zip file (legacy or corrupt)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint this loader reads ({exc})") from None
    refused = [n for n in names if not n.startswith(INERT_MODULES)]
    if refused:
        raise CheckpointError(f"{path}: refused, it would create objects that are not tensors or "
                              f"configuration: {', '.join(sorted(refused))}")
    try:
        with torch.serialization.safe_globals([_stand_in(n) for n in names]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: could not be read safely ({str(exc).splitlines()[0]})") from None


def plain(obj):
    """Configuration stand-ins (omegaconf containers and nodes) as plain Python values."""
    if isinstance(obj, _Inert):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "_content" in state:
            return plain(state["_content"])
        if "_val" in state:
            return plain(state["_val"])
        return None
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


class _Shaped(Protocol):      # a tensor, or only its shape (_Shape)
    @property
    def shape(self) -> Sequence[int]: ...


def config_from_state(sd: Mapping[str, _Shaped]) -> dict:
    """Generator arguments read off the tensor shapes (no hyper-parameters needed)."""
    try:
        layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("mapping.layers.")})
        z_dim = sd["mapping.layers.0.weight"].shape[1]
        w_dim = sd["mapping.layers.0.weight"].shape[0]
        channel_max = sd["synthesis.first_block.const"].shape[0]
        img_channels = sd["synthesis.first_block.torgb.weight"].shape[0]
        blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("synthesis.blocks.")})
        resolution = 4 * 2 ** len(blocks)
        last = sd[f"synthesis.blocks.{blocks[-1]}.conv1.weight"].shape[0] if blocks else channel_max
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"not a HeadCraft StyleGAN2 generator (missing {exc})") from None
    return {"z_dim": int(z_dim), "w_dim": int(w_dim), "w_num_layers": len(layers),
            "img_resolution": int(resolution), "img_channels": int(img_channels),
            "channel_base": int(last * resolution), "channel_max": int(channel_max)}


def _check_shapes(own: dict, theirs: dict, source: str) -> None:
    """Exact names and shapes (name -> tuple), or an error listing every mismatch by name."""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    wrong = [f"{k} {theirs[k]} (expected {own[k]})" for k in own if k in theirs and theirs[k] != own[k]]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise CheckpointError(f"{source}: does not match the generator ({'; '.join(parts)})")


def _load_into(G: Generator, sd: dict, source: str) -> None:
    _check_shapes({k: tuple(v.shape) for k, v in G.state_dict().items()},
                  {k: tuple(v.shape) for k, v in sd.items()}, source)
    G.load_state_dict({k: v.float() for k, v in sd.items()})


def check_config(config, source: str) -> None:
    """A generator config checked before anything is allocated: exactly Generator's arguments,
    each an int from 1 to its GENERATOR_CONFIG_MAX."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: 'config' must be a JSON object, not {type(config).__name__}")
    unknown, missing = sorted(set(config) - set(GENERATOR_CONFIG_MAX)), sorted(set(GENERATOR_CONFIG_MAX) - set(config))
    if unknown or missing:
        raise CheckpointError(f"{source}: the generator config has " + "; ".join(
            f"{what} key(s) {', '.join(map(repr, keys))}" for what, keys in (("unknown", unknown), ("missing", missing))
            if keys) + f" (it takes {', '.join(GENERATOR_CONFIG_MAX)})")
    for k, top in GENERATOR_CONFIG_MAX.items():
        v = config[k]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            raise CheckpointError(f"{source}: generator config {k} = {str(v)[:40]}: an integer from 1 to {top}")


class _Shape:
    def __init__(self, shape):
        self.shape = shape


def _check_weights_fit(config: dict, stored: dict, source: str) -> None:
    """The config must describe the generator the weights file holds (read from its header), so
    building it allocates what the file holds, at most MAX_GENERATOR_ELEMENTS numbers."""
    n = sum(math.prod(s) for s in stored.values())
    if n > MAX_GENERATOR_ELEMENTS:
        raise CheckpointError(f"{source}: {n:,} numbers; a generator has at most {MAX_GENERATOR_ELEMENTS:,}")
    try:
        found = config_from_state({k: _Shape(s) for k, s in stored.items()})
    except (CheckpointError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    levels = [2 ** i for i in range(2, int(math.log2(found["img_resolution"])) + 1)]
    same = all(config[k] == found[k] for k in found if not k.startswith("channel_")) and all(
        channels_at(r, config["channel_base"], config["channel_max"]) ==
        channels_at(r, found["channel_base"], found["channel_max"]) for r in levels)
    if not same:
        raise CheckpointError(f"{source}: the config does not describe the generator its weights hold "
                              f"(they say {found})")


def _stored_shapes(weights: Path, framework: str = "pt") -> dict[str, tuple]:
    """Tensor names and shapes from a safetensors header, reading no tensor."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(weights), framework) as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{weights}: cannot read the weights ({exc})") from None


def files_of(path: str | Path) -> list[Path]:
    """The files a checkpoint is read from (what a cache of it watches)."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return [path, *sorted(path.parent.glob("ema_*.pth"))[-1:]]
    base = path.with_suffix("")
    return [base.with_suffix(".json"), base.with_suffix(".safetensors")]


def read_config(cfg_path: Path) -> dict:
    """Our .json: at most MAX_CONFIG_BYTES, a JSON object of a known format, known keys only."""
    try:
        size = cfg_path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{cfg_path}: {size:,} bytes; a model config has at most {MAX_CONFIG_BYTES:,}")
        meta = json.loads(cfg_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{cfg_path}: cannot read the model config ({str(exc)[:200]})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_path}: a model config is a JSON object, not a {type(meta).__name__}")
    fmt = meta.get("format")
    if not isinstance(fmt, str) or fmt not in CONFIG_KEYS:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} or {PCA_FORMAT} config")
    unknown = sorted(map(str, set(meta) - CONFIG_KEYS[fmt]))
    if unknown:
        raise CheckpointError(f"{cfg_path}: unknown key(s) {', '.join(map(repr, unknown))} in a {fmt} config "
                              f"(it holds {', '.join(sorted(CONFIG_KEYS[fmt]))})")
    if meta.get("version") != 1:
        raise CheckpointError(f"{cfg_path}: {fmt} version {str(meta.get('version'))[:20]}; this backend reads version 1")
    return meta


def _check_pca(meta: dict, weights: Path) -> None:
    k, size = meta.get("components"), meta.get("size")
    if not (isinstance(k, int) and not isinstance(k, bool) and isinstance(size, int) and not isinstance(size, bool)) \
            or not 1 <= size <= MAX_MAP_SIZE or not 1 <= k or k * size * size * 3 > MAX_GENERATOR_ELEMENTS:
        raise CheckpointError(f"{weights.with_suffix('.json')}: a PCA of {str(k)[:20]} components of "
                              f"{str(size)[:20]}^2 maps is not one this backend reads (maps up to "
                              f"{MAX_MAP_SIZE}^2, {MAX_GENERATOR_ELEMENTS:,} numbers in all)")
    want = {"mean": (size, size, 3), "components": (k, size * size * 3), "sigma": (k,)}
    _check_shapes(want, _stored_shapes(weights, "numpy"), str(weights))


def load_published(ckpt: str | Path, ema: str | Path | None = None) -> tuple[Generator, dict]:
    """A published Lightning checkpoint (and optionally its EMA file) -> (Generator, info)."""
    raw = safe_load(ckpt)
    sd = raw.get("state_dict") if isinstance(raw, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{ckpt}: no 'state_dict' in the file (not a Lightning checkpoint)")
    assert isinstance(raw, dict)             # sd came from it
    # Our trainer's checkpoints carry the averaged generator as `G_ema.`; the published ones an EMA file.
    prefix = "G_ema." if any(k.startswith("G_ema.") for k in sd) else "G."
    g = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not g:
        raise CheckpointError(f"{ckpt}: the state_dict has no generator ('G.' keys)")
    try:
        config = config_from_state(g)
    except CheckpointError as exc:
        raise CheckpointError(f"{ckpt}: {exc}") from None
    check_config(config, str(ckpt))
    G = Generator(**config)
    _load_into(G, g, str(ckpt))
    info = {"config": config, "source": str(Path(ckpt).name), "epoch": raw.get("epoch"),
            "global_step": raw.get("global_step"), "hyper_parameters": plain(raw.get("hyper_parameters")),
            "ema": "G_ema" if prefix == "G_ema." else None}
    if ema:
        info["ema"] = apply_ema(G, ema)
    return G.eval(), info


def apply_ema(G: Generator, path: str | Path) -> dict:
    """Copy a torch_ema state (shadow_params in G.parameters() order) into G."""
    raw = safe_load(path)
    shadow = raw.get("shadow_params") if isinstance(raw, dict) else None
    params = list(G.parameters())
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError(f"{path}: not a torch_ema state (no 'shadow_params' list)")
    if len(shadow) != len(params):
        raise CheckpointError(f"{path}: {len(shadow)} averaged tensors for a generator with {len(params)} "
                              f"parameters (EMA of another model?)")
    names = [n for n, _ in G.named_parameters()]
    bad = [f"{n} {tuple(s.shape)} (expected {tuple(p.shape)})" for n, s, p in zip(names, shadow, params)
           if tuple(s.shape) != tuple(p.shape)]
    if bad:
        raise CheckpointError(f"{path}: EMA tensors do not match the generator: {', '.join(bad[:8])}")
    with torch.no_grad():
        for p, s in zip(params, shadow):
            p.copy_(s.float())
    assert isinstance(raw, dict)             # shadow came from it
    return {"decay": raw.get("decay"), "num_updates": raw.get("num_updates")}


def save(G: Generator, path: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Our format: safetensors (state dict; the shared blur kernels once) + JSON config."""
    from safetensors.torch import save_file
    path = Path(path).with_suffix("")
    sd = G.state_dict()
    seen, tensors = set(), {}
    for k, v in sd.items():                  # aliases of one tensor are stored once
        if v.data_ptr() in seen and k.endswith("resampler.kernel"):
            continue
        seen.add(v.data_ptr())
        tensors[k] = v.detach().contiguous().clone()
    weights, cfg = path.with_suffix(".safetensors"), path.with_suffix(".json")
    text = json.dumps({"format": FORMAT, "version": 1, "config": config_from_state(sd), **(extra or {})}, indent=2)
    write_atomic(weights, lambda tmp: save_file(tensors, tmp), required=True)    # never half a file
    write_atomic(cfg, lambda tmp: Path(tmp).write_text(text), required=True)
    return weights, cfg


def load(path: str | Path) -> tuple[Generator | PCAModel, dict]:
    """Our format (the .safetensors or the .json; a StyleGAN or the PCA baseline) or a published
    .ckpt (with an EMA file named `ema_*.pth` beside it, when there is one)."""
    path = Path(path)
    if path.suffix == ".ckpt":
        emas = sorted(path.parent.glob("ema_*.pth"))
        return load_published(path, emas[-1] if emas else None)
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    base = path.with_suffix("")
    cfg_path, weights = base.with_suffix(".json"), base.with_suffix(".safetensors")
    meta = read_config(cfg_path)                 # everything is checked before anything is allocated
    if meta["format"] == PCA_FORMAT:
        from .pca import PCAModel
        _check_pca(meta, weights)
        try:
            return PCAModel.load(base), meta
        except (OSError, KeyError, SafetensorError) as exc:
            raise CheckpointError(f"{weights}: cannot read the PCA model ({exc})") from None
    check_config(meta.get("config"), str(cfg_path))
    _check_weights_fit(meta["config"], _stored_shapes(weights), str(weights))
    try:
        sd = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{weights}: cannot read the weights ({exc})") from None
    G = Generator(**meta["config"])
    own = G.state_dict()
    for k in own:                            # restore the blur-kernel aliases
        if k not in sd and k.endswith("resampler.kernel"):
            sd[k] = own[k]
    _load_into(G, sd, str(weights))
    return G.eval(), meta


def cached_generator(compute, path: str):
    """The generator of a checkpoint on the backend's machine (none: the bundled demo model),
    cached until one of its files changes (then the new one replaces it)."""
    if not path:
        if not DEMO_MODEL.is_file():
            raise UserError("no generator checkpoint is set and this backend has no demo model "
                            f"({DEMO_MODEL.name}): choose one (our .json/.safetensors, or a published "
                            ".ckpt with its ema_*.pth beside it), remake the demo model with "
                            "'python build.py demo-model', or train one with 'headcraft-backend train'")
        path = str(DEMO_MODEL)
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found (paths are on the backend's machine)")

    def build():
        compute.progress(0.05, "checkpoint", f"loading {p.name}")
        try:
            G, info = load(p)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        return G.to(compute.device) if hasattr(G, "to") else G, {"source": p.name, **info}
    return cached_by_files(compute.cache, ("generator", str(p.resolve()), str(compute.device)),
                           files_of(p), build)
