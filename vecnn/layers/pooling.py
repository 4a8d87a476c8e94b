"""Pooling over NCHW images: max, average, and global average.

Windows are visited by *kernel offset*, not by output pixel: offset ``(p, q)`` of every window
at once is the strided slice ``x[:, :, p::s, q::s]`` (cut to the output size), so a pooling
layer is ``kh*kw`` whole-array operations whatever the image and batch sizes. Odd sizes floor
(PyTorch's ``ceil_mode=False``). Outputs keep the memory order of their input, so pooling a
Conv2D's output (channels-last in memory) hands the next Conv2D a channels-last input.
"""
from __future__ import annotations

import numpy as np

from ..registry import register_layer
from . import conv_kernels
from .base import Layer, reusable, reusable_like
from .conv import channels_last, check_fits, check_image, check_window, offset_slice, pair, plain


class _Layout:
    """What an output must copy from an input: dtype and memory order (channels-last or not)."""

    def __init__(self, x):
        self.dtype = x.dtype
        self.channels_last = x.ndim == 4 and x.strides[1] < x.strides[3]   # channels fastest


def _alloc_like(x, shape, zero=False):
    """An array of logical NCHW ``shape`` laid out in memory like ``x`` (an array or a _Layout)."""
    like = x if isinstance(x, _Layout) else _Layout(x)
    make = np.zeros if zero else np.empty
    if like.channels_last:
        return make((shape[0], shape[2], shape[3], shape[1]), like.dtype).transpose(0, 3, 1, 2)
    return make(shape, like.dtype)


def _reusable_like(layer, name, x, shape, zero=False):
    """``_alloc_like``, from the layer's scratch arrays while no one holds the previous one."""
    like = x if isinstance(x, _Layout) else _Layout(x)
    return reusable_like(layer, name, shape, like.dtype, like.channels_last, zero)


