"""Batch normalization over the batch axis (1D) or the batch and spatial axes (2D).

Training mode normalizes with the batch's own mean and (biased) variance and updates the
running statistics in ``state`` (unbiased variance, as PyTorch does); eval mode uses the
running statistics. ``gamma`` and ``beta`` are the trainable scale and shift.
"""
from __future__ import annotations

import numpy as np

from ..registry import register_layer
from .base import Layer
from .dense import _positive_int


class _BatchNorm(Layer):
    axes: tuple            # axes reduced over, e.g. (0,) or (0, 2, 3)
    param_shape: tuple     # how a (features,) vector broadcasts against the input

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(f"{name}({num_features!r})", "num_features", num_features)
        if not 0 <= momentum <= 1:
            raise ValueError(f"{name}: expected 0 <= momentum <= 1, received momentum={momentum!r}")
        if not eps > 0:
            raise ValueError(f"{name}: expected eps > 0, received eps={eps!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self._alloc("gamma", (self.num_features,))
        self._alloc("beta", (self.num_features,))
        self.state["running_mean"] = np.zeros(self.num_features, np.float32)
        self.state["running_var"] = np.ones(self.num_features, np.float32)
        self.init_params(None)

    def init_params(self, rng):
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.state["running_mean"][...] = 0
        self.state["running_var"][...] = 1

    def forward(self, x, training=False):
        self._check(x)
        shape = self.param_shape
        gamma = self.params["gamma"].reshape(shape)
        beta = self.params["beta"].reshape(shape)
        if training:
            m = x.size // self.num_features                      # samples per feature
            if m < 2:
                raise ValueError(f"{self!r}: training needs more than one value per feature, "
                                 f"received input of shape {x.shape}")
            mean = x.mean(axis=self.axes)                         # (C,)
            var = x.var(axis=self.axes)                           # (C,) biased, as used to normalize
            mom = self.momentum
            rm, rv = self.state["running_mean"], self.state["running_var"]
            rm[...] = (1 - mom) * rm + mom * mean
            rv[...] = (1 - mom) * rv + mom * var * (m / (m - 1))  # unbiased for the running estimate
        else:
            mean, var = self.state["running_mean"], self.state["running_var"]
        inv_std = 1 / np.sqrt(var + self.eps)                     # (C,)
        self._training = training
        self._xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        self._inv_std = inv_std
        return self._xhat * gamma + beta

    def backward(self, grad_y):
        shape = self.param_shape
        xhat, inv_std = self._xhat, self._inv_std
        np.sum(grad_y * xhat, axis=self.axes, out=self.grads["gamma"])  # dgamma: (C,)
        np.sum(grad_y, axis=self.axes, out=self.grads["beta"])          # dbeta: (C,)
        if not self.input_grad:
            return None
        g = (self.params["gamma"] * inv_std).reshape(shape)
        if not self._training:                     # statistics are constants in eval mode
            return grad_y * g
        m = grad_y.size // self.num_features
        # dX = gamma inv_std / m * (m dY - sum(dY) - xhat sum(dY xhat)), per feature
        dbeta = self.grads["beta"].reshape(shape)
        dgamma = self.grads["gamma"].reshape(shape)
        return g * (grad_y - (dbeta + xhat * dgamma) / m)

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}


@register_layer
class BatchNorm1D(_BatchNorm):
    """Batch normalization of ``(n, features)`` input, per feature."""

    axes = (0,)
    param_shape = (1, -1)

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.input_spec = (self.num_features,)


@register_layer
class BatchNorm2D(_BatchNorm):
    """Batch normalization of NCHW input ``(n, C, H, W)``, per channel over n, H and W."""

    axes = (0, 2, 3)
    param_shape = (1, -1, 1, 1)

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.input_spec = (self.num_features, None, None)
