"""Loop twins of BatchNorm1D and BatchNorm2D.

Each channel ``c`` is normalized over its ``m`` values (the batch for 1D; batch, height and
width for 2D). Training mode uses the batch's own statistics and the backward pass goes through
them; eval mode uses the running statistics in ``layer.state``, which are then constants.
With ``track_running_stats=False`` eval mode uses the batch's statistics too; with
``affine=False`` the layer has no parameters and ``gamma = 1``, ``beta = 0``.

    mean = sum(v) / m          var = sum((v - mean)^2) / m          (biased, as used to normalize)
    xhat = (v - mean) / sqrt(var + eps)                              y = gamma xhat + beta
    dgamma = sum(dy xhat)      dbeta = sum(dy)
    dx = gamma / sqrt(var + eps) * (dy - (dbeta + xhat dgamma) / m)  (training; eval: the first factor times dy)

The twins compute, never update, the running statistics: a twin is a pure function.
"""

from __future__ import annotations

import math

from . import check_shape, register_twin, to_array, zeros


def channel_stats(values: list, eps: float) -> tuple[float, float]:
    """``(mean, 1 / sqrt(var + eps))`` of one channel's values."""
    m = len(values)
    total = 0.0
    for v in values:
        total += v
    mean = total / m
    sq = 0.0
    for v in values:
        sq += (v - mean) * (v - mean)
    return mean, 1.0 / math.sqrt(sq / m + eps)


def _batch_stats(layer, training: bool) -> bool:
    """Whether the batch's own statistics normalize (else the running ones, constants)."""
    return training or not layer.track_running_stats


def _scale_shift(layer) -> tuple[list, list]:
    """``(gamma, beta)`` as lists: the parameters, or 1 and 0 for every channel without them."""
    if layer.affine:
        return layer.params["gamma"].tolist(), layer.params["beta"].tolist()
    return [1.0] * layer.num_features, [0.0] * layer.num_features


def _stats(layer, channels: list, c: int, training: bool):
    if _batch_stats(layer, training):
        return channel_stats(channels[c], layer.eps)
    mean = layer.state["running_mean"].tolist()[c]
    var = layer.state["running_var"].tolist()[c]
    return mean, 1.0 / math.sqrt(var + layer.eps)


def bn_forward(layer, channels: list, training: bool) -> list:
    """``channels[c]`` is the list of channel ``c``'s values; returns the outputs, same layout."""
    gamma, beta = _scale_shift(layer)
    out = []
    for c, values in enumerate(channels):  # every channel
        mean, inv_std = _stats(layer, channels, c, training)
        out.append([gamma[c] * (v - mean) * inv_std + beta[c] for v in values])
    return out


def bn_backward(layer, channels: list, grads: list, training: bool):
    """Returns ``(dx per channel, dgamma, dbeta)``."""
    gamma, _ = _scale_shift(layer)
    dx, dgamma, dbeta = [], [], []
    for c, values in enumerate(channels):  # every channel
        mean, inv_std = _stats(layer, channels, c, training)
        dy = grads[c]
        m = len(values)
        xhat = [(v - mean) * inv_std for v in values]
        dg, db = 0.0, 0.0
        for k in range(m):
            dg += dy[k] * xhat[k]
            db += dy[k]
        dgamma.append(dg)
        dbeta.append(db)
        if _batch_stats(layer, training):  # mean and var depend on every value
            dx.append([gamma[c] * inv_std * (dy[k] - (db + xhat[k] * dg) / m) for k in range(m)])
        else:  # running statistics are constants
            dx.append([gamma[c] * inv_std * dy[k] for k in range(m)])
    return dx, dgamma, dbeta


# -- 1D: (n, C); channel c holds X[i][c] for every sample i -----------------------------------
def _gather_1d(X, C):
    return [[row[c] for row in X] for c in range(C)]


def _scatter_1d(channels, n, C):
    out = zeros((n, C))
    for c in range(C):
        for i in range(n):
            out[i][c] = channels[c][i]
    return out


# -- 2D: (n, C, H, W); channel c holds X[i][c][h][w] for every i, h, w in that order ----------
def _gather_2d(X, C):
    channels = [[] for _ in range(C)]
    for sample in X:
        for c in range(C):
            for row in sample[c]:
                for v in row:
                    channels[c].append(v)
    return channels


def _scatter_2d(channels, shape):
    n, C, H, W = shape
    out = zeros(shape)
    for c in range(C):
        k = 0
        for i in range(n):
            for h in range(H):
                for w in range(W):
                    out[i][c][h][w] = channels[c][k]
                    k += 1
    return out


def _twin(name, gather, scatter):
    class Twin:
        @staticmethod
        def forward(layer, x, training=False):
            check_shape(layer, x)
            channels = gather(x.tolist(), layer.num_features)
            return to_array(scatter(bn_forward(layer, channels, training), x.shape), x.dtype)

        @staticmethod
        def backward(layer, x, grad_y, training=False):
            check_shape(layer, x)
            C = layer.num_features
            dx, dgamma, dbeta = bn_backward(layer, gather(x.tolist(), C), gather(grad_y.tolist(), C), training)
            if not layer.affine:  # no parameters, no parameter gradients
                return to_array(scatter(dx, x.shape), x.dtype), {}
            dtype = layer.params["gamma"].dtype
            return (
                to_array(scatter(dx, x.shape), x.dtype),
                {"gamma": to_array(dgamma, dtype), "beta": to_array(dbeta, dtype)},
            )

    Twin.__name__ = Twin.__qualname__ = f"{name}Twin"
    return register_twin(name)(Twin)


_twin("BatchNorm1D", _gather_1d, lambda channels, shape: _scatter_1d(channels, *shape))
_twin("BatchNorm2D", _gather_2d, _scatter_2d)