def _pad(x, padding, value):
    """``x`` with a border of ``value`` ``padding`` wide on H and W (``x`` itself when no padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    xp = _alloc_like(x, (N, C, H + 2 * ph, W + 2 * pw))
    xp[...] = value
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


class _Pool2D(Layer):
    """Shared configuration of the windowed pools: kernel, stride (default: the kernel), padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        where = f"{type(self).__name__}({kernel_size!r})"
        self.kernel_size = pair(where, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair(where, "stride", stride)
        self.padding = pair(where, "padding", padding, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{where}: expected padding of at most half the kernel size "
                             f"({self.kernel_size[0] // 2}, {self.kernel_size[1] // 2}), "
                             f"received padding={padding!r}")
        check_window(where, self.kernel_size, self.stride, self.padding)
        self.input_spec = (None, None, None)

    def _check_image(self, x):
        check_image(self, x, None)
        return check_fits(self, x, self.kernel_size, self.stride, self.padding)

    def config(self):
        return {"kernel_size": plain(self.kernel_size), "stride": plain(self.stride),
                "padding": plain(self.padding)}

    def output_shape(self, input_shape):
        C, H, W = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (C, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)

    def flops(self, input_shape):
        C, Ho, Wo = self.output_shape(input_shape)
        return C * Ho * Wo * self.kernel_size[0] * self.kernel_size[1]


def _first_max(slices, keep_index=True):
    """Elementwise max of equally shaped ``slices`` and, with ``keep_index``, the index of the
    *first* maximum (ties go to the earliest slice, as in PyTorch) as ``uint8``."""
    if len(slices) == 1:
        return slices[0].copy(order="K"), None
    if not keep_index:
        m = np.maximum(slices[0], slices[1])
        for sl in slices[2:]:
            np.maximum(m, sl, out=m)
        return m, None
    gt = np.greater(slices[1], slices[0])
    m = np.maximum(slices[0], slices[1])
    idx = gt.view(np.uint8)                         # 0 or 1, no copy
    for q in range(2, len(slices)):
        gt = np.greater(slices[q], m)               # strictly greater: earlier offsets win ties
        np.maximum(m, slices[q], out=m)
        if q == 2:
            idx = idx.copy()
        np.copyto(idx, q, where=gt)
    return m, idx


def _axis_slice(axis, sl):
    index = [slice(None)] * 4
    index[axis] = sl
    return tuple(index)


def _route(like, shape, dy, idx, k, axis, s, n_out):
    """Backward of ``_first_max`` along ``axis`` (2: H, 3: W): send each ``dy`` to the offset
    that won its window. When windows tile the axis (stride == kernel) every slice is written
    once, with no zero-fill but of an uncovered tail; otherwise they are accumulated."""
    tiled = s == k
    dst = _alloc_like(like, shape, zero=not tiled)
    for p in range(k):
        target = dst[_axis_slice(axis, offset_slice(p, 1, s, n_out))]
        if idx is None:                             # kernel 1 along this axis
            target[...] = dy
        elif tiled:
            np.multiply(dy, idx == p, out=target)
        else:
            target += dy * (idx == p)
    covered = s * (n_out - 1) + k
    if tiled and covered < shape[axis]:             # rows / columns past the last window
        dst[_axis_slice(axis, slice(covered, None))] = 0
    return dst


@register_layer
class MaxPool2D(_Pool2D):
    """Max over ``kernel_size`` windows moved by ``stride`` (default: the kernel size).

    Input ``(n, C, H, W)``; output ``(n, C, Ho, Wo)``, ``Ho = floor((H + 2*padding - kh) / sh) + 1``.
    Padding is ``-inf``. The gradient goes to the first maximum of each window (row-major), as in
    PyTorch.

    Compiled (``conv_kernels``): one pass keeps the winning window offset per output (``uint8``),
    and backward writes each input gradient once. NumPy: the max is separable, first over the
    ``kw`` column offsets, then over the ``kh`` row offsets of that, keeping for each stage the
    index of the first maximum; backward routes the gradient back through the two stages, and
    when windows tile the image (stride == kernel) every slice is written once, with no
    accumulation and no zero-fill of the covered part.
    """

    def forward(self, x, training=False):
        Ho, Wo = self._check_image(x)
        self._like, self._x_shape, self._out_hw, self._x = _Layout(x), x.shape, (Ho, Wo), None
        self._fused_relu = None
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        kernels = conv_kernels.get()
        if kernels is not None and kh * kw <= 255:   # compiled: one pass, winner offsets as uint8
            return self._forward_compiled(kernels, x, Ho, Wo, relu=False)
        self._compiled = None
        y, self._index = self._pool(x, Ho, Wo, keep_index=training)
        if not training:
            self._x = x                              # a backward after eval recomputes the index
        return y

    def _forward_compiled(self, kernels, x, Ho, Wo, relu):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        N, C = x.shape[:2]
        self._compiled = None                        # the previous batch's buffers may be reused
        y = _reusable_like(self, "y", x, (N, C, Ho, Wo))
        arg = reusable(self._bufs, "arg", (N, Ho, Wo, C), np.uint8)
        kernels.maxpool_forward(channels_last(x), kh, kw, sh, sw, ph, pw, channels_last(y), arg, relu)
        self._compiled = arg
        return y

    # -- ReLU followed by MaxPool2D, fused (Sequential uses these; the results equal the two
    # layers' own forward and backward) ----------------------------------------------------
    def forward_after_relu(self, x, relu, training=False):
        """``self.forward(relu.forward(x))`` in one pass: the max of a window commutes with the
        ReLU, so the pool reads ``x`` once and never writes the ReLU's full-size output.
        Windows whose maximum is not positive send no gradient back (the ReLU's zero slope)."""
        relu._check(x)
        Ho, Wo = self._check_image(x)
        kernels = conv_kernels.get() if x.dtype == np.float32 else None
        if kernels is None or self.kernel_size[0] * self.kernel_size[1] > 255:
            self._fused_relu = None
            return self.forward(relu.forward(x, training), training)
        self._like, self._x_shape, self._out_hw, self._x = _Layout(x), x.shape, (Ho, Wo), None
        self._fused_relu = relu
        return self._forward_compiled(kernels, x, Ho, Wo, relu=True)

    def backward_before_relu(self, grad_y, relu):
        """``relu.backward(self.backward(grad_y))`` after ``forward_after_relu``."""
        if self.__dict__.get("_fused_relu") is relu:
            return self._backward_compiled(grad_y)   # arg 255 marks the zero-slope windows
        return relu.backward(self.backward(grad_y))

    def _pool(self, x, Ho, Wo, keep_index):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        xp = _pad(x, self.padding, -np.inf)
        cols = [xp[:, :, :, offset_slice(q, 1, sw, Wo)] for q in range(kw)]
        m, iw = _first_max(cols, keep_index)                      # (N, C, Hp, Wo)
        rows = [m[:, :, offset_slice(p, 1, sh, Ho)] for p in range(kh)]
        y, ih = _first_max(rows, keep_index)                      # (N, C, Ho, Wo)
        return y, ((iw, ih, m.shape, xp.shape) if keep_index else None)

    def backward(self, grad_y):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (Ho, Wo), like = self._out_hw, self._like
        if self._compiled is not None:
            return self._backward_compiled(grad_y)
        if self._index is None:                                   # forward ran in eval mode
            self._index = self._pool(self._x, Ho, Wo, keep_index=True)[1]
        iw, ih, m_shape, xp_shape = self._index
        dm = _route(like, m_shape, grad_y, ih, kh, 2, sh, Ho)     # (N, C, Hp, Wo)
        dxp = _route(like, xp_shape, dm, iw, kw, 3, sw, Wo)       # (N, C, Hp, Wp)
        H, W = self._x_shape[2:]
        return dxp[:, :, ph:ph + H, pw:pw + W]

    def _backward_compiled(self, grad_y):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (Ho, Wo), arg, kernels = self._out_hw, self._compiled, conv_kernels.compiled()
        tiled = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0)     # every element written once
        dx = _reusable_like(self, "dx", self._like, self._x_shape, zero=not tiled)
        dy = np.ascontiguousarray(channels_last(grad_y))   # (N, Ho, Wo, C); a small copy at most
        kernels.maxpool_backward(dy, arg, kh, kw, sh, sw, ph, pw, channels_last(dx), tiled)
        if tiled:                                    # rows / columns past the last window
            dx[:, :, sh * Ho:, :] = 0
            dx[:, :, :sh * Ho, sw * Wo:] = 0
        return dx


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over ``kernel_size`` windows moved by ``stride`` (default: the kernel size).

    Zero padding counts in the mean (PyTorch's default ``count_include_pad=True``): every
    window divides by ``kh*kw``. Input ``(n, C, H, W)``; output ``(n, C, Ho, Wo)``.
    """

    def forward(self, x, training=False):
        Ho, Wo = self._check_image(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        xp = _pad(x, self.padding, 0)
        self._x_shape, self._xp_shape, self._out_hw = x.shape, xp.shape, (Ho, Wo)
        self._like = _Layout(x)
        y = None
        for p in range(kh):
            for q in range(kw):
                window = xp[:, :, offset_slice(p, 1, sh, Ho), offset_slice(q, 1, sw, Wo)]
                y = window.copy(order="K") if y is None else np.add(y, window, out=y)
        y *= 1.0 / (kh * kw)                        # a Python float keeps float32 float32
        return y

    def backward(self, grad_y):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (Ho, Wo), (N, C, H, W) = self._out_hw, self._x_shape
        g = grad_y * (1.0 / (kh * kw))              # (N, C, Ho, Wo): each window's share
        dxp = _alloc_like(self._like, self._xp_shape, zero=True)
        for p in range(kh):
            for q in range(kw):
                dxp[:, :, offset_slice(p, 1, sh, Ho), offset_slice(q, 1, sw, Wo)] += g
        return dxp[:, :, ph:ph + H, pw:pw + W]


@register_layer
class GlobalAvgPool2D(Layer):
    """Mean over all of H and W: ``(n, C, H, W) -> (n, C)``, for the head of a ResNet."""

    input_spec = (None, None, None)

    def forward(self, x, training=False):
        check_image(self, x, None)
        self._x_shape, self._like = x.shape, _Layout(x)
        return x.mean(axis=(2, 3))                  # (N, C)

    def backward(self, grad_y):
        N, C, H, W = self._x_shape
        dx = _alloc_like(self._like, self._x_shape)
        dx[...] = (grad_y * (1.0 / (H * W)))[:, :, None, None]   # every pixel's share of the mean
        return dx

    def output_shape(self, input_shape):
        return (input_shape[0],)

    def flops(self, input_shape):
        return int(np.prod(input_shape))
