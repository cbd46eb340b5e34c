"""`headcraft-backend register-dataset`: every scan of a folder fitted and baked into
displacement maps, one Ray task per scan.

OUT/
  <stem>.exr               object-space maps (or .npy, or the three 16-bit PNGs): OUT itself is
                           a training folder for `headcraft-backend train` / `pca`
  tangent/<stem>.exr       tangent-space maps, when asked for
  visibility/<stem>.npy    for partial scans: which texels the scan covered (float 0/1)
  fits/<stem>.json         the fitted head (identity, expression, pose, similarity) and its errors
  errors.json              the scans that failed in the last run, with the reason
  registration.json        the settings the maps were made with (a later run must match them)

`register_scan` does one scan in a plain function (no Ray needed) and never raises for a
problem of that scan. Every file is written under a temporary name and renamed, the object-space
map last (for PNGs channel 0 last, the file a map folder is listed by), so a killed run leaves
nothing that looks finished, and a scan whose files all exist is skipped the next time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fit.scan import SCAN_SUFFIXES
from ..layout.formats import FORMATS
from ..layout.tangent import SPACES
from ..limits import MAX_MAP_SIZE, MIN_MAP_SIZE

PARTIAL = ("none", "depth", "sparse")
MANIFEST = "manifest.json"      # optional per-scan orientation hints (written by `synth`)
ERRORS = "errors.json"
SETTINGS = "registration.json"


@dataclasses.dataclass
class RegisterOptions:
    model: dict = dataclasses.field(default_factory=lambda: {"model": "openhead"})
    preset: str = "preview"
    steps: int = 0                        # registration steps per stage (0: the preset's)
    partial: str = "none"                 # the scans are single depth views or sparse clouds
    layout: str = "headcraft"
    size: int = 256
    spaces: tuple[str, ...] = ("object",)
    fmt: str = "exr"
    up: tuple[float, ...] | None = (0.0, 1.0, 0.0)       # the heads' directions in the scans' frame,
    forward: tuple[float, ...] | None = (0.0, 0.0, 1.0)  # for scans the manifest does not list (None: unknown)
    device: str = "cpu"
    threads: int = 0                      # torch threads per scan (0: leave torch's choice)
    landmarks: str = ""                   # folder of landmark files <scan stem>.json|.csv (fit --landmarks
                                          # format); scans without one get detected landmarks

    def check(self) -> None:
        """Raises ValueError naming the first bad setting (the model and layout are checked by
        `prepare`)."""
        if not MIN_MAP_SIZE <= self.size <= MAX_MAP_SIZE:
            raise ValueError(f"--size {self.size}: choose {MIN_MAP_SIZE} to {MAX_MAP_SIZE} texels")
        if not self.spaces or set(self.spaces) - set(SPACES):
            raise ValueError(f"--space: choose {' and/or '.join(SPACES)}")
        if self.fmt not in FORMATS:
            raise ValueError(f"--format: choose one of {', '.join(FORMATS)}")
        if self.partial not in PARTIAL or self.preset not in ("paper", "preview") or self.steps < 0:
            raise ValueError("--partial, --preset or --steps is out of range")
        if self.up is not None and self.forward is not None:
            _hint(self.up, self.forward, "--up/--forward")
        if self.landmarks and not Path(self.landmarks).is_dir():
            raise ValueError(f"--landmarks {self.landmarks}: not a folder")

    def settings(self) -> dict:
        """What the maps depend on: finished scans are only skipped under the same settings."""
        return {"model": self.model.get("model"), "preset": self.preset, "steps": self.steps,
                "partial": self.partial, "layout": self.layout, "size": self.size, "format": self.fmt}


@dataclasses.dataclass
class Task:
    scan: str                       # path of the scan file
    stem: str                       # name of its outputs
    up: tuple[float, ...] | None
    forward: tuple[float, ...] | None


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
def map_names(stem: str, fmt: str) -> list[str]:
    """The files of one map, as layout.formats.encode names them."""
    if fmt == "png16":
        return [f"{stem}_-20_to_20_ch{c}.png" for c in range(3)]
    return [f"{stem}.{fmt}"]


def space_folder(out_dir: Path, space: str) -> Path:
    return out_dir if space == "object" else out_dir / space


def outputs(out_dir: Path, stem: str, options: RegisterOptions) -> list[Path]:
    """Every file a finished scan has."""
    files = [out_dir / "fits" / f"{stem}.json"]
    if options.partial != "none":
        files.append(out_dir / "visibility" / f"{stem}.npy")
    for space in options.spaces:
        files += [space_folder(out_dir, space) / n for n in map_names(stem, options.fmt)]
    return files


def is_done(out_dir: Path, stem: str, options: RegisterOptions) -> bool:
    return all(p.is_file() for p in outputs(out_dir, stem, options))


def check_settings(out_dir: Path, options: RegisterOptions) -> None:
    """Records the settings in a new output folder; refuses a folder made with other ones."""
    mine, path = options.settings(), out_dir / SETTINGS
    if not path.is_file():
        _write(path, json.dumps(mine, indent=1).encode())
        return
    try:
        theirs = json.loads(path.read_text())
    except (OSError, ValueError):
        theirs = None
    theirs = theirs if isinstance(theirs, dict) else {}
    changed = [f"{k} {theirs.get(k)!r}, now {v!r}" for k, v in mine.items() if theirs.get(k) != v]
    if changed:
        raise ValueError(f"{out_dir} holds maps made with other settings ({'; '.join(changed)}): "
                         f"choose another --out, or the same settings to go on")


def _write(path: Path, data: bytes) -> None:
    """Through a temporary name in the same folder (matching no map pattern), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# One scan
