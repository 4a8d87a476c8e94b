"""Batch normalization over the batch axis (1D) or the batch and spatial axes (2D).

Training mode normalizes with the batch's own mean and (biased) variance and updates the
running statistics in ``state`` (unbiased variance, as PyTorch does); eval mode uses the
running statistics. ``gamma`` and ``beta`` are the trainable scale and shift.

The options follow PyTorch's ``BatchNorm1d``/``BatchNorm2d``:

- ``affine=False``: no parameters; the output is ``xhat`` itself (``gamma = 1``, ``beta = 0``);
- ``track_running_stats=False``: no running statistics at all; eval mode normalizes with the
  batch's own statistics too (so an output then depends on the rest of its batch);
- ``momentum=None``: the running statistics are the cumulative average of every batch's
  statistics: batch ``k`` (counting from 1) enters with weight ``1 / k``, the count kept in
  ``state["num_batches_tracked"]`` (shape ``(1,)``, float32 like all layer state).
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..registry import check_config, register_layer
from .base import Layer, built_like, check_flag, check_number
from .dense import _positive_int, check_params


class _BatchNorm(Layer):
    axes: tuple  # axes reduced over, e.g. (0,) or (0, 2, 3)
    param_shape: tuple  # how a (features,) vector broadcasts against the input

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats = self._check_args(
            type(self).__name__, num_features, eps, momentum, affine, track_running_stats
        )
        params, state = self._shapes(self.num_features, self.momentum, self.affine, self.track_running_stats)
        for k, shape in params.items():
            self._alloc(k, shape)
        for k, shape in state.items():
            self.state[k] = ops.cpu().zeros(shape, np.float32)
        self.init_params(None)

    @staticmethod
    def _check_args(name, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        """The checked ``(num_features, eps, momentum, affine, track_running_stats)``; allocates nothing."""
        where = f"{name}({num_features!r})"
        n = _positive_int(where, "num_features", num_features)
        check_params(where, [(n,), (n,)])
        if momentum is not None:  # None: the cumulative average
            momentum = check_number(where, "momentum", momentum, 0, 1)
        return (
            n,
            check_number(where, "eps", eps, low=0, low_open=True),
            momentum,
            check_flag(where, "affine", affine),
            check_flag(where, "track_running_stats", track_running_stats),
        )

    @staticmethod
    def _shapes(n, momentum, affine, track):
        """``(params, state)`` shapes by key for the checked arguments."""
        params = {"gamma": (n,), "beta": (n,)} if affine else {}
        state = {"running_mean": (n,), "running_var": (n,)} if track else {}
        if track and momentum is None:
            state["num_batches_tracked"] = (1,)
        return params, state

    @classmethod
    def param_shapes(cls, config):
        if not (built_like(cls, BatchNorm1D) or built_like(cls, BatchNorm2D)):
            return super().param_shapes(config)
        n, _, momentum, affine, track = cls._check_args(cls.__name__, **check_config(cls, config))
        return cls._shapes(n, momentum, affine, track)

    def init_params(self, rng):
        if self.affine:
            self.params["gamma"][...] = 1
            self.params["beta"][...] = 0
        if self.track_running_stats:
            self.state["running_mean"][...] = 0
            self.state["running_var"][...] = 1
        if "num_batches_tracked" in self.state:
            self.state["num_batches_tracked"][...] = 0

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

    def _dtype(self, x):
        """The layer's float type: its parameters' (or state's); the input's when it holds neither."""
        for table, key in ((self.params, "gamma"), (self.state, "running_mean")):
            if key in table:
                return table[key].dtype
        return x.dtype

    def _scale_shift(self, backend, dtype):
        """``(gamma, beta)``: the parameters, or 1 and 0 (as ``(C,)`` arrays) when ``affine=False``."""
        if self.affine:
            return self.params["gamma"], self.params["beta"]
        C = self.num_features
        return backend.xp.ones(C, dtype), backend.xp.zeros(C, dtype)

    def forward(self, x, training=False):
        self._check(x)
        shape = self.param_shape
        batch_stats = training or not self.track_running_stats
        m = x.size // self.num_features  # samples per feature
        if batch_stats and m < 2:
            mode = "training" if training else "normalizing with batch statistics (track_running_stats=False)"
            raise ValueError(
                f"{self!r}: {mode} needs more than one value per feature, received input of shape {x.shape}"
            )
        backend = ops.get(x)
        xp = backend.xp
        dtype = self._dtype(x)
        gamma, beta = self._scale_shift(backend, dtype)
        x2 = self._columns(x) if x.dtype == dtype and x.dtype.kind == "f" else None
        self._batch_stats = batch_stats  # the statistics depend on x: backward goes through them
        if x2 is not None:  # (M, C) view: reductions over axis 0
            if batch_stats:
                mean, var = backend.bn_stats(x2)
                if training and self.track_running_stats:
                    self._update_running(mean, var, m)
            else:
                mean, var = self.state["running_mean"], self.state["running_var"]
            inv_std = (1 / xp.sqrt(var + self.eps)).astype(x2.dtype)
            self._inv_std = inv_std
            self._xhat = self._xhat2 = None  # the previous batch's buffer may be reused
            y, y2 = self._like("y", x, x2)
            xhat, xhat2 = self._like("xhat", x, x2)
            backend.bn_normalize(x2, mean.astype(x2.dtype), inv_std, gamma, beta, xhat2, y2)
            self._xhat, self._xhat2 = xhat, xhat2
            return y
        if batch_stats:
            mean = x.mean(axis=self.axes)  # (C,)
            var = x.var(axis=self.axes)  # (C,) biased, as used to normalize
            if training and self.track_running_stats:
                self._update_running(mean, var, m)
        else:
            mean, var = self.state["running_mean"], self.state["running_var"]
        inv_std = 1 / xp.sqrt(var + self.eps)  # (C,)
        self._xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        self._xhat2 = None
        self._inv_std = inv_std
        if not self.affine:
            return self._xhat
        return self._xhat * gamma.reshape(shape) + beta.reshape(shape)

    def _update_running(self, mean, var, m):
        mom = self.momentum
        if mom is None:  # cumulative average: batch k (from 1) enters with weight 1 / k
            count = self.state["num_batches_tracked"]  # (1,)
            count[...] = ops.get(count).xp.rint(count) + 1  # (rint: a count averaged across ranks stays whole)
            mom = 1 / count
        rm, rv = self.state["running_mean"], self.state["running_var"]
        rm[...] = (1 - mom) * rm + mom * mean
        rv[...] = (1 - mom) * rv + mom * var * (m / (m - 1))  # unbiased for the running estimate

    def _grad_sums(self, backend, dtype):
        """Where ``sum(dY xhat)`` and ``sum(dY)`` go: ``grads`` (dgamma, dbeta), or scratch
        arrays when ``affine=False`` (the input gradient still needs them)."""
        if self.affine:
            return self.grads["gamma"], self.grads["beta"]
        C = self.num_features
        return backend.scratch(self, "dgamma", (C,), dtype), backend.scratch(self, "dbeta", (C,), dtype)

    def backward(self, grad_y):
        shape = self.param_shape
        xhat, inv_std = self._xhat, self._inv_std
        if not self.affine and not (self.input_grad and self._batch_stats):
            # no parameters: only the input gradient, which needs the sums with batch statistics only
            if not self.input_grad:
                return None
            return grad_y * inv_std.reshape(shape).astype(grad_y.dtype, copy=False)
        g = (self.params["gamma"] * inv_std).reshape(-1) if self.affine else inv_std.reshape(-1)  # (C,)
        m = grad_y.size // self.num_features
        xhat2 = self._xhat2
        g2 = None
        if xhat2 is not None and grad_y.dtype == xhat2.dtype:
            g2 = self._columns(grad_y)
            if g2 is not None and g2.shape != xhat2.shape:
                g2 = None
        backend = ops.get(grad_y)
        dgamma, dbeta = self._grad_sums(backend, xhat.dtype)
        if g2 is not None:  # (M, C) views: reductions over axis 0
            backend.bn_grad_sums(g2, xhat2, dgamma, dbeta)
            if not self.input_grad:
                return None
            dx, dx2 = self._like("dx", grad_y, xhat2)
            if not self._batch_stats:  # running statistics are constants
                backend.xp.multiply(g2, g, out=dx2)
                return dx
            b = dbeta / m
            d = dgamma / m
            backend.bn_input_grad(g2, xhat2, g.astype(g2.dtype), b, d, dx2)
            return dx
        xp = backend.xp
        xp.sum(grad_y * xhat, axis=self.axes, out=dgamma)  # dgamma: (C,)
        xp.sum(grad_y, axis=self.axes, out=dbeta)  # dbeta: (C,)
        if not self.input_grad:
            return None
        g = g.reshape(shape)
        if not self._batch_stats:  # running statistics are constants
            return grad_y * g
        # dX = gamma inv_std / m * (m dY - sum(dY) - xhat sum(dY xhat)), per feature
        return g * (grad_y - (dbeta.reshape(shape) + xhat * dgamma.reshape(shape)) / m)

    def config(self):
        # the options appear only when they differ from the defaults: files and configs written
        # before they existed read (and are written) exactly as before
        cfg = {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}
        if not self.affine:
            cfg["affine"] = False
        if not self.track_running_stats:
            cfg["track_running_stats"] = False
        return cfg

    def check_state(self):
        if "running_var" in self.state and (self.state["running_var"] < 0).any():
            raise ValueError(f"{self!r}: running_var holds negative values; a variance never is")
        if "num_batches_tracked" in self.state and (self.state["num_batches_tracked"] < 0).any():
            raise ValueError(f"{self!r}: num_batches_tracked is negative; a count of batches never is")


@register_layer
class BatchNorm1D(_BatchNorm):  # batch_independent stays False: batch statistics
    """Batch normalization of ``(n, features)`` input, per feature."""

    axes = (0,)
    param_shape = (1, -1)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.input_spec = (self.num_features,)


@register_layer
class BatchNorm2D(_BatchNorm):
    """Batch normalization of NCHW input ``(n, C, H, W)``, per channel over n, H and W."""

    axes = (0, 2, 3)
    param_shape = (1, -1, 1, 1)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.input_spec = (self.num_features, None, None)
