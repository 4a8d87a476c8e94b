"""Elementwise activations and Softmax, each forward next to its derivative.

All work on any input shape and keep the input's dtype: no float64 scalar sneaks into a
float32 batch (the constants below are applied as Python floats, which NumPy keeps float32).
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..registry import register_layer
from .base import Layer, check_number, reusable_like


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


def _like(layer, name, a):
    """A dense array shaped and laid out like ``a`` (C order or channels-last), reused across
    calls while no one holds the previous one."""
    return reusable_like(layer, name, a.shape, a.dtype, channels_last=not a.flags.c_contiguous)


def _same_order(a, b) -> bool:
    return a.flags.c_contiguous == b.flags.c_contiguous


@register_layer
class ReLU(Layer):
    """``max(x, 0)``. Any input shape; output shape = input shape."""

    def forward(self, x, training=False):
        self._check(x)
        self._y = None                         # the previous batch's output may be reused
        xf = _flat(x) if x.dtype == np.float32 else None
        k = kernels.get() if xf is not None else None
        if k is not None:                      # one pass, no mask array
            y = _like(self, "y", x)            # x's memory order, so the flat views match
            k.relu_forward(xf, _flat(y))
        else:
            y = np.maximum(x, 0)
        self._y = y                            # d relu / dx = (y > 0)
        return y

    def backward(self, grad_y):
        y = self._y
        gf = _flat(grad_y) if grad_y.dtype == y.dtype == np.float32 and _same_order(y, grad_y) else None
        yf = _flat(y) if gf is not None else None
        k = kernels.get() if yf is not None else None
        if k is not None:
            dx = _like(self, "dx", grad_y)
            k.relu_backward(yf, gf, _flat(dx))
            return dx
        return grad_y * (y > 0)


@register_layer
class LeakyReLU(Layer):
    """``x if x > 0 else negative_slope * x``."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_number("LeakyReLU", "negative_slope", negative_slope)

    def forward(self, x, training=False):
        self._check(x)
        self._mask = x > 0
        return np.where(self._mask, x, x * self.negative_slope)

    def backward(self, grad_y):
        return np.where(self._mask, grad_y, grad_y * self.negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}


@register_layer
class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""

    def forward(self, x, training=False):
        self._check(x)
        e = np.exp(-np.abs(x))                 # in (0, 1]: never overflows
        self._y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._y

    def backward(self, grad_y):
        y = self._y
        return grad_y * y * (1 - y)            # sigma' = sigma (1 - sigma)


@register_layer
class Tanh(Layer):
    """``tanh(x)``."""

    def forward(self, x, training=False):
        self._check(x)
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_y):
        return grad_y * (1 - self._y * self._y)


def erf(x):
    """Vectorized error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).

    NumPy has no ``erf``; this rational approximation is accurate to float32 precision, keeps
    the input dtype and needs no SciPy.
    """
    a = np.abs(x)
    t = 1 / (1 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.copysign(1 - poly * np.exp(-a * a), x)


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

    def forward(self, x, training=False):
        self._check(x)
        self._x = x
        if self.approximate == "tanh":
            self._t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self._t)
        self._cdf = 0.5 * (1 + erf(x / _SQRT_2))       # Phi(x)
        return x * self._cdf

    def backward(self, grad_y):
        x = self._x
        if self.approximate == "tanh":
            t = self._t
            dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return grad_y * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)       # phi(x)
        return grad_y * (self._cdf + x * pdf)            # d(x Phi)/dx = Phi + x phi

    def config(self):
        return {"approximate": self.approximate}


@register_layer
class Softmax(Layer):
    """Softmax over the last axis. For training a classifier prefer raw logits with the fused
    ``cross_entropy`` loss; this layer is for models that must output probabilities."""

    def forward(self, x, training=False):
        self._check(x)
        e = np.exp(x - x.max(axis=-1, keepdims=True))   # shift: exp never overflows
        self._y = e / e.sum(axis=-1, keepdims=True)
        return self._y

    def backward(self, grad_y):
        y = self._y
        # dx_i = y_i (g_i - sum_j g_j y_j): the Jacobian-vector product, never the full Jacobian
        return y * (grad_y - (grad_y * y).sum(axis=-1, keepdims=True))