# ------------------------------------------------------------------------------------------------
_CACHE: dict = {}     # models and bake operators, built once per (Ray worker) process


def register_scan(task: Task, out_dir: str | Path, options: RegisterOptions) -> dict:
    """Fits one scan and bakes its maps. Returns {"scan", "stem", "status": "done" or
    "failed", "seconds", "error" (when failed)}; a problem of this scan never raises."""
    from ..errors import UserError
    t0 = time.perf_counter()
    result: dict[str, Any] = {"scan": Path(task.scan).name, "stem": task.stem}
    try:
        if options.threads:
            import torch
            torch.set_num_threads(options.threads)
        _register(task, Path(out_dir), options, t0)
        result["status"] = "done"
    except UserError as exc:
        result.update(status="failed", error=str(exc))
    except Exception as exc:    # a defect or a numerical failure on one scan must not stop the set
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _register(task: Task, out_dir: Path, o: RegisterOptions, t0: float) -> None:
    from ..compute import Compute
    from ..fit.pipeline import fit_options, fit_scan
    from ..fit.scan import load_scan_file
    from ..layout import formats
    from ..layout.maps import bake_displacement, mapped_head
    compute = Compute(o.device, _CACHE)
    scan = load_scan_file(task.scan)
    steps = {"steps": o.steps} if o.steps else None
    options = fit_options(o.preset, partial=o.partial != "none", sparse=o.partial == "sparse",
                          up=task.up, forward=task.forward, stage1=steps, stage2=steps)
    head = mapped_head(compute, o.model, o.layout)
    model = head.model
    res = fit_scan(model, head.dense, scan, options, landmark_file(o.landmarks, task.stem), device=compute.device)
    maps: list[tuple[Path, bytes]] = []
    for space in sorted(o.spaces, key=lambda s: s == "object"):         # object space last
        baked = bake_displacement(compute, head, o.size, res.base, res.displacement,
                                  res.registration.visibility, space)
        encoded = formats.encode(baked["map"], o.fmt, task.stem)
        folder = space_folder(out_dir, space)
        # Reversed: a PNG triplet's channel 0, by which map folders list it, comes last.
        maps += [(folder / n, encoded[n]) for n in sorted(encoded, reverse=True)]
    sim = res.coarse.similarity
    fit = {"scan": Path(task.scan).name, "model": model.data.name, "model_version": model.data.version,
           "preset": o.preset, "layout": o.layout, "size": o.size, "seconds": round(time.perf_counter() - t0, 1),
           "shape": res.coarse.shape.tolist(), "expr": res.coarse.expr.tolist(), "pose": res.coarse.pose.tolist(),
           "similarity": {"scale": sim.scale, "rotation": sim.rotation.tolist(),
                          "translation": sim.translation.tolist()},
           "landmarks_used": res.landmarks_used, "landmark_rmse_mm": res.coarse.landmark_rmse_mm,
           "surface_median_mm": res.coarse.surface_median_mm, "errors_mm": res.report, "notes": res.notes}
    files = [(out_dir / "fits" / f"{task.stem}.json", json.dumps(fit, indent=1).encode())]
    if o.partial != "none":
        files.append((out_dir / "visibility" / f"{task.stem}.npy", formats.npy_bytes(baked["visibility_map"])))
    for path, data in files + maps:
        _write(path, data)


def landmark_file(folder: str, stem: str) -> dict[int, np.ndarray] | None:
    """The scan's landmarks from `folder`/<stem>.json or .csv, or None (detect them)."""
    from ..fit.landmark_file import read_landmark_file
    if not folder:
        return None
    for suffix in (".json", ".csv"):
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return read_landmark_file(path)
    return None


