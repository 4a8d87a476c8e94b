"""The GPU backend: CuPy arrays, the NumPy backend's whole-array code run with ``xp = cupy``,
and the fused passes as CUDA kernels.

Two kinds of overrides:

- CuPy's API differences from NumPy (``as_strided`` takes no ``writeable``, ``to_host`` is
  ``.get()``, there is no floating-point error state, ...). These run whatever ``xp`` is, so
  the generic path can be tested on a CPU with ``CuPyBackend(numpy, kernels=False)``.
- The fused passes, each one CUDA kernel (``ElementwiseKernel`` / ``ReductionKernel``), used
  where it applies (float32; the raw-indexed arrays made C-contiguous first) and otherwise the
  inherited code. Their definitions are module-level data (``ELEMENTWISE``, ``REDUCTIONS``):
  parameter lists and a loop body each, written in the subset of C that compiles both as CUDA
  and as C, so that a test can compile the same bodies with a C compiler and check them
  against the NumPy backend without a GPU. The backend builds a kernel through a *factory*
  (``name -> kernel``): ``cupy_kernel_factory(cupy)`` on a GPU, an emulator in the tests.

The kernels compute what the NumPy backend computes, in the same order and with the same
float32 roundings, so that they agree with it exactly: they are compiled with ``--fmad=false``
(no fused multiply-add contracting ``a * b + c`` into one rounding), CUDA's ``/`` and
``sqrtf`` round correctly by default, and sums run in the NumPy backend's order (``col2im``
by kernel offset, the max-pool gradient by column offset, then row offset), gathered per
output element: no atomics. Exceptions: the softmax cross-entropy (CUDA's ``expf`` / ``logf``
are not NumPy's, and its row sums run in order), equal to rounding; a NaN in a max pool,
which follows the compiled CPU backend (a NaN wins a window; under a fused ReLU it counts as
0), where NumPy's separable max differs; and subnormal values, which CuPy's compile flags
(``-ftz=true``, always added) flush to zero, as the compiled CPU backend does for optimizer
state.
"""

from __future__ import annotations

import contextlib

import numpy

from .numpy_backend import NumPyBackend, _MaxPoolSaved

_F32 = numpy.dtype(numpy.float32)

#: NVRTC options of the float kernels: no contraction into fused multiply-adds (the NumPy
#: backend rounds every product and sum; so must the kernels, for equal results)
OPTIONS = ("--fmad=false",)

