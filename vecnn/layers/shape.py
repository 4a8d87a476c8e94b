"""Flatten: ``(n, C, H, W) -> (n, C*H*W)`` keeping C, H, W order (PyTorch's order)."""

from __future__ import annotations

import math

from ..registry import register_layer
from .base import Layer


@register_layer
class Flatten(Layer):
    """Reshape each sample to a vector. Input ``(n, *dims)``; output ``(n, prod(dims))``."""

    batch_independent = True

    def forward(self, x, training=False):
        self._check(x)
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_y):
        return grad_y.reshape(self._shape)

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)
