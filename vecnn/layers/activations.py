"""Elementwise activations and Softmax, each forward next to its derivative.

All work on any input shape and keep the input's dtype: no float64 scalar sneaks into a
float32 batch (the constants below are applied as Python floats, which NumPy keeps float32).
"""

from __future__ import annotations

import math

from .. import ops
from ..registry import register_layer
from .base import Layer, check_number


def _like(layer, name, a):
    """A dense array shaped and laid out like ``a`` (C order or channels-last), from the
    layer's scratch memory while no one holds the previous one."""
    return ops.get(a).scratch(layer, name, a.shape, a.dtype, channels_last=a.ndim == 4 and a.strides[1] < a.strides[3])


@register_layer
class ReLU(Layer):
    """``max(x, 0)``. Any input shape; output shape = input shape."""

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        self._y = None  # the previous batch's output may be reused
        y = ops.get(x).relu(x, _like(self, "y", x))  # x's memory order
        self._y = y  # d relu / dx = (y > 0)
        return y

    def backward(self, grad_y):
        return ops.get(grad_y).relu_backward(self._y, grad_y, _like(self, "dx", grad_y))


@register_layer
class LeakyReLU(Layer):
    """``x if x > 0 else negative_slope * x``."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_number("LeakyReLU", "negative_slope", negative_slope)

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        self._mask = x > 0
        return ops.get(x).xp.where(self._mask, x, x * self.negative_slope)

    def backward(self, grad_y):
        return ops.get(grad_y).xp.where(self._mask, grad_y, grad_y * self.negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}


@register_layer
class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        xp = ops.get(x).xp
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        self._y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._y

    def backward(self, grad_y):
        y = self._y
        return grad_y * y * (1 - y)  # sigma' = sigma (1 - sigma)


@register_layer
class Tanh(Layer):
    """``tanh(x)``."""

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        self._y = ops.get(x).xp.tanh(x)
        return self._y

    def backward(self, grad_y):
        return grad_y * (1 - self._y * self._y)


def erf(x):
    """Vectorized error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).

    NumPy has no ``erf``; this rational approximation is accurate to float32 precision, keeps
    the input dtype and needs no SciPy.
    """
    xp = ops.get(x).xp
    a = xp.abs(x)
    t = 1 / (1 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return xp.copysign(1 - poly * xp.exp(-a * a), x)


_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@register_layer
class GELU(Layer):
    """Gaussian error linear unit, ``x * Phi(x)``.

    ``approximate="none"`` (default, like PyTorch) uses the exact erf form;
    ``approximate="tanh"`` uses ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected approximate='none' or 'tanh', received {approximate!r}")
        self.approximate = approximate

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        self._x = x
        xp = ops.get(x).xp
        if self.approximate == "tanh":
            self._t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self._t)
        self._cdf = 0.5 * (1 + erf(x / _SQRT_2))  # Phi(x)
        return x * self._cdf

    def backward(self, grad_y):
        x = self._x
        if self.approximate == "tanh":
            t = self._t
            dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return grad_y * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
        pdf = _INV_SQRT_2PI * ops.get(x).xp.exp(-0.5 * x * x)  # phi(x)
        return grad_y * (self._cdf + x * pdf)  # d(x Phi)/dx = Phi + x phi

    def config(self):
        return {"approximate": self.approximate}


@register_layer
class Softmax(Layer):
    """Softmax over the last axis. For training a classifier prefer raw logits with the fused
    ``cross_entropy`` loss; this layer is for models that must output probabilities."""

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        e = ops.get(x).xp.exp(x - x.max(axis=-1, keepdims=True))  # shift: exp never overflows
        self._y = e / e.sum(axis=-1, keepdims=True)
        return self._y

    def backward(self, grad_y):
        y = self._y
        # dx_i = y_i (g_i - sum_j g_j y_j): the Jacobian-vector product, never the full Jacobian
        return y * (grad_y - (grad_y * y).sum(axis=-1, keepdims=True))