# -- the kernels: (in_params, out_params, loop body), CuPy ElementwiseKernel conventions -------
# Non-raw parameters are the element ``i`` of their (broadcast) array, raw ones whole C-ordered
# arrays indexed by hand; ``i`` is the flat C-order index over the non-raw arrays' shape.
# Integer geometry arrives as int32 scalars; offsets are computed in ptrdiff_t.
ELEMENTWISE = {
    # z = max(z + b, 0) in place (NaN stays NaN, as numpy.maximum)
    "bias_relu": ("T b", "T z", "T t = z + b; z = (t > 0 || t != t) ? t : (T)0;"),
    # y = max(x, 0) (NaN stays NaN, as numpy.maximum)
    "relu": ("T x", "T y", "y = (x > 0 || x != x) ? x : (T)0;"),
    # dx = g * (y > 0)
    "relu_backward": ("T y, T g", "T dx", "dx = g * (T)(y > 0);"),
    # per row (one thread): lse = log sum exp(z - max); nll = lse - (z[y] - max), smoothed:
    # keep nll + eps (lse - mean(z - max)); grad = (softmax - keep [c == y] - off) inv_n;
    # hit = argmax == y. z, y, grad raw (n, C) / (n,), row i. A label outside [0, C) reads and
    # writes nothing outside the row: its loss is NaN (log of -1), its gradient the softmax
    "softmax_cross_entropy": (
        "raw T z, raw int64 y, int32 C, float32 eps, float32 keep, float32 off, float32 inv_n",
        "raw T grad, T nll, int32 hit",
        """
        ptrdiff_t o = i * C;
        T mx = z[o];
        int am = 0;
        for (int c = 1; c < C; c++) {
            if (z[o + c] > mx) { mx = z[o + c]; am = c; }
        }
        T se = 0, ss = 0;
        for (int c = 0; c < C; c++) {
            T sh = z[o + c] - mx;
            T e = expf(sh);
            grad[o + c] = e;
            se += e;
            ss += sh;
        }
        T lse = logf(se);
        long long label = y[i];
        int bad = label < 0 || label >= C;
        int yi = bad ? -1 : (int)label;
        T l = bad ? logf((T)-1) : lse - (z[o + yi] - mx);
        if (eps != 0) l = keep * l + eps * (lse - ss / C);
        nll = l;
        hit = am == yi;
        for (int c = 0; c < C; c++) {
            T gc = grad[o + c] / se;
            if (c == yi) gc -= keep;
            if (eps != 0) gc -= off;
            grad[o + c] = gc * inv_n;
        }
        """,
    ),
    # g' = g + l2 p;  m = b1 m + c1 g';  v = b2 v + c2 g'^2;
    # p = p decay - (m / (sqrt(v) inv_sqrt_bc2 + eps)) step_size;  old = p before
    "adam": (
        (
            "T g, float32 b1, float32 c1, float32 b2, float32 c2, float32 eps, float32 step_size, "
            "float32 inv_sqrt_bc2, float32 l2, float32 decay"
        ),
        "T p, T m, T v, T old",
        """
        T pi = p;
        old = pi;
        T gi = l2 != 0 ? g + l2 * pi : g;
        T mi = m * b1 + gi * c1;
        T vi = v * b2 + (gi * gi) * c2;
        m = mi;
        v = vi;
        T d = sqrtf(vi) * inv_sqrt_bc2 + eps;
        d = mi / d * step_size;
        p = (decay != 1 ? pi * decay : pi) - d;
        """,
    ),
    # g' = g + l2 p;  with momentum: buf = g' (first step) or mu buf + g', then
    # g' = g' + mu buf (nesterov) or buf;  p = p - g' lr;  old = p before (mu == 0: buf untouched)
    "sgd": (
        "T g, float32 lr, float32 mu, float32 l2, int32 nesterov, int32 first",
        "T p, T buf, T old",
        """
        T pi = p;
        old = pi;
        T gi = l2 != 0 ? g + l2 * pi : g;
        if (mu != 0) {
            T bi = first ? gi : buf * mu + gi;
            buf = bi;
            gi = nesterov ? bi * mu + gi : bi;
        }
        p = pi - gi * lr;
        """,
    ),
    # g' = g + l2 p;  sq = alpha sq + c g'^2;  p = p - (g' / (sqrt(sq) + eps)) lr;  old = p before
    "rmsprop": (
        "T g, float32 lr, float32 alpha, float32 c, float32 eps, float32 l2",
        "T p, T sq, T old",
        """
        T pi = p;
        old = pi;
        T gi = l2 != 0 ? g + l2 * pi : g;
        T si = sq * alpha + (gi * gi) * c;
        sq = si;
        p = pi - gi / (sqrtf(si) + eps) * lr;
        """,
    ),
    # cols[(n, oi, oj), (p, q, c)] = x[n, oi*sh + p*dh - ph, oj*sw + q*dw - pw, c], 0 in the
    # padding; one thread per element of cols[:, :K] (K = kh*kw*C), x raw (N, H, W, C)
    "im2col": (
        (
            "raw T x, int32 H, int32 W, int32 C, int32 kh, int32 kw, int32 sh, int32 sw, "
            "int32 ph, int32 pw, int32 dh, int32 dw, int32 Ho, int32 Wo, int32 K"
        ),
        "T cols",
        """
        ptrdiff_t row = i / K;
        int k = (int)(i - row * K);
        int c = k % C, q = (k / C) % kw, p = k / C / kw;
        int oj = (int)(row % Wo), oi = (int)(row / Wo % Ho);
        ptrdiff_t n = row / Wo / Ho;
        int r = oi * sh + p * dh - ph, s = oj * sw + q * dw - pw;
        cols = (r >= 0 && r < H && s >= 0 && s < W) ? x[((n * H + r) * W + s) * C + c] : (T)0;
        """,
    ),
    # dx[n, r, s, c] += sum over p, then q, of dcols[(n, oi, oj), (p, q, c)] for the outputs
    # (oi, oj) with oi*sh + p*dh - ph = r and oj*sw + q*dw - pw = s: im2col's adjoint, gathered
    # (one thread per dx element); dcols raw (rows, ld), its first K = kh*kw*C columns read
    "col2im": (
        (
            "raw T dcols, int32 H, int32 W, int32 C, int32 kh, int32 kw, int32 sh, int32 sw, "
            "int32 ph, int32 pw, int32 dh, int32 dw, int32 Ho, int32 Wo, int32 ld"
        ),
        "T dx",
        """
        int c = (int)(i % C), s = (int)(i / C % W), r = (int)(i / C / W % H);
        ptrdiff_t n = i / C / W / H;
        T acc = dx;
        for (int p = 0; p < kh; p++) {
            int a = r + ph - p * dh;
            if (a < 0 || a % sh != 0 || a / sh >= Ho) continue;
            for (int q = 0; q < kw; q++) {
                int b = s + pw - q * dw;
                if (b < 0 || b % sw != 0 || b / sw >= Wo) continue;
                acc += dcols[((n * Ho + a / sh) * Wo + b / sw) * ld + (p * kw + q) * C + c];
            }
        }
        dx = acc;
        """,
    ),
    # y[n, oi, oj, c] = max of x[n, oi*sh + p - ph, oj*sw + q - pw, c] over the window (padding
    # skipped), arg = p*kw + q of the first maximum (row-major; NaN wins); relu: max(x, 0)
    # instead, starting from 0 with arg 255 (no gradient) and NaN never winning
    "maxpool_forward": (
        (
            "raw T x, int32 H, int32 W, int32 C, int32 kh, int32 kw, int32 sh, int32 sw, "
            "int32 ph, int32 pw, int32 Ho, int32 Wo, int32 relu"
        ),
        "T y, uint8 arg",
        """
        int c = (int)(i % C), oj = (int)(i / C % Wo), oi = (int)(i / C / Wo % Ho);
        ptrdiff_t n = i / C / Wo / Ho;
        T m = 0;
        int best = 255, first = !relu;
        for (int p = 0; p < kh; p++) {
            int r = oi * sh + p - ph;
            if (r < 0 || r >= H) continue;
            for (int q = 0; q < kw; q++) {
                int s = oj * sw + q - pw;
                if (s < 0 || s >= W) continue;
                T u = x[((n * H + r) * W + s) * C + c];
                if (first || u > m || (u != u && !relu)) {
                    m = u;
                    best = p * kw + q;
                    first = 0;
                }
            }
        }
        y = m;
        arg = (unsigned char)best;
        """,
    ),
    # dx[n, r, s, c] = sum over q, then p, of dy[n, oi, oj, c] for the windows (oi, oj) whose
    # arg is (p, q) = (r + ph - oi*sh, s + pw - oj*sw): one thread per dx element, dy and arg
    # raw (N, Ho, Wo, C)
    "maxpool_backward": (
        (
            "raw T dy, raw uint8 arg, int32 H, int32 W, int32 C, int32 kh, int32 kw, "
            "int32 sh, int32 sw, int32 ph, int32 pw, int32 Ho, int32 Wo"
        ),
        "T dx",
        """
        int c = (int)(i % C), s = (int)(i / C % W), r = (int)(i / C / W % H);
        ptrdiff_t n = i / C / W / H;
        T acc = 0;
        for (int q = 0; q < kw; q++) {
            int b = s + pw - q;
            if (b < 0 || b % sw != 0 || b / sw >= Wo) continue;
            T part = 0;
            for (int p = 0; p < kh; p++) {
                int a = r + ph - p;
                if (a < 0 || a % sh != 0 || a / sh >= Ho) continue;
                ptrdiff_t o = ((n * Ho + a / sh) * Wo + b / sw) * C + c;
                if (arg[o] == p * kw + q) part += dy[o];
            }
            acc += part;
        }
        dx = acc;
        """,
    ),
}

