"""The vectorization ladder: the same computation written four ways, timed side by side.

Rungs, in order of increasing vectorization:

1. ``scalar``     scalar Python loops over Python floats: the loop twins (``vecnn.reference``);
2. ``per_sample`` vectorized inside one sample, a Python loop over the batch (``per_sample.py``);
3. ``vecnn``      whole-batch matrices: vecnn's layers, losses and ``Sequential`` step;
4. ``pytorch``    PyTorch eager, the same math, float32, the same thread count (when installed).

Operations: Dense, Conv2D, ReLU, softmax cross-entropy (each forward + backward) and one full
training step of an MLP (forward, loss, backward, Adam). FLOPs count matrix-product work only,
``2 m n k`` per product, the same for every rung; elementwise operations count none. Scalar
loops too slow to finish run on the first ``k / 2`` and ``k`` samples and are extrapolated to
the batch along the line through both times; such rows say ``scaled from k``. A batch-size
sweep of Dense forward + backward shows where the matrix library saturates.

``run(Config)`` returns a report dict (JSON data); ``cases.py`` holds the operations,
``table.py`` prints the report and ``charts.py`` draws it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import backend, ops
from .cases import CASES, dense_case
from .common import machine
from .peak import measure_peak

RUNGS = ("scalar", "per_sample", "vecnn", "pytorch")
LABELS = {
    "scalar": "scalar loops",
    "per_sample": "per-sample loops",
    "vecnn": "whole batch (vecnn)",
    "pytorch": "pytorch eager",
}


@dataclass
class Config:
    """Sizes, repeats and slices of one run (``full()``, ``quick()``, or ``tiny()`` for tests)."""

    batch: int = 128
    dense: tuple = (784, 256)  # in, out
    conv: tuple = (32, 64, 3, 13)  # in channels, out channels, kernel, image side (no padding)
    act_width: int = 256
    classes: int = 10
    mlp: tuple = (784, 256, 128, 10)
    scalar_slice: int = 16  # samples the scalar loops of Dense and the MLP step run on (at most)
    conv_scalar_slice: int = 2  # ... of Conv2D (about 0.5 s per sample)
    scalar_repeats: int = 2
    repeats: int = 5
    min_time: float = 0.2  # seconds one timed repeat of a fast rung lasts at least
    budget: float = 10.0  # seconds after which a slow rung stops repeating
    sweep: tuple = (1, 4, 16, 64, 128, 256, 1024, 4096)
    peak_n: int = 4096
    peak_repeats: int = 5
    use_torch: bool = True
    name: str = "full"

    @classmethod
    def full(cls, **kw):
        return cls(**kw)

    @classmethod
    def quick(cls, **kw):
        return cls(
            **{
                **dict(
                    scalar_slice=2,
                    conv_scalar_slice=2,
                    scalar_repeats=1,
                    repeats=3,
                    min_time=0.05,
                    budget=1.0,
                    sweep=(1, 16, 128, 1024, 4096),
                    peak_repeats=3,
                    name="quick",
                ),
                **kw,
            }
        )

    @classmethod
    def tiny(cls, **kw):
        """Seconds-long run on small shapes, for tests."""
        return cls(
            **{
                **dict(
                    batch=4,
                    dense=(12, 6),
                    conv=(2, 3, 3, 6),
                    act_width=8,
                    classes=3,
                    mlp=(12, 8, 6, 3),
                    scalar_slice=2,
                    conv_scalar_slice=1,
                    scalar_repeats=1,
                    repeats=2,
                    min_time=0.0,
                    sweep=(1, 4, 16),
                    peak_n=64,
                    peak_repeats=1,
                    name="tiny",
                ),
                **kw,
            }
        )


# -- timing ------------------------------------------------------------------------------------
def _timed(fn, number=1):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - t0


def measure(fn, repeats, min_time, budget=None):
    """Seconds per call of ``fn``: ``{"best", "median", "repeats", "number"}``.

    The first call warms up (allocations, compiled kernels). A call slower than ``min_time``
    is timed once per repeat, the warm-up counting as the first repeat, and repeats stop early
    once they have taken ``budget`` seconds; a faster one runs ``number`` times per repeat so
    that each repeat lasts about ``min_time``."""
    first = _timed(fn)
    if first >= min_time:
        samples, number = [first], 1
        while len(samples) < repeats and (budget is None or sum(samples) < budget):
            samples.append(_timed(fn))
    else:
        number = max(1, math.ceil(min_time / max(_timed(fn), 1e-9)))
        samples = [_timed(fn, number) / number for _ in range(repeats)]
    return {"best": min(samples), "median": float(np.median(samples)), "repeats": len(samples), "number": number}


# -- running ----------------------------------------------------------------------------------
def _import_torch():
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install 'vecnn[torch]')"
    return torch, None


def _time_rung(rung, spec, cfg, n):
    """Time one rung of an operation on a batch of ``n``; ``spec`` as in ``cases.py``.

    A part ``(f, k)`` with ``k < n`` is timed on ``k // 2`` and ``k`` samples and extrapolated
    along the line through both points, so the per-call fixed cost (a twin converting the
    weights to lists, for one) is counted once, not ``n / k`` times."""
    parts = spec if isinstance(spec, list) else [spec]
    repeats = cfg.scalar_repeats if rung == "scalar" else cfg.repeats
    seconds = median = 0.0
    scaled_from = fit = None
    for part in parts:
        f, k = part if isinstance(part, tuple) else (part, None)
        if k is None:
            m = measure(f, repeats, cfg.min_time, cfg.budget)
            seconds, median = seconds + m["best"], median + m["median"]
            continue
        if k >= n:
            m = measure(lambda: f(n), repeats, cfg.min_time, cfg.budget)
            seconds, median = seconds + m["best"], median + m["median"]
            continue
        k1 = max(1, k // 2)
        m1 = measure(lambda: f(k1), repeats, cfg.min_time, cfg.budget) if k1 < k else None
        m = measure(lambda: f(k), repeats, cfg.min_time, cfg.budget)
        seconds += extrapolate(k1, m1 and m1["best"], k, m["best"], n)
        median += extrapolate(k1, m1 and m1["median"], k, m["median"], n)
        scaled_from = k
        fit = {"samples": [k1, k], "seconds": [m1 and m1["best"], m["best"]]}
    return {
        "rung": rung,
        "label": LABELS[rung],
        "seconds": seconds,
        "median_seconds": median,
        "repeats": m["repeats"],
        "scaled_from": scaled_from,
        "fit": fit,
    }


def extrapolate(k1, t1, k2, t2, n) -> float:
    """Time for ``n`` samples on the line through ``(k1, t1)`` and ``(k2, t2)``; proportional
    scaling of ``t2`` when there is only one point or the points give no positive slope."""
    if t1 is None or k1 >= k2 or t2 <= t1:
        return t2 * n / k2
    per_sample = (t2 - t1) / (k2 - k1)
    return t2 + per_sample * (n - k2)


def run_ladder(cfg, torch=None, peak_gflops=None, ops=tuple(CASES), seed=0):
    """Time every rung of every operation; returns ``(results, skipped)``."""
    rng = np.random.default_rng(seed)
    results, skipped = [], {}
    for op in ops:
        try:
            info, rungs = CASES[op](cfg, rng, torch)
        except Exception as e:  # e.g. Conv2D missing or unfinished: report, don't crash
            skipped[op] = f"{type(e).__name__}: {e}"
            continue
        info["batch"] = cfg.batch
        info["rungs"] = [_time_rung(r, rungs[r], cfg, cfg.batch) for r in RUNGS if r in rungs]
        _derive(info, peak_gflops)
        results.append(info)
    return results, skipped


def _derive(info, peak_gflops=None):
    """Speedups over the loop rungs, GFLOP/s and share of the peak, for every rung of ``info``."""
    by = {r["rung"]: r["seconds"] for r in info["rungs"]}
    for r in info["rungs"]:
        for base in ("scalar", "per_sample"):
            r[f"speedup_vs_{base}"] = by[base] / r["seconds"] if base in by else None
        r["gflops"] = info["flops"] / r["seconds"] / 1e9 if info["flops"] else None
        r["peak_share"] = r["gflops"] / peak_gflops if peak_gflops and r["gflops"] is not None else None


def run_sweep(cfg, torch=None, peak_gflops=None, seed=0):
    """Dense forward+backward at each batch size of ``cfg.sweep``: vecnn (and PyTorch)."""
    rng = np.random.default_rng(seed)
    n_in, n_out = cfg.dense
    points = []
    for n in cfg.sweep:
        info, rungs = dense_case(dataclasses.replace(cfg, batch=n), rng, torch)
        for rung in ("vecnn", "pytorch"):
            if rung in rungs:
                m = measure(rungs[rung], cfg.repeats, cfg.min_time, cfg.budget)
                points.append(
                    {
                        "batch": n,
                        "rung": rung,
                        "seconds": m["best"],
                        "median_seconds": m["median"],
                        "flops": info["flops"],
                        "gflops": info["flops"] / m["best"] / 1e9,
                    }
                )
                points[-1]["peak_share"] = points[-1]["gflops"] / peak_gflops if peak_gflops else None
    return {
        "op": "dense",
        "title": f"Dense {n_in}->{n_out} forward+backward by batch size",
        "flops_note": "3 matrix products per call",
        "points": points,
    }


def run(cfg: Config | None = None, threads: int | None = None, seed: int = 0) -> dict:
    """The whole benchmark: the peak first, then the ladder and the sweep. Returns the report."""
    cfg = cfg or Config.full()
    threads = threads or os.cpu_count()
    torch, torch_skip = _import_torch() if cfg.use_torch else (None, "disabled (--no-torch)")
    if torch is not None:
        torch.set_num_threads(threads)
    ops.cpu()  # numba (if installed) loads its own BLAS: load it before limiting threads
    backend.set_num_threads(threads)
    t0, load_start, cpu_start = time.perf_counter(), _load(), _cpu_sample()
    peak = measure_peak(cfg.peak_n, cfg.peak_repeats, seed)
    results, skipped = run_ladder(cfg, torch, peak["gflops"], seed=seed)
    sweep = run_sweep(cfg, torch, peak["gflops"], seed)
    if torch_skip:
        skipped["pytorch"] = torch_skip
    report = {
        "benchmark": "vecnn vectorization ladder",
        "config": cfg.name,
        "settings": dataclasses.asdict(cfg),
        "threads": threads,
        "machine": machine(),
        "numpy_blas": numpy_blas(),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()} if torch else None,
        "peak": peak,
        "ladder": results,
        "sweep": sweep,
        "skipped": skipped,
    }
    report["headline"] = headline(report)
    report["total_seconds"] = time.perf_counter() - t0
    report["load_average"] = {"start": load_start, "end": _load()}
    report["other_processes_cpu_share"] = _others_share(cpu_start, _cpu_sample())
    return report


def _load():
    """1-minute load average (None where the OS has none): other processes skew every timing."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_sample():
    """``(wall, busy CPU seconds of the whole machine, CPU seconds of this process)``, or None
    where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _others_share(start, end):
    """Share of the machine's CPU time that other processes used between two samples."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, others / ((end[0] - start[0]) * (os.cpu_count() or 1)))


