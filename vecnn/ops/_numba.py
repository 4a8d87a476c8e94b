"""vecnn's compiled kernels (numba), behind the compiled CPU backend (``vecnn.ops.numba_backend``),
which loads this module on first use.

Everything compiled lives in this one module, at module level, so that numba's on-disk cache
finds it again in the next process and is invalidated when this file changes (numba compares
only the file of the function it loads: a kernel here inlined into a kernel in another file
would stay stale in that file's cache). Addresses (OpenBLAS's functions, the share kernels of
``vecnn.ops._openblas``) are always arguments, never constants compiled into cached code.
"""

from typing import Any

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Each kernel runs on the thread that calls it: vecnn.ops._openblas hands the big ones to OpenBLAS's own
# threads in shares (a second thread pool beside OpenBLAS's spinning workers costs more than
# it gains). 'reassoc' lets LLVM vectorize the finiteness sum.
# No "contract": fused multiply-adds would round differently where LLVM forms them (the
# vectorized body, the scalar tail, a kernel inlined elsewhere), so a result would depend on
# where a range starts, e.g. on how many threads split it (vecnn.ops._openblas).
opts: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
zero = np.float32(0)
# Momentum-like state decays geometrically where a weight gets no gradient (the weights of
# always-zero pixels, dead units) and sinks into the subnormal range within a few hundred
# steps, where x86 arithmetic is ~100x slower. The kernels flush such state to zero; the
# values it drops are below 1.2e-38.
tiny = np.float32(1.1754944e-38)


@njit(**opts)
def adam(p, g, m, v, old, b1, c1, b2, c2, eps, step_size, inv_sqrt_bc2, l2, decay):
    # g += l2 p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    # p = p decay - step m / (sqrt(v)/sqrt(bc2) + eps)
    chk = zero
    for i in range(p.shape[0]):
        pi = p[i]
        old[i] = pi
        gi = g[i] + l2 * pi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        mi = zero if abs(mi) < tiny else mi  # NaN stays NaN (the check sees it)
        vi = zero if vi < tiny else vi
        m[i] = mi
        v[i] = vi
        pn = pi * decay - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps)
        p[i] = pn
        chk += pn * zero
    return chk


@njit(**opts)
def sgd(p, g, buf, old, lr, mu, l2, nesterov, first):
    chk = zero
    for i in range(p.shape[0]):
        pi = p[i]
        old[i] = pi
        gi = g[i] + l2 * pi
        if mu != zero:
            b = gi if first else mu * buf[i] + gi
            b = zero if abs(b) < tiny else b
            buf[i] = b
            gi = gi + mu * b if nesterov else b
        pn = pi - lr * gi
        p[i] = pn
        chk += pn * zero
    return chk


@njit(**opts)
def rmsprop(p, g, s, old, lr, alpha, c, eps, l2):
    chk = zero
    for i in range(p.shape[0]):
        pi = p[i]
        old[i] = pi
        gi = g[i] + l2 * pi
        si = alpha * s[i] + c * gi * gi
        si = zero if si < tiny else si
        s[i] = si
        pn = pi - lr * gi / (np.sqrt(si) + eps)
        p[i] = pn
        chk += pn * zero
    return chk


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_cross_entropy(z, y, eps, grad):
    # one pass per row: log-sum-exp, the smoothed negative log-likelihood, the argmax
    # (for accuracy) and the gradient (softmax - target) / n, written into grad
    n, C = z.shape
    total = 0.0
    correct = 0
    inv_n = np.float32(1.0 / n)
    off = np.float32(eps / C)
    keep = np.float32(1.0 - eps)
    for i in range(n):
        mx = z[i, 0]
        am = 0
        for c in range(1, C):
            if z[i, c] > mx:
                mx = z[i, c]
                am = c
        s = np.float32(0)
        shift_sum = np.float32(0)
        for c in range(C):
            e = np.exp(z[i, c] - mx)
            grad[i, c] = e
            s += e
            shift_sum += z[i, c] - mx
        lse = np.log(s)
        yi = y[i]
        nll = lse - (z[i, yi] - mx)
        if eps != 0:
            nll = keep * nll + np.float32(eps) * (lse - shift_sum / C)
        total += nll
        correct += am == yi
        inv_s = np.float32(1) / s
        for c in range(C):
            grad[i, c] = (grad[i, c] * inv_s - off) * inv_n
        grad[i, yi] -= keep * inv_n
    return total / n, correct