#: (in_params, out_params, map_expr, reduce_expr, post_map_expr, identity), CuPy
#: ReductionKernel conventions (``a``, ``b``: the values being combined), over the whole array
REDUCTIONS = {
    # y = 1 if some x is not finite, else 0
    "all_finite": ("T x", "int32 y", "isfinite(x) ? 0 : 1", "a | b", "y = a", "0"),
}


def cupy_kernel_factory(cupy):
    """``name -> kernel``: the CuPy kernel of ``ELEMENTWISE[name]`` or ``REDUCTIONS[name]``
    (compiled by CuPy on its first call, and cached on disk)."""

    def make(name):
        if name in ELEMENTWISE:
            in_params, out_params, body = ELEMENTWISE[name]
            return cupy.ElementwiseKernel(in_params, out_params, body, "vecnn_" + name, options=OPTIONS)
        in_params, out_params, map_expr, reduce_expr, post_map, identity = REDUCTIONS[name]
        return cupy.ReductionKernel(
            in_params, out_params, map_expr, reduce_expr, post_map, identity, "vecnn_" + name, options=OPTIONS
        )

    return make


def _f32(*arrays) -> bool:
    return all(a.dtype == _F32 for a in arrays)


def _channels_last(x):
    return x.transpose(0, 2, 3, 1)


