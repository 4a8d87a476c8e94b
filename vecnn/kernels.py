"""Fused elementwise kernels, compiled with numba when it is installed.

An optimizer step written as NumPy whole-buffer operations makes one pass over memory per
operation (Adam: about eight); the kernels here make one pass in total, split over the
cores. The NumPy versions in ``vecnn.optim`` stay the reference and the fallback: set
``vecnn.kernels.enabled = False`` (tests do) or uninstall numba to use them.
"""
from __future__ import annotations

import math

enabled = True
_compiled = None
_failed = False


def get():
    """The compiled kernels module-namespace, or None (numba missing, disabled, or failed)."""
    global _compiled, _failed
    if not enabled or _failed:
        return None
    if _compiled is None:
        try:
            _compiled = _compile()
        except Exception:            # no numba, or it cannot compile here: NumPy paths remain
            _failed = True
            return None
    return _compiled


def _compile():
    import numba
    from numba import njit, prange

    opts = dict(parallel=True, cache=True, nogil=True, error_model="numpy")

    @njit(**opts)
    def adam(p, g, m, v, b1, b2, eps, step_size, inv_sqrt_bc2, l2, decay):
        # m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p = p*decay - step m / (sqrt(v)/sqrt(bc2) + eps)
        for i in prange(p.shape[0]):
            gi = g[i] + l2 * p[i]
            mi = b1 * m[i] + (1 - b1) * gi
            vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)

    @njit(**opts)
    def sgd_momentum(p, g, buf, lr, mu, l2, nesterov, first):
        for i in prange(p.shape[0]):
            gi = g[i] + l2 * p[i]
            b = gi if first else mu * buf[i] + gi
            buf[i] = b
            p[i] -= lr * (gi + mu * b if nesterov else b)

    @njit(**opts)
    def rmsprop(p, g, s, lr, alpha, eps, l2):
        for i in prange(p.shape[0]):
            gi = g[i] + l2 * p[i]
            si = alpha * s[i] + (1 - alpha) * gi * gi
            s[i] = si
            p[i] -= lr * gi / (math.sqrt(si) + eps)

    class K:
        pass

    k = K()
    k.adam, k.sgd_momentum, k.rmsprop, k.numba = adam, sgd_momentum, rmsprop, numba
    return k


def set_num_threads(n: int | None):
    """Match numba's thread count to the BLAS limit (when numba is loaded)."""
    k = get() if n is not None else _compiled
    if k is None:
        return
    import os

    k.numba.set_num_threads(min(n or os.cpu_count() or 1, k.numba.config.NUMBA_NUM_THREADS))
