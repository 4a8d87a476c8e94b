"""Batch normalization over the batch axis (1D) or the batch and spatial axes (2D).

Training mode normalizes with the batch's own mean and (biased) variance and updates the
running statistics in ``state`` (unbiased variance, as PyTorch does); eval mode uses the
running statistics. ``gamma`` and ``beta`` are the trainable scale and shift.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..registry import check_config, register_layer
from .base import Layer, built_like, check_number
from .dense import _positive_int, check_params


class _BatchNorm(Layer):
    axes: tuple  # axes reduced over, e.g. (0,) or (0, 2, 3)
    param_shape: tuple  # how a (features,) vector broadcasts against the input

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = self._check_args(type(self).__name__, num_features, eps, momentum)
        self._alloc("gamma", (self.num_features,))
        self._alloc("beta", (self.num_features,))
        self.state["running_mean"] = ops.cpu().zeros(self.num_features, np.float32)
        self.state["running_var"] = ops.cpu().zeros(self.num_features, np.float32)
        self.init_params(None)

    @staticmethod
    def _check_args(name, num_features, eps=1e-5, momentum=0.1):
        """The checked ``(num_features, eps, momentum)``; allocates nothing."""
        where = f"{name}({num_features!r})"
        n = _positive_int(where, "num_features", num_features)
        check_params(where, [(n,), (n,)])
        return (
            n,
            check_number(where, "eps", eps, low=0, low_open=True),
            check_number(where, "momentum", momentum, 0, 1),
        )

    @classmethod
    def param_shapes(cls, config):
        if not (built_like(cls, BatchNorm1D) or built_like(cls, BatchNorm2D)):
            return super().param_shapes(config)
        n, _, _ = cls._check_args(cls.__name__, **check_config(cls, config))
        return {"gamma": (n,), "beta": (n,)}, {"running_mean": (n,), "running_var": (n,)}

    def init_params(self, rng):
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.state["running_mean"][...] = 0
        self.state["running_var"][...] = 1

    def _columns(self, x):
        """``x`` as a C-contiguous ``(M, C)`` view, features along the fast axis, or None.

        A ``(n, C)`` batch is one already; an NCHW batch is one when it is channels-last in
        memory (a Conv2D's output, and what elementwise layers after it keep)."""
        if x.ndim == 2:
            return x if x.flags.c_contiguous else None
        if x.ndim == 4:
            t = x.transpose(0, 2, 3, 1)
            if t.flags.c_contiguous:
                return t.reshape(-1, x.shape[1])
        return None

    def _like(self, name, x, x2):
        """An array shaped like ``x`` in ``x2``'s memory order (channels-last for images), and
        its ``(M, C)`` view; from the layer's reusable buffers (never one a caller still holds)."""
        out = ops.get(x).scratch(self, name, x.shape, x2.dtype, channels_last=x.ndim == 4)
        return out, (out if x.ndim == 2 else out.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]))

    def forward(self, x, training=False):
        self._check(x)
        shape = self.param_shape
        gamma = self.params["gamma"].reshape(shape)
        beta = self.params["beta"].reshape(shape)
        m = x.size // self.num_features  # samples per feature
        if training and m < 2:
            raise ValueError(
                f"{self!r}: training needs more than one value per feature, received input of shape {x.shape}"
            )
        backend = ops.get(x)
        xp = backend.xp
        x2 = self._columns(x) if x.dtype == self.params["gamma"].dtype else None
        self._training = training
        if x2 is not None:  # (M, C) view: reductions over axis 0
            if training:
                mean, var = backend.bn_stats(x2)
                self._update_running(mean, var, m)
            else:
                mean, var = self.state["running_mean"], self.state["running_var"]
            inv_std = (1 / xp.sqrt(var + self.eps)).astype(x2.dtype)
            self._inv_std = inv_std
            self._xhat = self._xhat2 = None  # the previous batch's buffer may be reused
            y, y2 = self._like("y", x, x2)
            xhat, xhat2 = self._like("xhat", x, x2)
            backend.bn_normalize(
                x2, mean.astype(x2.dtype), inv_std, self.params["gamma"], self.params["beta"], xhat2, y2
            )
            self._xhat, self._xhat2 = xhat, xhat2
            return y
        if training:
            mean = x.mean(axis=self.axes)  # (C,)
            var = x.var(axis=self.axes)  # (C,) biased, as used to normalize
            self._update_running(mean, var, m)
        else:
            mean, var = self.state["running_mean"], self.state["running_var"]
        inv_std = 1 / xp.sqrt(var + self.eps)  # (C,)
        self._xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        self._xhat2 = None
        self._inv_std = inv_std
        return self._xhat * gamma + beta

    def _update_running(self, mean, var, m):
        mom = self.momentum
        rm, rv = self.state["running_mean"], self.state["running_var"]
        rm[...] = (1 - mom) * rm + mom * mean
        rv[...] = (1 - mom) * rv + mom * var * (m / (m - 1))  # unbiased for the running estimate

    def backward(self, grad_y):
        shape = self.param_shape
        xhat, inv_std = self._xhat, self._inv_std
        g = (self.params["gamma"] * inv_std).reshape(-1)  # (C,)
        m = grad_y.size // self.num_features
        xhat2 = self._xhat2
        g2 = None
        if xhat2 is not None and grad_y.dtype == xhat2.dtype:
            g2 = self._columns(grad_y)
            if g2 is not None and g2.shape != xhat2.shape:
                g2 = None
        backend = ops.get(grad_y)
        if g2 is not None:  # (M, C) views: reductions over axis 0
            backend.bn_grad_sums(g2, xhat2, self.grads["gamma"], self.grads["beta"])
            if not self.input_grad:
                return None
            dx, dx2 = self._like("dx", grad_y, xhat2)
            if not self._training:  # statistics are constants in eval mode
                backend.xp.multiply(g2, g, out=dx2)
                return dx
            b = self.grads["beta"] / m
            d = self.grads["gamma"] / m
            backend.bn_input_grad(g2, xhat2, g.astype(g2.dtype), b, d, dx2)
            return dx
        xp = backend.xp
        xp.sum(grad_y * xhat, axis=self.axes, out=self.grads["gamma"])  # dgamma: (C,)
        xp.sum(grad_y, axis=self.axes, out=self.grads["beta"])  # dbeta: (C,)
        if not self.input_grad:
            return None
        g = g.reshape(shape)
        if not self._training:  # statistics are constants in eval mode
            return grad_y * g
        # dX = gamma inv_std / m * (m dY - sum(dY) - xhat sum(dY xhat)), per feature
        dbeta = self.grads["beta"].reshape(shape)
        dgamma = self.grads["gamma"].reshape(shape)
        return g * (grad_y - (dbeta + xhat * dgamma) / m)

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def check_state(self):
        if (self.state["running_var"] < 0).any():
            raise ValueError(f"{self!r}: running_var holds negative values; a variance never is")


@register_layer
class BatchNorm1D(_BatchNorm):  # batch_independent stays False: batch statistics
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
