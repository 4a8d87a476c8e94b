"""The NumPy backend: every operation as plain whole-array code, written once against an array
module ``xp``.

This is the reference the other backends are tested against, and the code they inherit for
whatever they do not override: the compiled CPU backend (``numba_backend``) overrides the fused
passes with one-pass kernels, the CuPy backend (``cupy_backend``) runs this same code with
``xp = cupy`` and overrides the passes it fuses on the GPU. Nothing here calls a NumPy function
directly except through ``self.xp`` (``as_strided`` and ``errstate`` aside, which each backend
names for itself), so the same lines run on the GPU.
"""

from __future__ import annotations

import math
import sys

import numpy


def _free_refs() -> int:
    """``sys.getrefcount`` of an array held only by a dict, read the way ``_reusable`` reads it
    (measured, not assumed: interpreters differ in the references they count)."""
    cache = {"k": numpy.empty(1)}
    buf = cache.get("k")
    return sys.getrefcount(buf)


_FREE_REFS = _free_refs()


class _MaxPoolSaved:
    """What a max-pool forward keeps for its backward (opaque to the layer)."""

    __slots__ = ("backend", "x_shape", "channels_last", "dtype", "out_hw", "index", "x", "relu_y", "arg")

    def __init__(self, backend, x, out_hw):
        self.backend, self.x_shape, self.out_hw = backend, x.shape, out_hw
        self.channels_last = x.ndim == 4 and x.strides[1] < x.strides[3]  # channels fastest
        self.dtype = x.dtype
        self.index = self.x = self.relu_y = self.arg = None