def _i32(*values):
    return [numpy.int32(v) for v in values]


class CuPyBackend(NumPyBackend):
    """CuPy arrays: the NumPy backend's code with ``xp = cupy``; fused passes as CUDA kernels.

    ``CuPyBackend(cupy)`` on a GPU. ``kernels``: True builds the CUDA kernels (lazily, each
    once per backend), False runs only the inherited code, a callable ``name -> kernel`` builds
    them through it (the tests' C emulator). With ``xp = numpy`` the generic code runs on the
    CPU, for testing."""

    name = "cupy"
    device = "gpu"
    summary = "CuPy arrays on an NVIDIA GPU: cuBLAS for the products, CUDA kernels for the fused passes"

    def __init__(self, xp, kernels=True):
        super().__init__(xp)
        if kernels is True:
            kernels = cupy_kernel_factory(xp)
        self._factory = kernels or None
        self._built = {}

    def _kernel(self, name):
        """The kernel ``name``, or None when kernels are off."""
        if self._factory is None:
            return None
        k = self._built.get(name)
        if k is None:
            k = self._built[name] = self._factory(name)
        return k

    # -- CuPy's API differences ----------------------------------------------------------------
    def asarray(self, a, dtype=None):
        """``a`` on the device (``cupy.asarray`` copies a host array there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a):
        """``a`` as a NumPy array: ``.get()`` of a device array (NumPy refuses to convert one)."""
        if isinstance(a, self.ndarray) and not isinstance(a, numpy.ndarray):
            return a.get()
        return numpy.asarray(a)

    def as_strided(self, a, shape, strides, writeable=False):
        """A strided view (CuPy's ``as_strided`` has no ``writeable``: views are never
        read-only there; the callers write only through the views they ask writeable)."""
        return self.xp.lib.stride_tricks.as_strided(a, shape, strides)

    def errstate(self):
        """CuPy has no floating-point error state (nothing warns): a null context; the array
        module's own where it has one (NumPy standing in for CuPy)."""
        errstate = getattr(self.xp, "errstate", None)
        if errstate is None:
            return contextlib.nullcontext()
        return errstate(over="ignore", invalid="ignore")

    def gather(self, X, idx, out):
        """``X[idx]`` with the indices on ``X``'s device (host data: gathered there, then copied)."""
        if not isinstance(X, self.ndarray):
            return self.asarray(numpy.asarray(X)[self.to_host(idx)])
        if not isinstance(idx, self.ndarray):
            idx = self.xp.asarray(idx)
        return X[idx]

    # -- losses ------------------------------------------------------------------------------
    def softmax_cross_entropy(self, z, y, eps, grad):
        """One thread per row (the logits read from memory twice, the gradient written once),
        then the mean loss and the number of hits: two numbers to the host."""
        xp = self.xp
        if not isinstance(y, self.ndarray):  # labels from the host
            y = xp.asarray(y)
        k = self._kernel("softmax_cross_entropy")
        if (
            k is None
            or not _f32(z, grad)
            or z.ndim != 2
            or grad.shape != z.shape
            or z.shape[0] == 0
            or not (z.flags.c_contiguous and grad.flags.c_contiguous)
            or y.shape != z.shape[:1]
            or y.dtype.kind not in "iu"
        ):
            return super().softmax_cross_entropy(z, y, eps, grad)
        n, C = z.shape
        nll, hit = xp.empty(n, z.dtype), xp.empty(n, numpy.int32)
        labels = xp.ascontiguousarray(y, dtype=numpy.int64)
        k(
            z,
            labels,
            numpy.int32(C),
            numpy.float32(eps),
            numpy.float32(1 - eps),
            numpy.float32(eps / C),
            numpy.float32(1 / n),
            grad,
            nll,
            hit,
        )
        return float(nll.mean()), int(hit.sum())

    # -- checks ----------------------------------------------------------------------------
    def all_finite(self, x) -> bool:
        """One reduction on the device, then one bool to the host."""
        if x.dtype.kind in "iub":
            return True
        k = self._kernel("all_finite")
        if k is not None and x.dtype == _F32:
            return int(k(x)) == 0
        # generic: a sum is finite iff every term is, unless finite terms overflow it (older
        # CuPy has no ufunc.reduce, which the NumPy backend uses)
        xp = self.xp
        with self.errstate():
            if bool(xp.isfinite(x.sum())):
                return True
        return bool(xp.isfinite(x).all())

    # -- dense layers and activations --------------------------------------------------------
    def bias_relu(self, z, b):
        if b is None:
            k = self._kernel("relu")
            if k is not None and _f32(z):
                k(z, z)
                return z
        else:
            k = self._kernel("bias_relu")
            if k is not None and _f32(z, b) and z.ndim == 2 and b.ndim == 1 and b.shape[0] == z.shape[1]:
                k(b, z)
                return z
        return super().bias_relu(z, b)

    def relu(self, x, out):
        k = self._kernel("relu")
        if k is not None and _f32(x, out) and x.shape == out.shape:
            k(x, out)
            return out
        return super().relu(x, out)

    def relu_backward(self, y, g, out):
        k = self._kernel("relu_backward")
        if k is not None and _f32(y, g, out) and y.shape == g.shape == out.shape:
            k(y, g, out)
            return out
        return super().relu_backward(y, g, out)

    def relu_backward_bias(self, y, g, dz, db):
        k = self._kernel("relu_backward")
        if (
            k is not None
            and _f32(y, g, dz, db)
            and y.shape == g.shape == dz.shape
            and dz.ndim == 2
            and db.shape == dz.shape[1:]
        ):
            k(y, g, dz)
            self.xp.sum(dz, axis=0, out=db)
            return dz
        return super().relu_backward_bias(y, g, dz, db)

    # -- convolution: one thread per output element, padding read as zeros ---------------------
    def im2col(self, x, kernel, stride, padding, dilation, cols, owner):
        k = self._kernel("im2col")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        N, H, W, C = x.shape
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        K = kh * kw * C
        if k is None or not _f32(x, cols) or cols.ndim != 2 or cols.shape[0] != N * Ho * Wo or cols.shape[1] < K:
            return super().im2col(x, kernel, stride, padding, dilation, cols, owner)
        xc = self.xp.ascontiguousarray(x)  # raw-indexed: C order (N, H, W, C)
        k(xc, *_i32(H, W, C, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, K), cols[:, :K])
        return cols  # the bias lane, cols[:, K:], untouched

    def col2im(self, dcols, kernel, stride, padding, dilation, dx, owner):
        k = self._kernel("col2im")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        N, H, W, C = dx.shape
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        K = kh * kw * C
        if k is None or not _f32(dcols, dx) or dcols.ndim != 2 or dcols.shape[0] != N * Ho * Wo or dcols.shape[1] < K:
            return super().col2im(dcols, kernel, stride, padding, dilation, dx, owner)
        if not dcols.flags.c_contiguous:  # raw-indexed: C order
            dcols = self.xp.ascontiguousarray(dcols[:, :K])
        k(dcols, *_i32(H, W, C, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, dcols.shape[1]), dx)
        return dx

    # -- max pooling: the winning window offset per output (uint8), as the numba backend --------
    def maxpool_forward(self, x, kernel, stride, padding, out_hw, relu, training, owner):
        k = self._kernel("maxpool_forward")
        (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, out_hw
        if k is None or kh * kw > 255 or not _f32(x) or x.ndim != 4:
            return super().maxpool_forward(x, kernel, stride, padding, out_hw, relu, training, owner)
        saved = _MaxPoolSaved(self, x, out_hw)
        N, C, H, W = x.shape
        y = self.scratch(owner, "y", (N, C, Ho, Wo), x.dtype, channels_last=saved.channels_last)
        arg = self.scratch(owner, "arg", (N, Ho, Wo, C), numpy.uint8)
        xc = self.xp.ascontiguousarray(_channels_last(x))
        k(xc, *_i32(H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, bool(relu)), _channels_last(y), arg)
        saved.arg = arg  # 255 marks a pooled ReLU's zero-slope windows
        return y, saved

    def maxpool_backward(self, saved, dy, kernel, stride, padding, owner):
        k = self._kernel("maxpool_backward")
        if saved.arg is None or k is None:
            return super().maxpool_backward(saved, dy, kernel, stride, padding, owner)
        (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, saved.out_hw
        C, H, W = saved.x_shape[1:]
        dx = self.scratch(owner, "dx", saved.x_shape, saved.dtype, channels_last=saved.channels_last)
        dyc = self.xp.ascontiguousarray(_channels_last(dy), dtype=saved.dtype)
        k(dyc, saved.arg, *_i32(H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo), _channels_last(dx))
        return dx  # every element written: no zero-fill

    # -- optimizers: one fused pass, then one finiteness reduction ------------------------------
    def optimizer_update(self, rule, p, g, state, old, scalars) -> bool:
        k = self._kernel(rule) if rule in ("adam", "sgd", "rmsprop") else None
        buffers = (p, g, *state, old)
        if k is None or not all(a.dtype == _F32 and a.shape == p.shape for a in buffers):
            return super().optimizer_update(rule, p, g, state, old, scalars)
        if rule == "sgd":
            lr, mu, l2, nesterov, first = scalars
            args = (
                numpy.float32(lr),
                numpy.float32(mu),
                numpy.float32(l2),
                numpy.int32(bool(nesterov)),
                numpy.int32(bool(first)),
            )
        else:
            args = tuple(numpy.float32(s) for s in scalars)
        k(g, *args, p, *state, old)
        return self.all_finite(p)
