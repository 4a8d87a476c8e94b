"""The one place where vecnn decides which array module and dtype it computes with.

Every layer asks ``array_module(x)`` for the module that owns its input (NumPy on the CPU,
CuPy on an NVIDIA GPU), so the same vectorized code runs on both. Nothing here imports CuPy
unless an array already comes from it.
"""

from __future__ import annotations

import numpy as np

#: vecnn's default floating dtype: parameters, activations, gradients and optimizer state.
DTYPE = np.float32


def array_module(*arrays):
    """Return the array module (``numpy`` or ``cupy``) that owns ``arrays``.

    Like Chainer's ``get_array_module``: CuPy is only consulted when it is already imported,
    so a CPU-only install never pays for (or needs) it.
    """
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return np


def to_numpy(x):
    """Return ``x`` as a NumPy array (copying from the GPU when it lives there)."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    return get() if callable(get) else np.asarray(x)


def set_num_threads(n: int | None):
    """Limit the BLAS / OpenMP thread pools of this process to ``n`` threads.

    ``None`` lifts the limit set by an earlier call. Returns the ``threadpoolctl`` controller
    so callers may inspect it. (Thread pools are process-wide by nature; this is the one
    place vecnn touches them, and only when asked.)
    """
    from threadpoolctl import ThreadpoolController

    global _limiter
    if _limiter is not None:
        _limiter.unregister()
        _limiter = None
    if n is None:
        return None
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, received {n!r}")
    _limiter = ThreadpoolController().limit(limits=int(n))
    return _limiter


def blas_info() -> list[dict]:
    """The BLAS / OpenMP libraries NumPy uses, with their thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return threadpool_info()


_limiter = None
