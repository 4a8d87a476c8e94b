"""Loop twins of the losses, with PyTorch's ``reduction="mean"``.

CrossEntropy   per sample: lse = log sum_j e^(z_j); nll = lse - z_y
               with smoothing eps: (1 - eps) nll + eps (lse - mean_j z_j); averaged over samples
               d/dz_j = (softmax_j - (1 - eps) [j == y] - eps / C) / n
MSE            mean over all elements of (p - t)^2;             d/dp = 2 (p - t) / N
BCEWithLogits  mean of max(z, 0) - z t + log(1 + e^-|z|);      d/dz = (sigmoid(z) - t) / N
"""

from __future__ import annotations

import math

import numpy as np

from . import flatten, register_loss_twin, to_array, unflatten
from .activations import sigmoid


def _log_sum_exp(z: list) -> float:
    top = z[0]
    for v in z:
        if v > top:
            top = v
    total = 0.0
    for v in z:
        total += math.exp(v - top)  # shifted: exp never overflows
    return top + math.log(total)


@register_loss_twin("cross_entropy")
class CrossEntropyTwin:
    @staticmethod
    def forward(loss, pred, target) -> float:
        Z, labels = pred.tolist(), [int(t) for t in np.asarray(target).tolist()]
        eps = loss.label_smoothing
        total = 0.0
        for z, y in zip(Z, labels):  # every sample: z is (C,)
            lse = _log_sum_exp(z)
            nll = lse - z[y]
            if eps:
                mean_z = 0.0
                for v in z:
                    mean_z += v / len(z)
                nll = (1 - eps) * nll + eps * (lse - mean_z)
            total += nll
        return total / len(Z)

    @staticmethod
    def backward(loss, pred, target):
        Z, labels = pred.tolist(), [int(t) for t in np.asarray(target).tolist()]
        n, eps = len(Z), loss.label_smoothing
        grad = []
        for z, y in zip(Z, labels):
            lse = _log_sum_exp(z)
            C = len(z)
            row = []
            for j in range(C):
                p = math.exp(z[j] - lse)  # softmax
                q = (1 - eps) * (1.0 if j == y else 0.0) + eps / C  # smoothed one-hot
                row.append((p - q) / n)
            grad.append(row)
        return to_array(grad, pred.dtype)


def _pairs(pred, target):
    """Flat lists of predictions and targets (targets reshaped like ``pred``, as the loss does)."""
    return flatten(pred.tolist()), flatten(np.asarray(target).tolist())


@register_loss_twin("mse")
class MSETwin:
    @staticmethod
    def forward(loss, pred, target) -> float:
        p, t = _pairs(pred, target)
        total = 0.0
        for a, b in zip(p, t):
            total += (a - b) * (a - b)
        return total / len(p)

    @staticmethod
    def backward(loss, pred, target):
        p, t = _pairs(pred, target)
        N = len(p)
        return to_array(unflatten([2.0 * (a - b) / N for a, b in zip(p, t)], pred.shape), pred.dtype)


@register_loss_twin("bce_with_logits")
class BCEWithLogitsTwin:
    @staticmethod
    def forward(loss, pred, target) -> float:
        z, t = _pairs(pred, target)
        total = 0.0
        for a, b in zip(z, t):
            total += max(a, 0.0) - a * b + math.log1p(math.exp(-abs(a)))
        return total / len(z)

    @staticmethod
    def backward(loss, pred, target):
        z, t = _pairs(pred, target)
        N = len(z)
        return to_array(unflatten([(sigmoid(a) - b) / N for a, b in zip(z, t)], pred.shape), pred.dtype)
