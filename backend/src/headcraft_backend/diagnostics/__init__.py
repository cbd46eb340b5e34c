"""Diagnostic jobs: an array echo (protocol checks, round-trip benchmark) and a device self-test."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..head.registry import get_model
from ..errors import UserError
from ..handlers import MODEL, Param, job


@job("diagnostics.echo", open=True, arrays="anything",
     result="field `params` (the params sent); the same arrays back",
     notes="Protocol tests and `tools/bench.py`: the arrays come back unchanged.")
def echo(ctx, params, arrays):
    """Send the arrays back unchanged (used to measure transfer cost)."""
    return {"params": params}, dict(arrays)


@job("diagnostics.selftest", {**MODEL, "seconds": Param("float", 2.0, "how long to run", lo=0, hi=3600),
                               "iterations": Param("int", 0, "> 0: that many batches, and `seconds` is ignored",
                                                   lo=0),
                               "batch": Param("int", 8, "heads per forward pass", lo=1, hi=1024)},
     result="fields `batches seconds heads_per_second device`; array `last_vertices (V,3)`",
     notes="Batched head-model forward passes on the backend's device: throughput, progress and cancel. "
           "Refused: `seconds` 0 with no `iterations`.")
def selftest(ctx, params, arrays):
    """Run batched head-model forward passes on the device for `seconds` (or `iterations`) and
    report throughput; a long job that reports progress and honours cancel."""
    seconds, iterations, batch = params["seconds"], params["iterations"], params["batch"]
    if seconds <= 0 and iterations <= 0:
        raise UserError("selftest needs 0 < seconds <= 3600 or iterations > 0")
    model = get_model(ctx, params)
    gen = torch.Generator().manual_seed(0)
    shape = torch.randn(batch, model.data.num_shape, generator=gen).to(ctx.device)
    start, done = time.monotonic(), 0
    while True:
        elapsed = time.monotonic() - start
        if (iterations and done >= iterations) or (not iterations and elapsed >= seconds):
            break
        frac = done / iterations if iterations else elapsed / seconds
        ctx.progress(frac, "forward", f"{done} batches")
        with torch.no_grad():
            verts = model(shape=shape).vertices
        done += 1
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    elapsed = time.monotonic() - start
    return ({"batches": done, "seconds": elapsed, "heads_per_second": done * batch / max(elapsed, 1e-9),
             "device": str(ctx.device)},
            {"last_vertices": verts[0].cpu().numpy().astype(np.float32)})
