"""Memory-bound kernels split across the BLAS's own threads: a private detail of the compiled
CPU backend (``vecnn.ops.numba_backend``), used only where its start-up probe verified it.

BLAS runs the matrix products of a step on every core; what runs between them (the optimizer
pass over all parameters, the batch gather) ran on one core while the others waited. A second
thread pool beside BLAS's does not help here: handing work to a sleeping thread costs tens of
microseconds (more in a virtual machine), and two pools of spinning threads fight over the
cores. So vecnn hands that work to OpenBLAS's own worker threads, which are already awake
and spinning between products: OpenBLAS's ``blas_level1_thread`` (the routine that splits its
own vector operations, exported by its shared library) splits a range into one share per
thread and calls a function on each share; here that function is a compiled vecnn kernel (a
numba ``cfunc``) working on its share of the elements or rows.

Results do not depend on the thread count: every element is computed by the same compiled
code whatever share it falls in (the kernels avoid fused multiply-adds, whose rounding would
depend on where a share starts; tests compare 1 and 2 threads bit for bit). The pool is used
only where it was verified at start-up: NumPy's BLAS is an OpenBLAS (0.3.20 or later) with
pthreads whose ``blas_level1_thread`` is found and splits a probe range as expected; otherwise
``get()`` returns None and the kernels run on one thread. It never asks for more threads than
OpenBLAS has at the moment of the call (``threadpoolctl`` limits are respected).
``vecnn.kernels.enabled = False`` (or the NumPy backend) turns it off with the other kernels.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .. import kernels

#: fewer elements than this run on one thread (the split costs a few microseconds)
MIN_ELEMENTS = 1 << 15


def _version(text) -> tuple:
    parts = []
    for piece in str(text or "").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _find_functions():
    """Addresses of ``blas_level1_thread`` and ``openblas_get_num_threads`` in the pthreads
    OpenBLAS NumPy uses, or None."""
    from threadpoolctl import ThreadpoolController

    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    numpy_blas = [lib for lib in libs if "numpy" in lib.filepath] or libs[:1]
    for lib in numpy_blas:
        if lib.internal_api != "openblas" or getattr(lib, "threading_layer", "pthreads") != "pthreads":
            return None
        if _version(lib.version) < (0, 3, 20):  # older releases numbered the mode flags otherwise
            return None
        dll = ctypes.CDLL(lib.filepath)
        level1 = getattr(dll, "blas_level1_thread", None)
        threads = next(
            (
                fn
                for fn in (
                    getattr(dll, name, None)
                    for name in (
                        "scipy_openblas_get_num_threads64_",
                        "openblas_get_num_threads64_",
                        "scipy_openblas_get_num_threads",
                        "openblas_get_num_threads",
                    )
                )
                if fn is not None
            ),
            None,
        )
        if level1 is not None and threads is not None:
            return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (level1, threads))
    return None


def _verified(c, fns) -> bool:
    """Whether the BLAS splits a probe range into contiguous shares that cover it exactly,
    for 1 up to its current thread count (never more: it has no threads beyond those), so its
    calling convention and strides are what the kernels assume."""
    for threads in range(1, min(int(c.current_threads(fns)), 4) + 1):
        for m in (1, 7, 1000):
            table = np.zeros(m, np.float32)
            if c.run_probe(fns, table, threads) != 0:
                return False
            shares, start = 0, 0
            while start < m and table[start] > 0:
                start, shares = start + int(table[start]), shares + 1
            if start != m or shares != min(threads, m):
                return False
    return True


def _build():
    blas = _find_functions()
    if blas is None:
        raise RuntimeError("no OpenBLAS blas_level1_thread here")
    from . import _numba as c

    if c.SHARES is None:
        raise RuntimeError("this numba cannot compile the pool's share kernels")

    fns = np.array([*blas, *c.SHARES], np.int64)  # addresses: arguments, never compiled in
    if not _verified(c, fns):
        raise RuntimeError("OpenBLAS's blas_level1_thread does not split as expected")
    return Pool(c, fns)


class Pool:
    """The compiled kernels that run split across OpenBLAS's threads (see the module docs)."""

    def __init__(self, compiled, fns):
        self._c, self._fns = compiled, fns

    @property
    def threads(self) -> int:
        return int(self._c.current_threads(self._fns))

    def optimizer(self, name, p, g, s1, s2, old, *scalars) -> float:
        """One fused optimizer pass (``name``: "adam", "sgd", "rmsprop"; ``vecnn.kernels``)
        split by element ranges (below ``MIN_ELEMENTS``, one range on this thread); returns its
        finiteness check (0 when all finite)."""
        f = [float(x) for x in scalars] + [0.0] * (9 - len(scalars))
        return float(self._c.run_optimizer(self._fns, MIN_ELEMENTS, _KINDS[name], p, g, s1, s2, old, *f))

    def gather(self, X, idx, out):
        """``out[:] = X[idx]`` split by rows, for C-contiguous float32 ``X`` (n, d) and
        ``out`` (len(idx), d) and ``idx`` of valid row numbers (not checked: the caller's)."""
        idx = np.ascontiguousarray(idx, np.int64)
        if not (
            X.dtype == out.dtype == np.float32
            and X.ndim == 2
            and X.flags.c_contiguous
            and out.flags.c_contiguous
            and out.shape == (len(idx), X.shape[1])
        ):
            raise ValueError(
                f"pool.gather: expected C-contiguous float32 X (n, d) and out (len(idx), d), "
                f"received X {X.dtype} {X.shape} and out {out.dtype} {out.shape}"
            )
        return self._c.run_gather(self._fns, X, idx, out)

    def finite_check(self, x) -> float:
        """0 when every value of the 1-D float32 ``x`` is finite, split by element ranges."""
        return float(self._c.run_finite_check(self._fns, x))


_KINDS = {"adam": 0, "sgd": 1, "rmsprop": 2}
_pool = kernels.Lazy(_build)


def get():
    """The pool, or None where it cannot run (no numba, kernels disabled, another BLAS)."""
    return _pool.get()


def why_not() -> str | None:
    """Why ``get()`` returned None (the probe or the lookup that failed), or None."""
    if not kernels.enabled:
        return "turned off with the other kernels (vecnn.kernels.enabled = False)"
    return _pool.error