@njit(**opts)
def relu_forward(x, y):
    # y = max(x, 0) in one pass; backward reads the mask back from y (y > 0 iff x > 0)
    for i in range(x.shape[0]):
        xi = x[i]
        y[i] = xi if xi > zero else zero


@njit(**opts)
def relu_backward(y, g, dx):
    for i in range(y.shape[0]):
        dx[i] = g[i] if y[i] > zero else zero


@njit(**opts)
def bias_relu(z, b):
    # z = max(z + b, 0) in place, z (n, out) in C order: a Dense layer's bias and the ReLU
    # after it in one pass over the product
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            t = z[i, j] + b[j]
            z[i, j] = t if t > zero else zero


@njit(**opts)
def column_sums(g, out):
    # out = g.sum(axis=0), row by row like NumPy, without its reduction machinery
    for j in range(out.shape[0]):
        out[j] = zero
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]


@njit(**opts)
def relu_backward_bias(y, g, dz, db):
    # dz = g * (y > 0) and db = its column sums, one pass (row by row, the order of
    # NumPy's sum over axis 0)
    for j in range(db.shape[0]):
        db[j] = zero
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            t = g[i, j] if y[i, j] > zero else zero
            dz[i, j] = t
            db[j] += t


@njit(**opts)
def finite_check(x):
    # sum(x * 0): 0 exactly when every value is finite (inf * 0 and nan * 0 are NaN)
    acc = zero
    for i in range(x.shape[0]):
        acc += x[i] * zero
    return acc


@njit(**opts)
def bn_stats(x, mean, var):
    # per column of x (M, C): mean and biased variance, accumulated in float64 (one pass)
    M, C = x.shape
    s = np.zeros(C, np.float64)
    ss = np.zeros(C, np.float64)
    for i in range(M):
        for c in range(C):
            v = np.float64(x[i, c])
            s[c] += v
            ss[c] += v * v
    for c in range(C):
        mu = s[c] / M
        mean[c] = mu
        var[c] = max(ss[c] / M - mu * mu, 0.0)


@njit(**opts)
def bn_normalize(x, mean, inv_std, gamma, beta, xhat, y):
    # xhat = (x - mean) inv_std;  y = xhat gamma + beta, per column of x (M, C)
    M, C = x.shape
    for i in range(M):
        for c in range(C):
            h = (x[i, c] - mean[c]) * inv_std[c]
            xhat[i, c] = h
            y[i, c] = h * gamma[c] + beta[c]


@njit(**opts)
def bn_grad_sums(g, xhat, dgamma, dbeta):
    # dgamma = sum(g xhat), dbeta = sum(g) per column, accumulated in float64
    M, C = g.shape
    sg = np.zeros(C, np.float64)
    sgx = np.zeros(C, np.float64)
    for i in range(M):
        for c in range(C):
            gi = np.float64(g[i, c])
            sg[c] += gi
            sgx[c] += gi * xhat[i, c]
    for c in range(C):
        dbeta[c] = sg[c]
        dgamma[c] = sgx[c]


@njit(**opts)
def bn_input_grad(g, xhat, a, b, d, dx):
    # dx = a (g - (b + xhat d)) per column: a = gamma inv_std, b = dbeta / m, d = dgamma / m
    M, C = g.shape
    for i in range(M):
        for c in range(C):
            dx[i, c] = a[c] * (g[i, c] - (b[c] + xhat[i, c] * d[c]))


# -- convolution and pooling, on channels-last views (N, H, W, C), any strides: one pass over
# memory each, where the NumPy versions make one whole-array pass per kernel offset
conv_opts: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy")


@njit(**conv_opts)
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
        zero = x.dtype.type(0)  # typed: a bare 0 would widen m to float64
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    r, s = 2 * i, 2 * j
                    for c in range(C):
                        m, a = (zero, 255) if relu else (x[n, r, s, c], 0)
                        v = x[n, r, s, c]
                        t = v > m  # relu only: offset 0 against the start value
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


@njit(**conv_opts)
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
                        if k == 255:  # a pooled ReLU's zero-slope window
                            continue
                        r = i * sh + k // kw - ph
                        s = j * sw + k % kw - pw
                        dx[n, r, s, c] += dy[n, i, j, c]


@njit(**conv_opts)
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


@njit(**conv_opts)
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


# -- shares of a range, run on OpenBLAS's threads (vecnn.ops._openblas) ---------------------------
_BLAS_SINGLE = 2  # OpenBLAS's mode flag for single precision (strides in 4-byte units)
# what vecnn.ops._openblas passes as fns: OpenBLAS's two functions, then the share kernels of SHARES
_L1, _THREADS, _OPTIMIZER, _GATHER, _PROBE, _FINITE = range(6)

