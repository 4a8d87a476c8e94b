"""The compiled CPU backend: NumPy arrays, with the fused passes compiled by numba.

Each override decides for itself whether its kernel applies (dtype, memory layout) and falls
back to the NumPy backend's whole-array code otherwise, so a float64 gradient check or a
strided view takes the reference path without the layer knowing. The memory-bound kernels that
run between matrix products (the optimizer pass, the batch gather, the finiteness check) are
split across OpenBLAS's own threads where its start-up probe verified that this works
(``_openblas``, a private detail of this backend).
"""

from __future__ import annotations

import numpy as np

from . import _openblas
from ._openblas import MIN_ELEMENTS
from .numpy_backend import NumPyBackend, _MaxPoolSaved

_F32 = np.dtype(np.float32)


def _flat(a):
    """A 1-D view of ``a``'s memory when ``a`` fills one contiguous block in C order or
    channels-last (a Conv2D's output), else None. Two arrays of one shape whose ``_flat`` views
    come from the same branch list their elements in the same order."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if a.ndim == 4:
        t = a.transpose(0, 2, 3, 1)
        if t.flags.c_contiguous:
            return t.reshape(-1)
    return None


def _same_order(*arrays) -> bool:
    return len({a.flags.c_contiguous for a in arrays}) == 1


def _f32(*arrays) -> bool:
    return all(a.dtype == _F32 for a in arrays)


def _rows(*arrays) -> bool:
    """2-D C-contiguous float32 arrays (what the row kernels index)."""
    return all(a.ndim == 2 and a.dtype == _F32 and a.flags.c_contiguous for a in arrays)


def _channels_last(x):
    return x.transpose(0, 2, 3, 1)


class NumbaBackend(NumPyBackend):
    """NumPy arrays; fused passes compiled with numba (``vecnn.ops._numba``)."""

    name = "numba"
    summary = "NumPy arrays with the fused passes compiled by numba"

    def __init__(self, kernels):
        super().__init__(np)
        self.k = kernels  # the compiled module (vecnn.ops._numba)

    @property
    def pool(self):
        """OpenBLAS's threads for the memory-bound passes (``_openblas``), or None."""
        return _openblas.get()

    # -- checks ------------------------------------------------------------------------------
    def all_finite(self, x) -> bool:
        if x.dtype == _F32 and x.flags.c_contiguous:
            flat = x.reshape(-1)
            pool = self.pool if flat.size >= MIN_ELEMENTS else None
            if pool is not None:
                check = pool.finite_check(flat)  # split across BLAS's threads
            else:
                check = self.k.finite_check(flat)
            if check == 0:
                return True
            return bool(np.isfinite(x).all())
        return super().all_finite(x)

    # -- dense layers and activations --------------------------------------------------------
    def bias_relu(self, z, b):
        if _rows(z) and (b is None or (b.dtype == _F32 and b.ndim == 1)):
            if b is not None:
                self.k.bias_relu(z, b)
            else:  # the ReLU layer's own kernel (NaN -> 0 like it)
                self.k.relu_forward(z.reshape(-1), z.reshape(-1))
            return z
        return super().bias_relu(z, b)

    def relu(self, x, out):
        xf, of = _flat(x), _flat(out)
        if xf is not None and of is not None and _f32(x, out) and _same_order(x, out):
            self.k.relu_forward(xf, of)  # one pass, no mask array
            return out
        return super().relu(x, out)

    def relu_backward(self, y, g, out):
        yf, gf, of = _flat(y), _flat(g), _flat(out)
        if yf is not None and gf is not None and of is not None and _f32(y, g, out) and _same_order(y, g, out):
            self.k.relu_backward(yf, gf, of)
            return out
        return super().relu_backward(y, g, out)

    def relu_backward_bias(self, y, g, dz, db):
        if _rows(y, g, dz) and db.dtype == _F32:
            self.k.relu_backward_bias(y, g, dz, db)  # mask and bias gradient in one pass
            return dz
        return super().relu_backward_bias(y, g, dz, db)

    def column_sums(self, g, out):
        if _rows(g) and out.dtype == _F32:
            self.k.column_sums(g, out)
            return out
        return super().column_sums(g, out)

    # -- losses ------------------------------------------------------------------------------
    def softmax_cross_entropy(self, z, y, eps, grad):
        if _rows(z, grad) and y.dtype == np.int64:  # one pass per row over the logits
            loss, correct = self.k.softmax_cross_entropy(z, y, eps, grad)
            return float(loss), int(correct)
        return super().softmax_cross_entropy(z, y, eps, grad)

    # -- batch normalization -----------------------------------------------------------------
    def bn_stats(self, x2):
        if _rows(x2):  # one pass, float64 accumulators
            C = x2.shape[1]
            mean, var = np.empty(C, np.float64), np.empty(C, np.float64)
            self.k.bn_stats(x2, mean, var)
            return mean.astype(x2.dtype), var.astype(x2.dtype)
        return super().bn_stats(x2)

    def bn_normalize(self, x2, mean, inv_std, gamma, beta, xhat2, y2):
        if _rows(x2) and _f32(mean, inv_std, gamma, beta, xhat2, y2):
            self.k.bn_normalize(x2, mean, inv_std, gamma, beta, xhat2, y2)
            return
        super().bn_normalize(x2, mean, inv_std, gamma, beta, xhat2, y2)

    def bn_grad_sums(self, g2, xhat2, dgamma, dbeta):
        if _rows(g2) and _f32(xhat2, dgamma, dbeta):
            self.k.bn_grad_sums(g2, xhat2, dgamma, dbeta)
            return
        super().bn_grad_sums(g2, xhat2, dgamma, dbeta)

    def bn_input_grad(self, g2, xhat2, a, b, d, dx2):
        if _rows(g2) and _f32(xhat2, a, b, d, dx2):
            self.k.bn_input_grad(g2, xhat2, a, b, d, dx2)
            return
        super().bn_input_grad(g2, xhat2, a, b, d, dx2)

    # -- convolution: one pass each, padding read as zeros (no padded copy) -------------------
    def im2col(self, x, kernel, stride, padding, dilation, cols, owner):
        self.k.im2col(x, *kernel, *stride, *padding, *dilation, cols)
        return cols

    def col2im(self, dcols, kernel, stride, padding, dilation, dx, owner):
        self.k.col2im(dcols, *kernel, *stride, *padding, *dilation, dx)
        return dx

    # -- max pooling: one pass keeps the winning window offset per output (uint8) -------------
    def maxpool_forward(self, x, kernel, stride, padding, out_hw, relu, training, owner):
        (kh, kw), (Ho, Wo) = kernel, out_hw
        if kh * kw > 255 or x.dtype.kind != "f" or (relu and x.dtype != _F32):
            return super().maxpool_forward(x, kernel, stride, padding, out_hw, relu, training, owner)
        saved = _MaxPoolSaved(self, x, out_hw)
        N, C = x.shape[:2]
        y = self.scratch(owner, "y", (N, C, Ho, Wo), x.dtype, channels_last=saved.channels_last)
        arg = self.scratch(owner, "arg", (N, Ho, Wo, C), np.uint8)
        self.k.maxpool_forward(_channels_last(x), kh, kw, *stride, *padding, _channels_last(y), arg, relu)
        saved.arg = arg  # 255 marks a pooled ReLU's zero-slope windows
        return y, saved

    def maxpool_backward(self, saved, dy, kernel, stride, padding, owner):
        if saved.arg is None:
            return super().maxpool_backward(saved, dy, kernel, stride, padding, owner)
        (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, saved.out_hw
        tiled = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0)  # every element written once
        dx = self.scratch(owner, "dx", saved.x_shape, saved.dtype, zero=not tiled, channels_last=saved.channels_last)
        dyc = np.ascontiguousarray(_channels_last(dy))  # (N, Ho, Wo, C); a small copy at most
        self.k.maxpool_backward(dyc, saved.arg, kh, kw, sh, sw, ph, pw, _channels_last(dx), tiled)
        if tiled:  # rows / columns past the last window
            dx[:, :, sh * Ho :, :] = 0
            dx[:, :, : sh * Ho, sw * Wo :] = 0
        return dx

    # -- optimizers: one fused pass, split across BLAS's threads when verified -----------------
    def optimizer_update(self, rule, p, g, state, old, scalars) -> bool:
        buffers = (p, g, *state, old)
        if not all(a.dtype == _F32 and a.ndim == 1 and a.flags.c_contiguous and a.shape == p.shape for a in buffers):
            return super().optimizer_update(rule, p, g, state, old, scalars)
        pool = self.pool
        if pool is not None:
            check = pool.optimizer(rule, p, g, state[0], state[-1], old, *scalars)
        else:
            check = getattr(self.k, rule)(p, g, *state, old, *scalars)
        return check == 0

    # -- data --------------------------------------------------------------------------------
    def gather(self, X, idx, out):
        pool = self.pool
        if (
            pool is not None
            and X.dtype == _F32
            and X.flags.c_contiguous
            and out is not None
            and out.flags.c_contiguous
            and out.dtype == _F32
            and out.shape[0] == len(idx)
        ):
            rows = X.reshape(len(X), -1)  # the gather split across BLAS's threads
            flat = out.reshape(len(idx), -1)
            if flat.shape[1] == rows.shape[1]:
                pool.gather(rows, idx, flat)
                return out.reshape(len(idx), *X.shape[1:])
        return super().gather(X, idx, out)
