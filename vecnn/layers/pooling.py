"""Pooling over NCHW images: max, average, and global average.

Windows are visited by *kernel offset*, not by output pixel: offset ``(p, q)`` of every window
at once is the strided slice ``x[:, :, p::s, q::s]`` (cut to the output size), so a pooling
layer is ``kh*kw`` whole-array operations whatever the image and batch sizes. Odd sizes floor
(PyTorch's ``ceil_mode=False``). Outputs keep the memory order of their input, so pooling a
Conv2D's output (channels-last in memory) hands the next Conv2D a channels-last input. Max
pooling is one of the backend's fused operations (``vecnn.ops``: ``maxpool_forward`` /
``maxpool_backward``).
"""

from __future__ import annotations

import math

from .. import ops
from ..registry import register_layer
from .activations import ReLU
from .base import Layer
from .conv import check_fits, check_image, check_window, offset_slice, pair, plain


def _pad(x, padding, value):
    """``x`` with a border of ``value`` ``padding`` wide on H and W (``x`` itself when no padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    padded = ops.get(x).like(x, (N, C, H + 2 * ph, W + 2 * pw))
    padded[...] = value
    padded[:, :, ph : ph + H, pw : pw + W] = x
    return padded


class _Pool2D(Layer):
    """Shared configuration of the windowed pools: kernel, stride (default: the kernel), padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        where = f"{type(self).__name__}({kernel_size!r})"
        self.kernel_size = pair(where, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair(where, "stride", stride)
        self.padding = pair(where, "padding", padding, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{where}: expected padding of at most half the kernel size "
                f"({self.kernel_size[0] // 2}, {self.kernel_size[1] // 2}), "
                f"received padding={padding!r}"
            )
        check_window(where, self.kernel_size, self.stride, self.padding)
        self.input_spec = (None, None, None)

    def _check_image(self, x):
        check_image(self, x, None)
        return check_fits(self, x, self.kernel_size, self.stride, self.padding)

    def config(self):
        return {"kernel_size": plain(self.kernel_size), "stride": plain(self.stride), "padding": plain(self.padding)}

    def output_shape(self, input_shape):
        C, H, W = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (C, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)

    def flops(self, input_shape):
        C, Ho, Wo = self.output_shape(input_shape)
        return C * Ho * Wo * self.kernel_size[0] * self.kernel_size[1]


@register_layer
class MaxPool2D(_Pool2D):
    """Max over ``kernel_size`` windows moved by ``stride`` (default: the kernel size).

    Input ``(n, C, H, W)``; output ``(n, C, Ho, Wo)``, ``Ho = floor((H + 2*padding - kh) / sh) + 1``.
    Padding is ``-inf``. The gradient goes to the first maximum of each window (row-major), as in
    PyTorch.

    The backend's ``maxpool_forward`` / ``maxpool_backward`` (``vecnn.ops``). Compiled: one pass
    keeps the winning window offset per output (``uint8``), and backward writes each input
    gradient once. NumPy: the max is separable, first over the
    ``kw`` column offsets, then over the ``kh`` row offsets of that, keeping for each stage the
    index of the first maximum; backward routes the gradient back through the two stages, and
    when windows tile the image (stride == kernel) every slice is written once, with no
    accumulation and no zero-fill of the covered part.
    """

    batch_independent = True

    def forward(self, x, training=False):
        return self._forward(x, training, relu=False)

    def _forward(self, x, training, relu):
        out_hw = self._check_image(x)
        self._saved = None  # the previous batch's buffers may be reused
        y, self._saved = ops.get(x).maxpool_forward(
            x, self.kernel_size, self.stride, self.padding, out_hw, relu, training, self
        )
        return y

    def backward(self, grad_y):
        saved = self._saved
        return saved.backend.maxpool_backward(saved, grad_y, self.kernel_size, self.stride, self.padding, self)

    # -- ReLU followed by MaxPool2D, fused (Sequential runs them as one step; the results equal
    # the two layers' own forward and backward) ----------------------------------------------
    def fuse_after(self, preceding):
        if type(preceding) is ReLU:
            return self.forward_after_relu, self.backward
        return None

    def forward_after_relu(self, x, training=False):
        """``self.forward(ReLU().forward(x))`` in one pass: the max of a window commutes with
        the ReLU, so the pool reads ``x`` once and never writes the ReLU's full-size output.
        Windows whose maximum is not positive send no gradient back (the ReLU's zero slope);
        ``backward`` then returns the gradient with respect to the ReLU's input."""
        return self._forward(x, training, relu=True)


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over ``kernel_size`` windows moved by ``stride`` (default: the kernel size).

    Zero padding counts in the mean (PyTorch's default ``count_include_pad=True``): every
    window divides by ``kh*kw``. Input ``(n, C, H, W)``; output ``(n, C, Ho, Wo)``.
    """

    batch_independent = True

    def forward(self, x, training=False):
        Ho, Wo = self._check_image(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        padded = _pad(x, self.padding, 0)
        self._x_shape, self._padded_shape, self._out_hw = x.shape, padded.shape, (Ho, Wo)
        self._channels_last = x.strides[1] < x.strides[3]
        y = None
        for p in range(kh):
            for q in range(kw):
                window = padded[:, :, offset_slice(p, 1, sh, Ho), offset_slice(q, 1, sw, Wo)]
                y = window.copy(order="K") if y is None else ops.get(x).xp.add(y, window, out=y)
        y *= 1.0 / (kh * kw)  # a Python float keeps float32 float32
        return y

    def backward(self, grad_y):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (Ho, Wo), (H, W) = self._out_hw, self._x_shape[2:]
        g = grad_y * (1.0 / (kh * kw))  # (N, C, Ho, Wo): each window's share
        dpadded = ops.get(g).alloc_nchw(self._padded_shape, g.dtype, self._channels_last, zero=True)
        for p in range(kh):
            for q in range(kw):
                dpadded[:, :, offset_slice(p, 1, sh, Ho), offset_slice(q, 1, sw, Wo)] += g
        return dpadded[:, :, ph : ph + H, pw : pw + W]


@register_layer
class GlobalAvgPool2D(Layer):
    """Mean over all of H and W: ``(n, C, H, W) -> (n, C)``, for the head of a ResNet."""

    input_spec = (None, None, None)
    batch_independent = True

    def forward(self, x, training=False):
        check_image(self, x, None)
        self._x_shape, self._channels_last = x.shape, x.strides[1] < x.strides[3]
        return x.mean(axis=(2, 3))  # (N, C)

    def backward(self, grad_y):
        N, C, H, W = self._x_shape
        dx = ops.get(grad_y).alloc_nchw(self._x_shape, grad_y.dtype, self._channels_last)
        dx[...] = (grad_y * (1.0 / (H * W)))[:, :, None, None]  # every pixel's share of the mean
        return dx

    def output_shape(self, input_shape):
        return (input_shape[0],)

    def flops(self, input_shape):
        return math.prod(input_shape)
