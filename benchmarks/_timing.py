"""Timing helpers shared by the benchmarks: warm-up, then the median of repeats."""
from __future__ import annotations

import contextlib
import statistics
import time

import torch


def time_ms(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


@contextlib.contextmanager
def native_switch(get, set_, on: bool):
    """Run the block with one of the extension's switches (``get``/``set_``, e.g.
    ``_C.hashgrid_simd_enabled``/``_C.hashgrid_set_simd``) at ``on``, and put it back after:
    how a benchmark measures a path off and on in one run."""
    was = get()
    set_(on)
    try:
        yield
    finally:
        set_(was)


def time_ms_interleaved(fns, repeats: int = 5, warmup: int = 1) -> list:
    """The median ms of each of ``fns``, timed in turns (f1, f2, ..., f1, f2, ...), so that
    a drift of the machine's speed falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            out[k].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(o) for o in out]


def row(ours_ms, torch_ms, nerfacc_ms=None, **extra) -> dict:
    r = {
        "ours_ms": round(ours_ms, 3) if ours_ms is not None else None,
        "torch_ms": round(torch_ms, 3) if torch_ms is not None else None,
        "nerfacc_ms": round(nerfacc_ms, 3) if nerfacc_ms is not None else None,
        "speedup_vs_torch": round(torch_ms / ours_ms, 2) if (ours_ms and torch_ms) else None,
    }
    r.update(extra)
    return r
