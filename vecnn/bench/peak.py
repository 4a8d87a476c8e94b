"""This machine's float32 matrix-multiply peak: the yardstick every GFLOP/s figure is read against.

The peak is the best of ``repeats`` float32 ``n x n x n`` products through NumPy's BLAS
(``2 n^3`` FLOPs each), measured with the thread count in force when it runs.
"""

from __future__ import annotations

import time

import numpy as np


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of one ``(m, k) @ (k, n)`` product: one multiply and one add per term."""
    return 2 * m * n * k


def measure_peak(n: int = 4096, repeats: int = 5, seed: int = 0) -> dict:
    """Best of ``repeats`` float32 ``n x n x n`` products: ``{"gflops", "best_seconds", "seconds", ...}``."""
    if n < 1 or repeats < 1:
        raise ValueError(f"measure_peak: expected n >= 1 and repeats >= 1, received n={n}, repeats={repeats}")
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, n), dtype=np.float32)
    C = np.empty((n, n), np.float32)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(A, B, out=C)
        seconds.append(time.perf_counter() - t0)
    best = min(seconds)
    flops = matmul_flops(n, n, n)
    return {
        "n": n,
        "repeats": repeats,
        "flops": flops,
        "seconds": seconds,
        "best_seconds": best,
        "gflops": flops / best / 1e9,
    }