class NumPyBackend:
    """Whole-array operations on ``xp`` arrays (NumPy here; CuPy in the GPU subclass).

    Every fused operation has the signature the compiled kernels have, works on any dtype and
    memory layout, and writes into the ``out`` arrays it is given."""

    name = "numpy"
    device = "cpu"
    #: why this backend serves an operation (``vecnn backends`` prints it)
    summary = "plain NumPy whole-array operations (the reference)"

    def __init__(self, xp=numpy):
        self.xp = xp
        self.ndarray = xp.ndarray

    def __repr__(self):
        return f"<vecnn backend {self.name!r} on {self.device}>"

    # a backend is a process-wide service, not data: copies of a model (``copy.deepcopy``, the
    # replicas of ``vecnn.parallel``) share it, and a pickled one is looked up again by name
    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        from . import by_name

        return by_name, (self.name,)

    # -- arrays ------------------------------------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype)

    def asarray(self, a, dtype=None):
        """``a`` as this backend's array (copied from another device when it lives there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a):
        """``a`` as a NumPy array."""
        return numpy.asarray(a)

    def as_strided(self, a, shape, strides, writeable=False):
        """A strided view of ``a`` (read-only unless asked: views that overlap themselves must
        never be written)."""
        return numpy.lib.stride_tricks.as_strided(a, shape, strides, writeable=writeable)

    def errstate(self):
        """Overflow and invalid values are reported by the caller's checks, not as warnings."""
        return numpy.errstate(over="ignore", invalid="ignore")

    def scratch(self, owner, name, shape, dtype, zero=False, channels_last=False):
        """An array of ``shape`` from ``owner``'s scratch memory (a layer's ``_bufs``) when no
        one still holds the previous one (no result handed out earlier, nor a view of one, is
        alive), else a fresh one that replaces it; laid out channels-last in memory when asked
        (``shape`` is then the logical NCHW shape).

        Layers hand out their outputs and input gradients from here: in a training loop the
        previous batch's arrays are dead by the next call, so the same memory serves batch after
        batch (no page faults, no allocator churn; a smaller last batch uses a prefix of it),
        while an array a caller kept is never overwritten (its reference count shows it alive)."""
        cache = owner if isinstance(owner, dict) else owner.__dict__.setdefault("_bufs", {})
        if channels_last and len(shape) == 4:
            N, C, H, W = shape
            return self._reusable(cache, name, (N, H, W, C), dtype, zero).transpose(0, 3, 1, 2)
        return self._reusable(cache, name, tuple(shape), dtype, zero)

    def _reusable(self, cache, name, shape, dtype, zero):
        size = math.prod(shape)
        buf = cache.get(name)
        # a free buffer is referenced by the cache, ``buf`` here and getrefcount's argument only
        if (
            buf is None
            or type(buf) is not self.ndarray
            or buf.size < size
            or buf.dtype != dtype
            or sys.getrefcount(buf) > _FREE_REFS
        ):
            buf = cache[name] = self.empty(size, dtype)
            if zero:
                buf.fill(0)
        elif zero:
            buf[:size].fill(0)
        return buf[:size].reshape(shape)

    def like(self, x, shape=None, zero=False):
        """A new array of logical NCHW ``shape`` (default ``x``'s) laid out in memory like ``x``
        (channels-last or C order)."""
        shape = x.shape if shape is None else shape
        return self.alloc_nchw(shape, x.dtype, x.ndim == 4 and x.strides[1] < x.strides[3], zero)

    def alloc_nchw(self, shape, dtype, channels_last, zero=False):
        """A new array of logical shape ``shape``, channels-last in memory when asked (NCHW)."""
        make = self.zeros if zero else self.empty
        if channels_last and len(shape) == 4:
            return make((shape[0], shape[2], shape[3], shape[1]), dtype).transpose(0, 3, 1, 2)
        return make(shape, dtype)

    # -- checks ------------------------------------------------------------------------------
    def all_finite(self, x) -> bool:
        """Whether every value of ``x`` is finite: one pass (a sum is finite iff every term is,
        unless finite terms overflow it, which the exact check then clears)."""
        xp = self.xp
        if x.dtype.kind in "iub":
            return True
        with self.errstate():
            if bool(xp.isfinite(xp.add.reduce(x.reshape(-1)))):
                return True
        return bool(xp.isfinite(x).all())

    # -- dense layers and activations --------------------------------------------------------
    def bias_relu(self, z, b):
        """``z = max(z + b, 0)`` in place (``b`` None: no bias); returns ``z``."""
        if b is not None:
            z += b
        self.xp.maximum(z, 0, out=z)
        return z

    def relu(self, x, out):
        """``out = max(x, 0)``; ``out`` shaped like ``x``."""
        return self.xp.maximum(x, 0, out=out)

    def relu_backward(self, y, g, out):
        """``out = g * (y > 0)``: the ReLU's gradient from its output ``y``."""
        return self.xp.multiply(g, y > 0, out=out)

    def relu_backward_bias(self, y, g, dz, db):
        """``dz = g * (y > 0)`` and ``db = dz.sum(axis=0)`` for 2-D ``(n, out)`` arrays."""
        self.xp.multiply(g, y > 0, out=dz)
        self.xp.sum(dz, axis=0, out=db)
        return dz

    def column_sums(self, g, out):
        """``out = g.sum(axis=0)``."""
        return self.xp.sum(g, axis=0, out=out)

    # -- losses ------------------------------------------------------------------------------
    def softmax_cross_entropy(self, z, y, eps, grad):
        """Mean softmax cross-entropy of logits ``z`` (n, C) against integer labels ``y`` (n,),
        with label smoothing ``eps``, through log-sum-exp (never ``log(softmax)``). Writes
        ``(softmax - smoothed one-hot) / n`` into ``grad``; returns ``(loss, correct)`` (the
        number of rows whose argmax is the label)."""
        xp = self.xp
        n, C = z.shape
        rows = xp.arange(n)
        shifted = z - z.max(axis=1, keepdims=True)  # (n, C), max 0 per row
        xp.exp(shifted, out=grad)
        sum_e = grad.sum(axis=1, keepdims=True)  # (n, 1)
        lse = xp.log(sum_e)[:, 0]  # log-sum-exp, shifted
        nll = lse - shifted[rows, y]  # -log p_y
        if eps:
            nll = (1 - eps) * nll + eps * (lse - shifted.mean(axis=1))
        grad /= sum_e  # softmax
        grad[rows, y] -= 1 - eps  # one label per row: no duplicates
        if eps:
            grad -= eps / C
        grad *= 1 / n
        correct = xp.count_nonzero(z.argmax(axis=1) == y)
        return float(nll.mean()), int(correct)

    # -- batch normalization, on (M, C) views: features along the fast axis -------------------
    def bn_stats(self, x2):
        """Per-column mean and biased variance of ``x2`` (M, C), in its dtype."""
        return x2.mean(axis=0), x2.var(axis=0)

    def bn_normalize(self, x2, mean, inv_std, gamma, beta, xhat2, y2):
        """``xhat = (x - mean) inv_std``; ``y = xhat gamma + beta``."""
        xp = self.xp
        xp.subtract(x2, mean, out=xhat2)
        xhat2 *= inv_std
        xp.multiply(xhat2, gamma, out=y2)
        y2 += beta

    def bn_grad_sums(self, g2, xhat2, dgamma, dbeta):
        """``dgamma = sum(g xhat)``, ``dbeta = sum(g)`` per column."""
        self.xp.sum(g2 * xhat2, axis=0, out=dgamma)
        self.xp.sum(g2, axis=0, out=dbeta)

    def bn_input_grad(self, g2, xhat2, a, b, d, dx2):
        """``dx = a (g - (b + xhat d))`` per column."""
        xp = self.xp
        xp.multiply(xhat2, d, out=dx2)
        dx2 += b
        xp.subtract(g2, dx2, out=dx2)
        dx2 *= a

    # -- convolution -------------------------------------------------------------------------
    def windows(self, xpad, kernel, stride, dilation, out_hw):
        """Read-only window view ``(N, Ho, Wo, kh, kw, C)`` of channels-last ``xpad`` ``(N, Hp, Wp, C)``."""
        sN, sH, sW, sC = xpad.strides
        (kh, kw), (sh, sw), (dh, dw), (Ho, Wo) = kernel, stride, dilation, out_hw
        return self.as_strided(
            xpad, (xpad.shape[0], Ho, Wo, kh, kw, xpad.shape[3]), (sN, sH * sh, sW * sw, sH * dh, sW * dw, sC)
        )

    def pad_channels_last(self, x, padding, owner, value=0):
        """``x`` (N, H, W, C) with a border of ``value`` ``padding`` wide on H and W, in
        ``owner``'s scratch memory (``x`` itself when there is no padding)."""
        ph, pw = padding
        if ph == 0 and pw == 0:
            return x
        N, H, W, C = x.shape
        buf = self.scratch(owner, "pad", (N, H + 2 * ph, W + 2 * pw, C), x.dtype)
        buf[...] = value
        buf[:, ph : ph + H, pw : pw + W] = x
        return buf

    def im2col(self, x, kernel, stride, padding, dilation, cols, owner):
        """Columns of channels-last ``x`` (N, H, W, C) into ``cols`` (N*Ho*Wo, >= kh*kw*C):
        row ``(n, i, j)`` holds the window of output pixel ``(i, j)`` in ``(p, q, c)`` order,
        zeros for the padding; columns past ``kh*kw*C`` (a bias lane) are left alone."""
        N, H, W, C = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        padded = self.pad_channels_last(x, padding, owner)
        view = self.windows(padded, kernel, stride, dilation, (Ho, Wo))
        r, e = cols.strides
        blocks = self.as_strided(
            cols, (N, Ho, Wo, kh, kw, C), (Ho * Wo * r, Wo * r, r, kw * C * e, C * e, e), writeable=True
        )  # disjoint: each column entry once
        self.xp.copyto(blocks, view)  # the one copy: window view -> GEMM operand
        return cols

    def col2im(self, dcols, kernel, stride, padding, dilation, dx, owner):
        """Adjoint of ``im2col``: ``dx`` (N, H, W, C), zeroed on entry, gets every column
        entry added to the input pixel it was read from (the padding's share dropped). One
        strided slice-add per kernel offset, never a scatter with duplicate indices."""
        N, H, W, C = dx.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        D = dcols[:, : kh * kw * C].reshape(N, Ho, Wo, kh, kw, C)
        target = dx
        if ph or pw:
            target = self.scratch(owner, "dpad", (N, H + 2 * ph, W + 2 * pw, C), dx.dtype, zero=True)
        for p in range(kh):
            rows = offset_slice(p, dh, sh, Ho)
            for q in range(kw):
                target[:, rows, offset_slice(q, dw, sw, Wo)] += D[:, :, :, p, q]
        if target is not dx:
            dx += target[:, ph : ph + H, pw : pw + W]
        return dx

    # -- max pooling -------------------------------------------------------------------------
    def maxpool_forward(self, x, kernel, stride, padding, out_hw, relu, training, owner):
        """Max over windows of NCHW ``x``; with ``relu``, of ``max(x, 0)`` (a ReLU then the
        pool). Returns ``(y, saved)``; ``saved`` is what ``maxpool_backward`` needs. Ties go to
        the first maximum of a window (row-major), as in PyTorch.

        The max is separable: first over the ``kw`` column offsets, then over the ``kh`` row
        offsets of that, keeping for each stage the index of the first maximum."""
        saved = _MaxPoolSaved(self, x, out_hw)
        if relu:
            x = saved.relu_y = self.xp.maximum(x, 0)
        y, saved.index = self._pool(x, kernel, stride, padding, out_hw, keep_index=training)
        if not training:
            saved.x = x  # a backward after eval recomputes the index
        return y, saved

    def _pool(self, x, kernel, stride, padding, out_hw, keep_index):
        (kh, kw), (sh, sw), (Ho, Wo) = kernel, stride, out_hw
        padded = self._pad_nchw(x, padding, -math.inf)
        cols = [padded[:, :, :, offset_slice(q, 1, sw, Wo)] for q in range(kw)]
        m, iw = self._first_max(cols, keep_index)  # (N, C, Hp, Wo)
        rows = [m[:, :, offset_slice(p, 1, sh, Ho)] for p in range(kh)]
        y, ih = self._first_max(rows, keep_index)  # (N, C, Ho, Wo)
        return y, ((iw, ih, m.shape, padded.shape) if keep_index else None)

    def _pad_nchw(self, x, padding, value):
        ph, pw = padding
        if ph == 0 and pw == 0:
            return x
        N, C, H, W = x.shape
        padded = self.like(x, (N, C, H + 2 * ph, W + 2 * pw))
        padded[...] = value
        padded[:, :, ph : ph + H, pw : pw + W] = x
        return padded

    def _first_max(self, slices, keep_index=True):
        """Elementwise max of equally shaped ``slices`` and, with ``keep_index``, the index of the
        *first* maximum (ties go to the earliest slice) as ``uint8``."""
        xp = self.xp
        if len(slices) == 1:
            return slices[0].copy(order="K"), None
        m = xp.maximum(slices[0], slices[1])
        if not keep_index:
            for sl in slices[2:]:
                xp.maximum(m, sl, out=m)
            return m, None
        idx = xp.greater(slices[1], slices[0]).astype(xp.uint8)
        for q in range(2, len(slices)):
            gt = xp.greater(slices[q], m)  # strictly greater: earlier offsets win ties
            xp.maximum(m, slices[q], out=m)
            xp.copyto(idx, q, where=gt)
        return m, idx

    def _route(self, saved, shape, dy, idx, k, axis, s, n_out):
        """Backward of ``_first_max`` along ``axis`` (2: H, 3: W): send each ``dy`` to the offset
        that won its window. When windows tile the axis (stride == kernel) every slice is written
        once, with no zero-fill but of an uncovered tail; otherwise they are accumulated."""
        tiled = s == k
        dst = self.alloc_nchw(shape, saved.dtype, saved.channels_last, zero=not tiled)
        for p in range(k):
            target = dst[_axis_slice(axis, offset_slice(p, 1, s, n_out))]
            if idx is None:  # kernel 1 along this axis
                target[...] = dy
            elif tiled:
                self.xp.multiply(dy, idx == p, out=target)
            else:
                target += dy * (idx == p)
        covered = s * (n_out - 1) + k
        if tiled and covered < shape[axis]:  # rows / columns past the last window
            dst[_axis_slice(axis, slice(covered, None))] = 0
        return dst

    def maxpool_backward(self, saved, dy, kernel, stride, padding, owner):
        """The input gradient of ``maxpool_forward`` (its ``saved``) for output gradient ``dy``."""
        (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, saved.out_hw
        if saved.index is None:  # forward ran in eval mode
            saved.index = self._pool(saved.x, kernel, stride, padding, saved.out_hw, keep_index=True)[1]
        iw, ih, m_shape, padded_shape = saved.index
        dm = self._route(saved, m_shape, dy, ih, kh, 2, sh, Ho)  # (N, C, Hp, Wo)
        dxp = self._route(saved, padded_shape, dm, iw, kw, 3, sw, Wo)  # (N, C, Hp, Wp)
        H, W = saved.x_shape[2:]
        dx = dxp[:, :, ph : ph + H, pw : pw + W]
        if saved.relu_y is not None:  # the ReLU's zero slope
            dx = dx * (saved.relu_y > 0)
        return dx

    # -- optimizers: one update of a flat parameter buffer ------------------------------------
    # Each rule takes the scalars its compiled kernel takes, keeps the previous parameters in
    # ``old`` (so a diverged step can be undone) and returns whether every new one is finite.
    def optimizer_update(self, rule, p, g, state, old, scalars) -> bool:
        """``rule`` ("adam", "sgd", "rmsprop") on ``p`` from ``g`` with its ``state`` buffers."""
        self.xp.copyto(old, p)
        with self.errstate():
            getattr(self, "_" + rule)(p, g, *state, *scalars)
        return self.all_finite(p)

    def _tmp(self, p):
        return self.scratch(self.__dict__.setdefault("_opt_bufs", {}), "d", p.shape, p.dtype)

    def _adam(self, p, g, m, v, b1, c1, b2, c2, eps, step_size, inv_sqrt_bc2, l2, decay):
        xp, d = self.xp, self._tmp(p)
        if l2:
            g = g + l2 * p  # L2 penalty: g + wd p
        m *= b1
        xp.multiply(g, c1, out=d)
        m += d  # m = b1 m + (1-b1) g
        v *= b2
        xp.multiply(g, g, out=d)
        d *= c2
        v += d  # v = b2 v + (1-b2) g^2
        xp.sqrt(v, out=d)
        d *= inv_sqrt_bc2
        d += eps  # sqrt(v_hat) + eps
        xp.divide(m, d, out=d)
        d *= step_size
        if decay != 1:
            p *= decay  # AdamW: shrink the weights directly
        p -= d  # p -= lr m_hat / (sqrt(v_hat) + eps)

    def _sgd(self, p, g, buf, lr, mu, l2, nesterov, first):
        xp, d = self.xp, self._tmp(p)
        if l2:
            g = g + l2 * p
        if mu:
            if first:
                buf[...] = g  # torch starts the buffer at g
            else:
                buf *= mu
                buf += g  # v = mu v + g
            if nesterov:
                xp.multiply(buf, mu, out=d)
                d += g  # g + mu v
                g = d
            else:
                g = buf
        xp.multiply(g, lr, out=d)
        p -= d

    def _rmsprop(self, p, g, s, lr, alpha, c, eps, l2):
        xp, d = self.xp, self._tmp(p)
        if l2:
            g = g + l2 * p
        s *= alpha
        xp.multiply(g, g, out=d)
        d *= c
        s += d  # s = alpha s + (1-alpha) g^2
        xp.sqrt(s, out=d)
        d += eps
        xp.divide(g, d, out=d)
        d *= lr
        p -= d  # p -= lr g / (sqrt(s) + eps)

    # -- data --------------------------------------------------------------------------------
    def gather(self, X, idx, out):
        """The rows ``X[idx]`` (``out``, of the right shape and dtype, may receive them)."""
        return X[idx]


def offset_slice(p: int, d: int, s: int, n_out: int) -> slice:
    """The input positions kernel offset ``p`` touches along one axis: ``p*d + s*i``, i < n_out."""
    return slice(p * d, p * d + s * (n_out - 1) + 1, s)


def _axis_slice(axis, sl):
    index = [slice(None)] * 4
    index[axis] = sl
    return tuple(index)
