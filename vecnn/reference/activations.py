"""Loop twins of the activations: one Python float at a time, forward next to its derivative.

Elementwise layers work on any input shape, so each twin walks the nested lists with
``map_nested`` down to single floats. Softmax works on the last axis: it walks down to each row.
"""

from __future__ import annotations

import math

from . import check_shape, map_nested, register_twin, to_array


def _elementwise(layer, x, f):
    check_shape(layer, x)
    return to_array(map_nested(f, x.tolist()), x.dtype)


def _elementwise_grad(layer, x, grad_y, df):
    """``grad_x = grad_y * f'(x)``, elementwise."""
    check_shape(layer, x)
    return to_array(map_nested(lambda v, g: g * df(v), x.tolist(), grad_y.tolist()), x.dtype), {}


def _twin(name, f, df):
    """Register the twin of an elementwise layer from ``f(v, layer)`` and ``df(v, layer)``."""

    class Twin:
        @staticmethod
        def forward(layer, x, training=False):
            return _elementwise(layer, x, lambda v: f(v, layer))

        @staticmethod
        def backward(layer, x, grad_y, training=False):
            return _elementwise_grad(layer, x, grad_y, lambda v: df(v, layer))

    Twin.__name__ = Twin.__qualname__ = f"{name}Twin"
    return register_twin(name)(Twin)


# -- ReLU: max(v, 0); derivative 1 for v > 0, else 0 --------------------------------------------
def relu(v, layer):
    return v if v > 0 else 0.0


def relu_grad(v, layer):
    return 1.0 if v > 0 else 0.0


# -- LeakyReLU: v for v > 0, else slope v ---------------------------------------------------------
def leaky_relu(v, layer):
    return v if v > 0 else layer.negative_slope * v


def leaky_relu_grad(v, layer):
    return 1.0 if v > 0 else layer.negative_slope


# -- Sigmoid: 1 / (1 + e^-v), written so exp never overflows; derivative s (1 - s) ---------------
def sigmoid(v, layer=None):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def sigmoid_grad(v, layer=None):
    s = sigmoid(v)
    return s * (1.0 - s)


# -- Tanh: derivative 1 - tanh^2 ------------------------------------------------------------------
def tanh(v, layer):
    return math.tanh(v)


def tanh_grad(v, layer):
    t = math.tanh(v)
    return 1.0 - t * t


# -- GELU: v Phi(v) with Phi the normal CDF (exact: erf), or the tanh approximation -------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_C = 0.044715


def gelu(v, layer):
    if layer.approximate == "tanh":
        t = math.tanh(_SQRT_2_OVER_PI * (v + _C * v * v * v))
        return 0.5 * v * (1.0 + t)
    return v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def gelu_grad(v, layer):
    if layer.approximate == "tanh":
        t = math.tanh(_SQRT_2_OVER_PI * (v + _C * v * v * v))
        d_inner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _C * v * v)
        return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * d_inner
    cdf = 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))  # Phi(v)
    pdf = math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)  # phi(v)
    return cdf + v * pdf  # d(v Phi(v))/dv


_twin("ReLU", relu, relu_grad)
_twin("LeakyReLU", leaky_relu, leaky_relu_grad)
_twin("Sigmoid", sigmoid, sigmoid_grad)
_twin("Tanh", tanh, tanh_grad)
_twin("GELU", gelu, gelu_grad)


# -- Softmax over the last axis -------------------------------------------------------------------
def softmax_row(z: list) -> list:
    """``e^(z_j - max z) / sum_k e^(z_k - max z)`` for one row of floats."""
    top = z[0]
    for v in z:
        if v > top:
            top = v
    e = [math.exp(v - top) for v in z]  # shifted: exp never overflows
    total = 0.0
    for v in e:
        total += v
    return [v / total for v in e]


def softmax_row_grad(z: list, g: list) -> list:
    """``dz_i = y_i (g_i - sum_j g_j y_j)``: the Jacobian times ``g`` for one row."""
    y = softmax_row(z)
    dot = 0.0
    for gj, yj in zip(g, y):
        dot += gj * yj
    return [yi * (gi - dot) for yi, gi in zip(y, g)]


def _rows(f, *nested):
    """Apply ``f`` to every last-axis row (a list of floats) of equally shaped nested lists."""
    if isinstance(nested[0][0], list):
        return [_rows(f, *items) for items in zip(*nested)]
    return f(*nested)


@register_twin("Softmax")
class SoftmaxTwin:
    @staticmethod
    def forward(layer, x, training=False):
        check_shape(layer, x)
        if x.ndim < 2:  # (n,): the last axis is the batch axis
            return to_array(softmax_row(x.tolist()), x.dtype)
        return to_array(_rows(softmax_row, x.tolist()), x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        check_shape(layer, x)
        if x.ndim < 2:
            return to_array(softmax_row_grad(x.tolist(), grad_y.tolist()), x.dtype), {}
        return to_array(_rows(softmax_row_grad, x.tolist(), grad_y.tolist()), x.dtype), {}