def numpy_blas() -> dict | None:
    """The BLAS library NumPy itself calls (threadpoolctl may list others, loaded by other packages)."""
    from threadpoolctl import threadpool_info

    home = os.path.dirname(os.path.dirname(np.__file__))
    for info in threadpool_info():
        path = info.get("filepath") or ""
        if info.get("user_api") == "blas" and os.path.basename(os.path.dirname(path)) in ("numpy.libs", "numpy"):
            return {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
    for info in threadpool_info():  # a system BLAS: the first one listed under NumPy's prefix
        if info.get("user_api") == "blas" and str(info.get("filepath", "")).startswith(home):
            return {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
    return None


def headline(report) -> dict:
    """Dense forward+backward: whole-batch speedup over the per-sample and the scalar loops."""
    dense = next((i for i in report["ladder"] if i["op"] == "dense"), None)
    vec = next((r for r in dense["rungs"] if r["rung"] == "vecnn"), None) if dense else None
    if dense is None or vec is None:
        return {}
    return {
        "op": dense["title"],
        "whole_batch_vs_per_sample": vec["speedup_vs_per_sample"],
        "whole_batch_vs_scalar": vec["speedup_vs_scalar"],
        "whole_batch_gflops": vec["gflops"],
        "whole_batch_peak_share": vec["peak_share"],
    }
