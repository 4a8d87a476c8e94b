"""Compiled kernels (numba) for the convolution and pooling layers: one pass over memory each.

Max pooling and col2im are memory-bound: their NumPy versions (in ``pooling.py`` and
``conv.py``, the readable reference and the fallback) make one whole-array pass per kernel
offset and per stage, each reading and writing many megabytes for a few comparisons or adds.
The loops below visit each input and output element once. They work on channels-last views
``(N, H, W, C)`` (a Conv2D's output is channels-last in memory, so the channel loop is the
contiguous one) and accept any strides.

``vecnn.kernels.enabled = False`` (the tests run both) or an install without numba selects
the NumPy paths. The kernels are serial, like the optimizer kernels: a second thread pool
beside OpenBLAS's spinning workers costs more than it gains on a 2-core machine.
"""
from __future__ import annotations

from .. import kernels as _kernels


def _compile():
    from numba import njit

    opts = dict(cache=True, nogil=True, error_model="numpy")

    @njit(**opts)
    def maxpool_forward(x, kh, kw, sh, sw, ph, pw, y, arg, relu):
        # x (N, H, W, C) -> y (N, Ho, Wo, C) and arg: the window offset p*kw + q of the first
        # maximum (row-major; NaN wins, as in PyTorch). Positions in the padding are skipped.
        # ``relu``: pool max(x, 0) instead, exactly as a ReLU (NaN -> 0) and then this pool: each
        # window starts at 0 with arg 255 ("no positive value": no gradient flows back) and only
        # a strictly greater value takes over, so the first positive maximum wins.
        N, H, W, C = x.shape
        _, Ho, Wo, _ = y.shape
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            # the common 2x2 / 2 pool: four loads and selects per output, vectorized over C
            zero = x.dtype.type(0)                   # typed: a bare 0 would widen m to float64
            for n in range(N):
                for i in range(Ho):
                    for j in range(Wo):
                        r, s = 2 * i, 2 * j
                        for c in range(C):
                            m, a = (zero, 255) if relu else (x[n, r, s, c], 0)
                            v = x[n, r, s, c]
                            t = v > m                # relu only: offset 0 against the start value
                            m, a = (v, 0) if t else (m, a)
                            v = x[n, r, s + 1, c]
                            t = v > m or (v != v and not relu)
                            m, a = (v, 1) if t else (m, a)
                            v = x[n, r + 1, s, c]
                            t = v > m or (v != v and not relu)
                            m, a = (v, 2) if t else (m, a)
                            v = x[n, r + 1, s + 1, c]
                            t = v > m or (v != v and not relu)
                            m, a = (v, 3) if t else (m, a)
                            y[n, i, j, c] = m
                            arg[n, i, j, c] = a
            return
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    first = not relu
                    if relu:
                        for c in range(C):
                            y[n, i, j, c] = 0
                            arg[n, i, j, c] = 255
                    for p in range(kh):
                        r = i * sh + p - ph
                        if r < 0 or r >= H:
                            continue
                        for q in range(kw):
                            s = j * sw + q - pw
                            if s < 0 or s >= W:
                                continue
                            k = p * kw + q
                            if first:
                                for c in range(C):
                                    y[n, i, j, c] = x[n, r, s, c]
                                    arg[n, i, j, c] = k
                                first = False
                            else:
                                for c in range(C):
                                    v = x[n, r, s, c]
                                    if v > y[n, i, j, c] or (v != v and not relu):
                                        y[n, i, j, c] = v
                                        arg[n, i, j, c] = k

    @njit(**opts)
    def maxpool_backward(dy, arg, kh, kw, sh, sw, ph, pw, dx, tiled):
        # dx (N, H, W, C): each dy goes to its window's winning position. ``tiled`` (stride ==
        # kernel, no padding) writes every covered element exactly once, zeros included, so dx
        # needs no clearing but for the rows / columns past the last window; otherwise dx must
        # arrive zeroed and overlapping windows add up.
        N, Ho, Wo, C = dy.shape
        zero = dy.dtype.type(0)
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    if tiled:
                        for p in range(kh):
                            for q in range(kw):
                                k = p * kw + q
                                r = i * sh + p
                                s = j * sw + q
                                for c in range(C):
                                    dx[n, r, s, c] = dy[n, i, j, c] if arg[n, i, j, c] == k else zero
                    else:
                        for c in range(C):
                            k = arg[n, i, j, c]
                            if k == 255:                 # a pooled ReLU's zero-slope window
                                continue
                            r = i * sh + k // kw - ph
                            s = j * sw + k % kw - pw
                            dx[n, r, s, c] += dy[n, i, j, c]

    @njit(**opts)
    def col2im(dcols, kh, kw, sh, sw, ph, pw, dh, dw, dx):
        # dcols (N*Ho*Wo, kh*kw*C), columns in (p, q, c) order -> dx (N, H, W, C), zeroed on
        # entry: dx[n, i*sh + p*dh - ph, j*sw + q*dw - pw, c] += dcols[(n, i, j), (p, q, c)],
        # dropping what falls in the padding.
        N, H, W, C = dx.shape
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    row = (n * Ho + i) * Wo + j
                    for p in range(kh):
                        r = i * sh + p * dh - ph
                        if r < 0 or r >= H:
                            continue
                        for q in range(kw):
                            s = j * sw + q * dw - pw
                            if s < 0 or s >= W:
                                continue
                            base = (p * kw + q) * C
                            for c in range(C):
                                dx[n, r, s, c] += dcols[row, base + c]

    @njit(**opts)
    def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
        # x (N, H, W, C) -> cols (N*Ho*Wo, >= kh*kw*C), columns in (p, q, c) order, zeros for
        # the padding (so no padded copy of x is made). Extra columns (the bias lane) are kept.
        N, H, W, C = x.shape
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    row = (n * Ho + i) * Wo + j
                    for p in range(kh):
                        r = i * sh + p * dh - ph
                        for q in range(kw):
                            s = j * sw + q * dw - pw
                            base = (p * kw + q) * C
                            if r < 0 or r >= H or s < 0 or s >= W:
                                for c in range(C):
                                    cols[row, base + c] = 0
                            else:
                                for c in range(C):
                                    cols[row, base + c] = x[n, r, s, c]

    class Kernels:
        pass

    k = Kernels()
    k.maxpool_forward, k.maxpool_backward, k.col2im, k.im2col = maxpool_forward, maxpool_backward, col2im, im2col
    return k


_lazy = _kernels.Lazy(_compile)
get = _lazy.get            # the compiled kernels, or None
compiled = _lazy.compiled  # what a forward pass used, for its backward
