#!/usr/bin/env python3
"""HeadCraft for Blender: set-up, tests, demo, benchmarks and the extension zip.

    python3 build.py setup       # .venv (Python 3.11) with bpy 4.2 LTS, torch, the backend (editable);
                                 # .venv-bpy45 (bpy 4.5 LTS) and .venv-bpy5 (bpy 5.x, Python 3.13);
                                 # .venv-typecheck (Blender 4.2's API stubs, mypy)
    python3 build.py test        # setup, then the static checks, the whole suite on bpy 4.2 and
                                 # tests/blender on 4.5 and 5.x
    python3 build.py typecheck   # setup, then the static checks (mypy on the backend, tools/, build.py;
                                 # mypy on the extension against Blender's stubs, in .venv-typecheck)
    python3 build.py demo        # setup, then the main job headless -> out/demo/
    python3 build.py extension   # validate and build dist/headcraft-<version>.zip
    python3 build.py ui          # every panel and menu in its main states, as text -> out/ui.txt
    python3 build.py bench [wire|add-head|registration|real-fit|maps|generate|animate] [--device cuda]
                                 # ratios to baselines; with --device cuda first the CUDA-only tests,
                                 # then every row's torch work on the GPU (the GPU machine's one script)
    python3 build.py eval-fit    # fit procedural scans with ground truth, print errors per region
    python3 build.py eval-real [folder]  # fit real scans (default ../shared/data/real_scans): figures + pictures
    python3 build.py eval        # held-apart procedural set: registration errors, MMD/COV/JSD (Table 1)
    python3 build.py demo-model  # remake the bundled demo generator (scans -> Ray registration -> training)

Every subcommand is idempotent and works on a fresh machine (PyPI reachable).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# HEADCRAFT_STAGE lets parallel test runs stage the extension into folders of their own.
STAGE = Path(os.environ.get("HEADCRAFT_STAGE") or ROOT / ".stage")
DIST = ROOT / "dist"
EXT_ID = "headcraft"
BPY = "bpy==4.2.23"          # newest 4.2 LTS wheel
TORCH = "torch==2.13.0"       # the CPU build on this project's machines
NUMPY = "numpy==1.26.4"       # the numpy Blender 4.2 bundles (and mediapipe needs < 2)
# pytest-xdist: tests mostly keep one core busy, so two workers halve the suite's time on CI's two cores
TEST_RUNNERS = ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5"]
REQUIREMENTS = [NUMPY, TORCH, BPY, "scipy>=1.10", *TEST_RUNNERS, "mypy==2.4.1"]
# The other Blender versions the manifest admits: bpy and what Blender-side tests import, never
# torch (the backend runs in .venv, as it runs in its own environment for users).
BLENDERS = {   # label: (venv, Python, bpy pin)
    "4.5": (ROOT / ".venv-bpy45", "3.11", "bpy==4.5.15"),     # newest 4.5 LTS wheel
    "5.x": (ROOT / ".venv-bpy5", "3.13", "bpy==5.3.0"),       # newest 5.x wheel (Python 3.13 only)
}
# The extension's type check runs in a venv of its own: fake-bpy-module (Blender 4.2's API as
# stubs) installs a `bpy` package that would shadow the real bpy wheel in .venv; numpy is the one
# Blender 4.2 bundles (the extension's only dependency). 20260128, not the newer 20260730: that
# one types bpy_prop_collection.get() as returning None, so mypy took every
# `bpy.data.objects.get(name)` for None and skipped the code after its None check (20260128
# types it as the element: only the None branch goes unchecked).
TYPECHECK_VENV = ROOT / ".venv-typecheck"
TYPECHECK_REQUIREMENTS = ["fake-bpy-module-4.2==20260128", "mypy==2.4.1", NUMPY]
BLENDER_TEST_REQUIREMENTS = ["scipy>=1.10", "Pillow>=10", "OpenEXR>=3.2", *TEST_RUNNERS]
LPIPS = "lpips==0.1.4"        # only its weight files are read; --no-deps keeps torchvision (and a CUDA torch) out
WIRE_SRC = ROOT / "backend" / "src" / "headcraft_backend" / "wire.py"
WIRE_COPY = ROOT / "headcraft_blender" / "client" / "wire.py"
# the wire codec imports its limits: both travel to the extension
SYNCED = [(WIRE_SRC, WIRE_COPY)] + [(WIRE_SRC.with_name(n), WIRE_COPY.with_name(n)) for n in ("limits.py", "units.py", "presets.py")]


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*cmd, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def find_python(version: str) -> str:
    """An interpreter of this minor version: this one, one on PATH, or one pyenv installed."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [shutil.which(f"python{version}"),
                  *sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")), reverse=True)]
    for exe in filter(None, candidates):   # a pyenv shim exists but fails when no version is selected
        if subprocess.run([exe, "-c", ""], capture_output=True).returncode == 0:
            return exe
    sys.exit(f"Python {version} is required (the bpy wheels need it): install python{version}")