i32, i64 = ir.IntType(32), ir.IntType(64)
vp = ir.IntType(8).as_pointer()


@intrinsic
def f32ptr(typingctx, addr):
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())

    return types.CPointer(types.float32)(types.int64), codegen


@intrinsic
def blas_threads(typingctx, address):
    # openblas_get_num_threads(), through its address
    def codegen(context, builder, sig, args):
        fn = builder.inttoptr(args[0], ir.FunctionType(i32, []).as_pointer())
        return builder.sext(builder.call(fn, []), i64)

    return types.int64(types.int64), codegen


@intrinsic
def level1(typingctx, address, m, a, lda, b, ldb, c, function, nthreads):
    # blas_level1_thread(BLAS_SINGLE, m, 0, 0, &one, a, lda, b, ldb, c, 0, function, nthreads):
    # share i of range(m) gets a + lo*lda*4, b + lo*ldb*4 (bytes), c unchanged
    def codegen(context, builder, sig, args):
        l1, m_, a_, lda_, b_, ldb_, c_, f_, n_ = args
        fnty = ir.FunctionType(i32, [i32, i64, i64, i64, vp, vp, i64, vp, i64, vp, i64, vp, i32])
        fn = builder.inttoptr(l1, fnty.as_pointer())
        one = cgutils.alloca_once_value(builder, ir.Constant(ir.FloatType(), 1.0))
        ptr = lambda x: builder.inttoptr(x, vp)
        zero = ir.Constant(i64, 0)
        builder.call(
            fn,
            [
                ir.Constant(i32, _BLAS_SINGLE),
                m_,
                zero,
                zero,
                builder.bitcast(one, vp),
                ptr(a_),
                lda_,
                ptr(b_),
                ldb_,
                ptr(c_),
                zero,
                ptr(f_),
                builder.trunc(n_, i32),
            ],
        )
        return context.get_dummy_value()

    return types.void(*(types.int64,) * 9), codegen


share_sig = types.int32(
    types.int64,
    types.int64,
    types.int64,
    types.float32,
    types.int64,
    types.int64,
    types.int64,
    types.int64,
    types.CPointer(types.int64),
    types.int64,
    types.voidptr,
)

# Each cfunc below is one share: (width, _, _, _, a, lda, b, ldb, ctx, _, _) with a and b
# advanced to the share's start; ctx holds the base addresses and the scalars.


def _optimizer_share(w, n_, k_, alpha, a, lda, b, ldb, c, ldc, sb):
    # ctx: kind, p, g, s1, s2, old, scalars (float32 x 9), result (float32)
    ctx = carray(c, (7,))
    lo = (a - ctx[1]) // 4
    p = carray(f32ptr(a), (w,))
    g = carray(f32ptr(ctx[2] + 4 * lo), (w,))
    s1 = carray(f32ptr(ctx[3] + 4 * lo), (w,))
    s2 = carray(f32ptr(ctx[4] + 4 * lo), (w,))
    old = carray(f32ptr(ctx[5] + 4 * lo), (w,))
    f = carray(f32ptr(ctx[6]), (10,))
    kind = ctx[0]
    if kind == 0:
        chk = adam(p, g, s1, s2, old, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8])
    elif kind == 1:
        chk = sgd(p, g, s1, old, f[0], f[1], f[2], f[3] != 0, f[4] != 0)
    else:
        chk = rmsprop(p, g, s1, old, f[0], f[1], f[2], f[3], f[4])
    if chk != 0:  # any share's NaN makes the result NaN (a benign race:
        f[9] = chk  # every writer writes a non-finite value)
    return 0


@intrinsic
def copy_bytes(typingctx, dst, src, nbytes):
    # memcpy(dst, src, nbytes) on addresses: the C library's copy, as NumPy's row gather uses
    def codegen(context, builder, sig, args):
        d, s, n = args
        cgutils.raw_memcpy(builder, builder.inttoptr(d, vp), builder.inttoptr(s, vp), n, 1)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


def _gather_share(w, n_, k_, alpha, a, lda, b, ldb, c, ldc, sb):
    # rows: a = idx (int64, lda 2 = 8 bytes), b = out rows (ldb = row length); ctx: X, width
    ctx = carray(c, (2,))
    row = 4 * ctx[1]
    idx = carray(f32ptr(a), (2 * w,)).view(np.int64)
    for r in range(w):
        copy_bytes(b + r * row, ctx[0] + idx[r] * row, row)
    return 0


