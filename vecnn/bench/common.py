"""Shared measuring tools: timers, resident-set size, machine description, Fashion-MNIST loading."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int:
    return _status_field("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark so the next peak measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_field(name: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def median(xs):
    return statistics.median(xs)


def machine() -> dict:
    """CPU, core count, NumPy version and BLAS (threadpoolctl) for every report."""
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
    }


def load_fashion(limit: int | None = None, synthetic: bool = False, seed: int = 0):
    """Fashion-MNIST as flat float32 ``(n, 784)`` rows, or random data of that shape when it is
    not installed (``synthetic``; accuracy figures are then meaningless and say so)."""
    if not synthetic:
        try:
            from vecnn import data

            Xtr, ytr, Xte, yte = data.load("fashion-mnist")
            src = "fashion-mnist"
        except (ValueError, OSError):
            synthetic = True
    if synthetic:
        rng = np.random.default_rng(seed)
        Xtr = rng.random((60000, 1, 28, 28), dtype=np.float32)
        ytr = rng.integers(0, 10, 60000)
        Xte = rng.random((10000, 1, 28, 28), dtype=np.float32)
        yte = rng.integers(0, 10, 10000)
        src = "synthetic (Fashion-MNIST not found)"
    if limit:
        Xtr, ytr = Xtr[:limit], ytr[:limit]
    return Xtr, ytr, Xte, yte, src


def publish(report: dict, text: str, json_path=None) -> None:
    """Print a benchmark's report text; also save the report as JSON when asked (``--json``)."""
    print(text)
    if json_path:
        import json

        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