# ------------------------------------------------------------------------------------------------
# The folder
# ------------------------------------------------------------------------------------------------
def find_scans(folder: Path) -> list[Path]:
    """Scan files at the top level of the folder (not in subfolders), by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SCAN_SUFFIXES)


def _stems(scans: list[Path]) -> list[str]:
    """Output names: the file's stem, or stem_extension where two scans share a stem."""
    count: dict[str, int] = {}
    for p in scans:
        count[p.stem] = count.get(p.stem, 0) + 1
    return [p.stem if count[p.stem] == 1 else f"{p.stem}_{p.suffix[1:].lower()}" for p in scans]


def _hint(up, forward, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    u, f = np.asarray(up, np.float64), np.asarray(forward, np.float64)
    if u.shape != (3,) or f.shape != (3,) or not (np.isfinite(u).all() and np.isfinite(f).all()) \
            or np.linalg.norm(np.cross(u, f)) < 1e-6 * np.linalg.norm(u) * np.linalg.norm(f) + 1e-12:
        raise ValueError(f"{where}: up and forward must be two non-parallel 3D directions")
    return tuple(u.tolist()), tuple(f.tolist())


def orientation_hints(folder: Path) -> dict[str, tuple]:
    """File name -> (up, forward) from the folder's manifest.json, when it has one (`synth`
    writes it; for other data sets: {"scans": [{"file": ..., "up": [x, y, z], "forward": [...]}]})."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["scans"]
        return {str(e["file"]): _hint(e["up"], e["forward"], f"{path.name}, {e['file']}")
                for e in entries if "up" in e and "forward" in e}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable scan manifest ({exc}); fix or remove it") from None


def plan(scans_dir: Path, out_dir: Path, options: RegisterOptions) -> tuple[list[Task], list[str]]:
    """The scans to register and the names of those already finished (skipped)."""
    if not scans_dir.is_dir():
        raise ValueError(f"{scans_dir}: no such folder")
    scans = find_scans(scans_dir)
    if not scans:
        raise ValueError(f"{scans_dir}: no scan files ({', '.join(SCAN_SUFFIXES)}) at its top level")
    hints = orientation_hints(scans_dir)
    todo, skipped = [], []
    for path, stem in zip(scans, _stems(scans)):
        if is_done(out_dir, stem, options):
            skipped.append(path.name)
        else:
            up, forward = hints.get(path.name, (options.up, options.forward))
            todo.append(Task(str(path), stem, up, forward))
    return todo, skipped


def prepare(options: RegisterOptions) -> None:
    """Loads the model and builds its dense template and layout once, here, into the on-disk
    cache the workers read (instead of every worker building them); raises for a bad model or
    layout."""
    from ..head.dense import dense_template
    from ..head.registry import load_model_data
    from ..layout.store import get_layout
    data = load_model_data(options.model)
    dense_template(data)
    get_layout(data, options.layout)


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Cluster:
    address: str = ""             # an existing cluster; "" starts a local one
    workers: int = 0              # scans at a time (0: this machine's CPUs, or no limit on a cluster)
    cpus_per_scan: int = 1
    gpus_per_scan: float = 0.0

    def check(self) -> None:
        if self.workers < 0 or self.cpus_per_scan < 1 or self.gpus_per_scan < 0:
            raise ValueError("--workers must be >= 0, --cpus-per-scan >= 1 and --gpus-per-scan >= 0")


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("register-dataset runs on Ray: pip install 'headcraft-backend[dataset]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable head for many minutes: try its port first."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "6379")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot reach the Ray cluster at {address}: {exc}") from None


@contextlib.contextmanager
def ray_cluster(cluster: Cluster):
    """Ray, connected to cluster.address or to a local cluster started here (and shut down on
    leaving); raises ValueError when neither works or the cluster lacks the GPUs asked for."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        kw = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if cluster.address:
            _check_reachable(cluster.address)
        try:
            if cluster.address:
                ray.init(address=cluster.address, **kw)
            else:
                workers = cluster.workers or max(1, (os.cpu_count() or 1) // cluster.cpus_per_scan)
                # Results are small dicts: a small object store instead of 30 % of the memory.
                ray.init(num_cpus=workers * cluster.cpus_per_scan, object_store_memory=128 << 20, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot start or reach the Ray cluster: {exc}") from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if cluster.gpus_per_scan > gpus:
            raise ValueError(f"--gpus-per-scan {cluster.gpus_per_scan:g}: the cluster has {gpus:g} GPU(s)")
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_tasks(ray, tasks: list[Task], out_dir: Path, options: RegisterOptions, cluster: Cluster,
              on_result: Callable[[dict], None]) -> None:
    """One Ray task per scan, at most `cluster.workers` at a time (0: all queued); each
    result goes to on_result as it arrives."""
    remote = ray.remote(register_scan).options(num_cpus=cluster.cpus_per_scan, num_gpus=cluster.gpus_per_scan,
                                               max_retries=1)
    options = dataclasses.replace(options, threads=cluster.cpus_per_scan,
                                  device="cuda" if cluster.gpus_per_scan > 0 else "cpu")
    window = cluster.workers or len(tasks)
    pending: dict[Any, Task]     # Ray object ref -> its task
    queue, pending = list(reversed(tasks)), {}
    while queue or pending:
        while queue and len(pending) < window:
            task = queue.pop()
            pending[remote.remote(task, str(out_dir), options)] = task
        ready, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready[0])
        try:
            on_result(ray.get(ready[0]))
        except ray.exceptions.RayError as exc:     # the worker died (memory, a crash) or was lost
            lines = str(exc).strip().splitlines()
            on_result({"scan": Path(task.scan).name, "stem": task.stem, "status": "failed", "seconds": 0.0,
                       "error": f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"})


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar when tqdm is installed, else one line per scan; counts done/failed/skipped."""

    def __init__(self, total: int, skipped: int, stream=sys.stderr):
        self.counts = {"done": 0, "failed": 0, "skipped": skipped}
        self.total, self.stream = total, stream
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, initial=skipped, unit="scan", file=stream, dynamic_ncols=True)
            self.bar.set_postfix(self.counts)

    def __call__(self, result: dict) -> None:
        self.counts[result["status"]] += 1
        line = f"{result['scan']}: {result['status']} in {result['seconds']:.0f} s" + \
            (f": {result['error']}" if result["status"] == "failed" else "")
        if self.bar is None:
            n = sum(self.counts.values())
            print(f"[{n}/{self.total}] {line} (done {self.counts['done']}, failed {self.counts['failed']}, "
                  f"skipped {self.counts['skipped']})", file=self.stream, flush=True)
        else:
            self.bar.write(line, file=self.stream)
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def register_folder(scans_dir: str | Path, out_dir: str | Path, options: RegisterOptions, cluster: Cluster,
                    stream=sys.stderr) -> dict:
    """Registers every unfinished scan of the folder; returns {"done": [...results],
    "failed": [...results], "skipped": [names], "seconds"}. Raises ValueError for bad
    arguments (nothing is registered then); errors.json is written even when interrupted."""
    options.check()
    cluster.check()
    scans_dir, out_dir = Path(scans_dir), Path(out_dir)
    todo, skipped = plan(scans_dir, out_dir, options)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_settings(out_dir, options)
    except OSError as exc:
        raise ValueError(f"cannot write to {out_dir}: {exc}") from None
    from ..errors import UserError
    try:
        if todo:
            prepare(options)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    t0 = time.perf_counter()
    results: list[dict] = []
    try:
        if todo:
            with ray_cluster(cluster) as ray:
                progress = Progress(len(todo) + len(skipped), len(skipped), stream)
                def on_result(r: dict) -> None:
                    results.append(r)
                    progress(r)
                try:
                    run_tasks(ray, todo, out_dir, options, cluster, on_result)
                finally:
                    progress.close()
    finally:
        failed = [r for r in results if r["status"] == "failed"]
        _write(out_dir / ERRORS, json.dumps([{"scan": r["scan"], "error": r["error"]} for r in failed],
                                            indent=1).encode())
    return {"done": [r for r in results if r["status"] == "done"], "failed": failed, "skipped": skipped,
            "seconds": time.perf_counter() - t0}


def format_summary(summary: dict, out_dir: Path, options: RegisterOptions) -> str:
    done, failed, skipped = summary["done"], summary["failed"], summary["skipped"]
    total = len(done) + len(failed) + len(skipped)
    lines = [f"registered {len(done)}, failed {len(failed)}, skipped {len(skipped)} (already done) "
             f"of {total} scans in {summary['seconds']:.0f} s"
             + (f"; {np.mean([r['seconds'] for r in done]):.0f} s per scan in a worker" if done else "")]
    if failed:
        width = max(len("scan"), *(len(r["scan"]) for r in failed))
        lines += [f"failed scans (also in {out_dir / ERRORS}):", f"  {'scan':<{width}}  error"]
        lines += [f"  {r['scan']:<{width}}  {r['error']}" for r in failed]
    if "object" in options.spaces:
        lines.append(f"object-space maps in {out_dir}: train with 'headcraft-backend train {out_dir}'")
    if "tangent" in options.spaces:
        lines.append(f"tangent-space maps in {space_folder(out_dir, 'tangent')}")
    return "\n".join(lines)