def setup() -> Path:
    """Create/refresh .venv; skipped when nothing it depends on changed."""
    sync()
    py = venv_python()
    stamp = VENV / ".headcraft-setup"
    key = hashlib.sha256("\n".join(REQUIREMENTS + [LPIPS]).encode()
                         + (ROOT / "backend" / "pyproject.toml").read_bytes()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text() == key:
        return py
    if not py.exists():
        run(find_python("3.11"), "-m", "venv", VENV)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first and alone, pinned, so nothing pulls a CUDA build in.
    run(*pip, NUMPY, TORCH)
    run(*pip, *REQUIREMENTS, "-e", f"{ROOT / 'backend'}[test,train,dataset]")
    run(*pip, "--no-deps", LPIPS)
    stamp.write_text(key)
    return py


def setup_blender(label: str) -> Path:
    """Create/refresh the venv of another Blender version (BLENDERS); skipped when unchanged."""
    venv, version, pin = BLENDERS[label]
    py = venv_python(venv)
    stamp = venv / ".headcraft-setup"
    key = hashlib.sha256("\n".join([version, pin, *BLENDER_TEST_REQUIREMENTS]).encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text() == key:
        return py
    if not py.exists():
        run(find_python(version), "-m", "venv", venv)
    run(py, "-m", "pip", "install", "--disable-pip-version-check", "-q", pin, *BLENDER_TEST_REQUIREMENTS)
    stamp.write_text(key)
    return py


def setup_typecheck() -> Path:
    """Create/refresh .venv-typecheck (Python 3.11, Blender 4.2's); skipped when unchanged."""
    py = venv_python(TYPECHECK_VENV)
    stamp = TYPECHECK_VENV / ".headcraft-setup"
    key = hashlib.sha256("\n".join(TYPECHECK_REQUIREMENTS).encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text() == key:
        return py
    if not py.exists():
        run(find_python("3.11"), "-m", "venv", TYPECHECK_VENV)
    run(py, "-m", "pip", "install", "--disable-pip-version-check", "-q", *TYPECHECK_REQUIREMENTS)
    stamp.write_text(key)
    return py


def sync() -> None:
    """The extension carries generated copies of the backend's wire codec and limits (not tracked)."""
    for src_path, copy in SYNCED:
        src = src_path.read_bytes()
        if not copy.exists() or copy.read_bytes() != src:
            copy.write_bytes(src)
            print(f"synced {copy.relative_to(ROOT)}")


def stage() -> Path:
    """Copy the extension into .stage/headcraft/ with its manifest (the layout Blender loads)."""
    sync()
    dst = STAGE / EXT_ID
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT / "headcraft_blender", dst,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "blender_manifest.toml", dst / "blender_manifest.toml")
    # The backend travels inside the extension so 'Set Up Backend' can pip-install it.
    with tempfile.TemporaryDirectory() as tmp:   # a copy: pip's build/ folder never clashes
        src = Path(tmp) / "backend"
        shutil.copytree(ROOT / "backend", src, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "build", "*.egg-info", ".mypy_cache"))
        subprocess.run([venv_python() if venv_python().exists() else sys.executable, "-m", "pip", "wheel",
                        "-q", "--no-deps", "--no-build-isolation", "-w", dst / "backend_dist", src],
                       check=True, capture_output=True)
    return dst


def blender_ext_cli(py: Path) -> tuple[Path, Path]:
    out = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    base = Path(out) / "bpy" / "4.2" / "scripts"
    return (base / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py",
            base / "modules" / "_bpy_internal" / "extensions" / "tags.py")


def extension() -> Path:
    py = setup()
    src = stage()
    cli, tags = blender_ext_cli(py)
    version = tomllib.loads((ROOT / "blender_manifest.toml").read_text())["version"]
    DIST.mkdir(exist_ok=True)
    out = DIST / f"{EXT_ID}-{version}.zip"
    run(py, cli, "validate", src, f"--valid-tags={tags}")
    run(py, cli, "build", "--source-dir", src, "--output-filepath", out, f"--valid-tags={tags}")
    run(py, cli, "validate", out, f"--valid-tags={tags}")
    print(f"built {out.relative_to(ROOT)} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def static_checks(py: Path) -> list[tuple[str, list]]:
    """Each static check: (name, command run from the repository root, non-zero on an error)."""
    return [
        # one run, so that an error in the backend (which tools/ imports) is reported once
        ("mypy: backend, tools/, build.py",
         [py, "-m", "mypy", "--config-file", ROOT / "backend" / "pyproject.toml",
          ROOT / "backend" / "src" / "headcraft_backend", ROOT / "tools", ROOT / "build.py"]),
        # the extension against Blender's API stubs, in .venv-typecheck (settings in the .ini)
        ("mypy: extension (fake-bpy-module 4.2)",
         [setup_typecheck(), "-m", "mypy", "--config-file", ROOT / "tools" / "mypy_extension.ini"]),
    ]


def typecheck(py: Path | None = None) -> int:
    """Every static check, all of them even after a failure. Non-zero when any fails."""
    failed = []
    for name, cmd in static_checks(py or setup()):
        print(f"=== {name}\n+", " ".join(map(str, cmd)), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"static checks FAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def test(args) -> int:
    """The static checks, then the whole suite on bpy 4.2 (.venv), then tests/blender on each
    other Blender version with the backend started from .venv's Python, each run spread over
    pytest-xdist workers. Non-zero when any of them fails (a failed check does not stop the
    test runs)."""
    with concurrent.futures.ThreadPoolExecutor() as pool:   # the environments install side by side
        others = {label: pool.submit(setup_blender, label) for label in BLENDERS}
        checker = pool.submit(setup_typecheck)
        py = setup()
        pythons = {label: f.result() for label, f in others.items()}
        checker.result()
    start = time.monotonic()
    code = typecheck(py)
    summary = [f"static checks: {'passed' if code == 0 else 'FAILED'} in {time.monotonic() - start:.0f} s"]
    failed = code != 0
    runs = [(f"Blender {BPY.split('==')[1]}", py, ["tests"])]
    # Tests marked backend_bound spend their time in the backend, the same on every Blender.
    runs += [(f"Blender {pin.split('==')[1]}", pythons[label],
              ["tests/blender", "-m", "not backend_bound"]) for label, (_, _, pin) in BLENDERS.items()]
    # Two workers or more (CI has two cores), at most four (each holds bpy, torch and a backend),
    # sharing the cores out: torch's threads spin while they wait, so two workers of two
    # threads each on two cores ran the fitting tests 3-8x slower than one worker did.
    cores = os.cpu_count() or 2
    n = min(4, max(2, cores))
    workers = ["-n", str(n)]
    env = {**os.environ, "HEADCRAFT_BACKEND_PYTHON": str(py), "OMP_NUM_THREADS": str(max(1, cores // n))}
    for name, python, tests in runs:
        cmd = [python, "-m", "pytest", "-q", "-ra", "--timeout=900", *workers, *tests, *args]
        print(f"=== {name}\n+", " ".join(map(str, cmd)), flush=True)
        start = time.monotonic()
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        # 5 = no tests collected: a broken suite, not a pass
        summary.append(f"{name} ({' '.join(tests)}): {'passed' if code == 0 else f'FAILED (pytest exit {code})'}"
                       f" in {time.monotonic() - start:.0f} s")
        failed |= code != 0
    print("\n".join(summary), flush=True)
    return 1 if failed else 0


DEMO_LINE = re.compile(r"^(\[ *\d+ s\] |scan: |  rig vs |done in |  \S|demo: )")


def demo(args) -> int:
    """The demo's own step lines on the terminal; everything (Blender's and Cycles' logs too) in
    out/demo.log, whose end is shown when the demo fails."""
    py = setup()
    stage()
    log_path = ROOT / "out" / "demo.log"
    log_path.parent.mkdir(exist_ok=True)
    print(f"demo: steps below; the whole log in {log_path.relative_to(ROOT)}", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([py, ROOT / "tools" / "demo.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None      # stdout=PIPE
        for line in proc.stdout:
            log.write(line)
            if DEMO_LINE.match(line):
                print(line, end="", flush=True)
        code = proc.wait()
    if code:
        print("".join(log_path.read_text().splitlines(keepends=True)[-40:]), end="")
        print(f"demo failed (exit {code}); the whole log: {log_path.relative_to(ROOT)}")
    return code


def bench(args) -> int:
    py = setup()
    stage()
    if any("cuda" in a for a in args):     # the tests that only a GPU runs (skipped elsewhere)
        code = subprocess.run([py, "-m", "pytest", "-q", "-rs", "tests/backend", "-k", "cuda"], cwd=ROOT).returncode
        print(f"CUDA-only tests: {'passed' if code == 0 else 'FAILED'}", flush=True)
    return subprocess.run([py, ROOT / "tools" / "bench.py", *args], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup":
        print(f"ready: {setup()}")
        for label in BLENDERS:
            print(f"ready: {setup_blender(label)}")
        print(f"ready: {setup_typecheck()}")
    elif cmd == "sync":
        sync()
    elif cmd == "stage":
        print(stage())
    elif cmd == "extension":
        extension()
    elif cmd == "test":
        return test(rest)
    elif cmd == "typecheck":
        return typecheck()
    elif cmd == "demo":
        return demo(rest)
    elif cmd == "ui":
        py = setup()
        stage()
        return subprocess.run([py, ROOT / "tools" / "ui_snapshot.py", *rest], cwd=ROOT).returncode
    elif cmd == "bench":
        return bench(rest)
    elif cmd == "eval-real":
        py = setup()
        folder = rest[0] if rest and not rest[0].startswith("-") else str(ROOT.parent / "shared" / "data" / "real_scans")
        rest = rest[1:] if rest and not rest[0].startswith("-") else rest
        return subprocess.run([py, "-m", "headcraft_backend", "eval-real", folder, *rest], cwd=ROOT).returncode
    elif cmd in ("eval-fit", "eval"):
        py = setup()
        return subprocess.run([py, "-m", "headcraft_backend", cmd, *rest], cwd=ROOT).returncode
    elif cmd == "demo-model":
        py = setup()
        return subprocess.run([py, ROOT / "tools" / "demo_model.py", *rest], cwd=ROOT).returncode
    else:
        print(f"unknown command {cmd!r}\n{__doc__}")
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(f"build.py: step failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd))}")