def _finite_share(w, n_, k_, alpha, a, lda, b, ldb, c, ldc, sb):
    # ctx: result (float32 slot): NaN when the share holds a non-finite value
    x = carray(f32ptr(a), (w,))
    if finite_check(x) != 0:
        carray(f32ptr(carray(c, (1,))[0]), (1,))[0] = np.float32(np.nan)
    return 0


def _probe_share(w, n_, k_, alpha, a, lda, b, ldb, c, ldc, sb):
    # records each share: table[start] = width, where a advanced 4 bytes per element (lda 1)
    # and b 8 (ldb 2) must agree on start; anything else (never written out of bounds) sets the
    # flag. ctx: table base, length, flag, b's base
    ctx = carray(c, (4,))
    start, start_b = (a - ctx[0]) // 4, (b - ctx[3]) // 8
    if 0 <= start < ctx[1] and start == start_b and (a - ctx[0]) % 4 == 0:
        carray(f32ptr(ctx[0]), (ctx[1],))[start] = w
    else:
        ctx[2] = 1
    return 0


run_opts: dict[str, Any] = dict(cache=True, nogil=True)


@njit(**run_opts)
def run_optimizer(fns, min_split, kind, p, g, s1, s2, old, f0, f1, f2, f3, f4, f5, f6, f7, f8):
    # fewer than min_split elements: one share, on this thread (the same compiled code, so the
    # result never depends on the size or the thread count)
    f = np.empty(10, np.float32)
    f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8] = f0, f1, f2, f3, f4, f5, f6, f7, f8
    ctx = np.empty(7, np.int64)
    ctx[0], ctx[1], ctx[2], ctx[3] = kind, p.ctypes.data, g.ctypes.data, s1.ctypes.data
    ctx[4], ctx[5], ctx[6] = s2.ctypes.data, old.ctypes.data, f.ctypes.data
    f[9] = 0
    threads = blas_threads(fns[_THREADS]) if p.shape[0] >= min_split else 1
    level1(fns[_L1], p.shape[0], p.ctypes.data, 1, g.ctypes.data, 1, ctx.ctypes.data, fns[_OPTIMIZER], threads)
    return f[9]


@njit(**run_opts)
def run_gather(fns, X, idx, out):
    ctx = np.empty(2, np.int64)
    ctx[0], ctx[1] = X.ctypes.data, X.shape[1]
    level1(
        fns[_L1],
        idx.shape[0],
        idx.ctypes.data,
        2,
        out.ctypes.data,
        X.shape[1],
        ctx.ctypes.data,
        fns[_GATHER],
        blas_threads(fns[_THREADS]),
    )
    return out


@njit(**run_opts)
def run_finite_check(fns, x):
    # 0 when every value of the 1-D float32 x is finite
    result = np.zeros(1, np.float32)
    ctx = np.empty(1, np.int64)
    ctx[0] = result.ctypes.data
    level1(
        fns[_L1],
        x.shape[0],
        x.ctypes.data,
        1,
        x.ctypes.data,
        1,
        ctx.ctypes.data,
        fns[_FINITE],
        blas_threads(fns[_THREADS]),
    )
    return result[0]


@njit(**run_opts)
def run_probe(fns, table, threads):
    # 0 when the shares were as expected (see _probe_share); the table holds their widths
    ctx = np.zeros(4, np.int64)
    other = np.zeros(2 * table.shape[0], np.float32)
    ctx[0], ctx[1], ctx[3] = table.ctypes.data, table.shape[0], other.ctypes.data
    level1(fns[_L1], table.shape[0], table.ctypes.data, 1, other.ctypes.data, 2, ctx.ctypes.data, fns[_PROBE], threads)
    return ctx[2]


@njit(**run_opts)
def current_threads(fns):
    return blas_threads(fns[_THREADS])


#: addresses of the share kernels (optimizer, gather, probe, finiteness check), compiled here
#: at import; None if this numba cannot compile them (vecnn.ops._openblas is then off, every other
#: kernel stays on)
#: SHARES_ERROR says why (``vecnn backends`` prints it)
def _address(share) -> int:
    address = cfunc(share_sig, nogil=True, cache=True)(share).address
    if address is None:
        raise RuntimeError(f"numba compiled {share.__name__} without an address")
    return address


SHARES: tuple[int, ...] | None
SHARES_ERROR: str | None = None
try:
    SHARES = tuple(_address(f) for f in (_optimizer_share, _gather_share, _probe_share, _finite_share))
except Exception as e:  # reported, never silent: see vecnn.ops.report()
    SHARES = None
    SHARES_ERROR = f"{type(e).__name__}: {e}"
