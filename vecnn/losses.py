"""Losses: ``forward(pred, target) -> float`` and ``backward() -> dpred``.

Reductions match PyTorch's ``reduction="mean"``: CrossEntropy averages over samples; MSE and
BCEWithLogits over all elements, with no 1/2 factor. Each loss also knows how to score
predictions (``metrics``) so ``evaluate`` can report accuracy or error without being told.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .errors import check_finite
from .registry import LOSSES, check_config, lookup, register_loss


class Loss:
    """Base class. Subclasses implement ``forward``, ``backward``, ``check_target`` and ``metrics``."""

    #: whether the targets are class labels (integers) rather than values
    classifier = False

    def config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        """The loss ``config()`` describes (e.g. read from a model file): ``ValueError`` naming
        the loss and the argument for a config that is not an object of its constructor's
        arguments, or holds a value of the wrong type."""
        return cls(**cls._check_config(config))

    @classmethod
    def _check_config(cls, config) -> dict:
        return check_config(cls, config)

    def check_target(self, where: str, pred_shape: tuple, target):
        """Validate and convert targets for predictions of per-sample ``pred_shape``."""
        return np.asarray(target)

    def metrics(self, pred, target) -> dict:
        return {}

    def last_metrics(self) -> dict:
        """``metrics`` of the batch the last ``forward`` saw (losses may compute them on the way)."""
        return self.metrics(self._pred, self._target)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _check_pair(name: str, pred, target):
    if len(pred) != len(target):
        raise ValueError(f"{name}: pred has {len(pred)} samples but target has {len(target)}")


@register_loss(name="cross_entropy")
class CrossEntropy(Loss):
    """Softmax cross-entropy on logits ``(n, classes)`` and integer labels ``(n,)``.

    Softmax and log-loss are fused through log-sum-exp, so the loss never takes ``log`` of a
    softmax that underflowed to 0. ``label_smoothing`` mixes the one-hot target with the
    uniform distribution, as in PyTorch.
    """

    classifier = True

    @classmethod
    def _check_config(cls, config):
        from .layers.base import check_number

        config = check_config(cls, config)
        if "label_smoothing" in config:
            check_number("CrossEntropy", "label_smoothing", config["label_smoothing"], 0, 1, high_open=True)
        return config

    def __init__(self, label_smoothing=0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"CrossEntropy: expected 0 <= label_smoothing < 1, received {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, pred, target):
        if pred.ndim != 2:
            raise ValueError(f"CrossEntropy: expected logits of shape (n, classes), received {pred.shape}")
        _check_pair("CrossEntropy", pred, target)
        n, C = pred.shape
        k = kernels.get() if pred.dtype == np.float32 and target.dtype == np.int64 else None
        if k is not None:                 # the same math, fused into one pass over the logits
            self._grad = np.empty_like(pred)
            loss, correct = k.softmax_cross_entropy(pred, target, self.label_smoothing, self._grad)
            self._accuracy = correct / n
            return float(loss)
        self._grad = None
        self._pred = pred
        rows = np.arange(n)
        shifted = pred - pred.max(axis=1, keepdims=True)           # (n, C), max 0 per row
        e = np.exp(shifted)
        sum_e = e.sum(axis=1, keepdims=True)                         # (n, 1)
        lse = np.log(sum_e)                                          # log-sum-exp of the shifted logits
        self._p = e / sum_e                                          # softmax, (n, C)
        self._target = target
        eps = self.label_smoothing
        # -log p_y = lse - shifted_y; smoothing spreads eps of the mass over all classes
        nll = lse[:, 0] - shifted[rows, target]
        if eps:
            nll = (1 - eps) * nll + eps * (lse[:, 0] - shifted.mean(axis=1))
        return float(nll.mean())

    def backward(self):
        if self._grad is not None:
            return self._grad
        p, target = self._p, self._target
        n, C = p.shape
        grad = p.copy()
        eps = self.label_smoothing
        grad[np.arange(n), target] -= 1 - eps                       # softmax - smoothed one-hot
        if eps:
            grad -= eps / C
        grad *= 1 / n
        return grad

    def check_target(self, where, pred_shape, target):
        y = np.asarray(target)
        if y.ndim != 1:
            raise ValueError(f"{where}: expected integer class labels of shape (n,), received shape {y.shape}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{where}: class labels must be integers, received non-integer values "
                                 f"such as {y[np.flatnonzero(y != np.round(y))[:1]].tolist()}")
        elif y.dtype.kind not in "iub":
            raise ValueError(f"{where}: class labels must be integers, received dtype {y.dtype}")
        classes = pred_shape[-1]
        if len(y) and y.dtype.kind in "uf" and y.max() >= classes:     # before the cast: 2**63 wraps negative
            raise ValueError(f"{where}: labels must lie in [0, {classes}) for a model with {classes} "
                             f"outputs, received label {y.max()}")
        y = y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)][0]
            raise ValueError(f"{where}: labels must lie in [0, {classes}) for a model with {classes} "
                             f"outputs, received label {int(bad)}")
        return y

    def metrics(self, pred, target):
        return {"accuracy": float(np.mean(pred.argmax(axis=1) == target))}

    def last_metrics(self):
        if self._grad is not None:
            return {"accuracy": self._accuracy}
        return self.metrics(self._pred, self._target)

    def config(self):
        return {"label_smoothing": self.label_smoothing}


def _check_values(where, pred_shape, target):
    t = np.asarray(target)
    if t.dtype.kind not in "fiub":
        raise ValueError(f"{where}: expected numeric targets, received dtype {t.dtype}")
    if t.ndim == 1 and pred_shape == (1,):
        t = t[:, None]                                               # (n,) targets for one output
    if t.shape[1:] != tuple(pred_shape):
        raise ValueError(f"{where}: expected targets of shape (n, {', '.join(map(str, pred_shape))}) "
                         f"matching the model output, received {t.shape}")
    t = t.astype(np.float32, copy=False)
    check_finite(where, t)
    return t


@register_loss(name="mse")
class MSE(Loss):
    """Mean squared error over all elements: ``mean((pred - target)**2)``."""

    def forward(self, pred, target):
        _check_pair("MSE", pred, target)
        self._pred, self._target = pred, target
        self._diff = pred - target.reshape(pred.shape)
        return float(np.mean(self._diff * self._diff))

    def backward(self):
        return self._diff * (2 / self._diff.size)

    check_target = staticmethod(_check_values)

    def metrics(self, pred, target):
        d = pred - target.reshape(pred.shape)
        return {"mse": float(np.mean(d * d)), "mae": float(np.mean(np.abs(d)))}


@register_loss(name="bce_with_logits")
class BCEWithLogits(Loss):
    """Binary cross-entropy on logits, elementwise, averaged over all elements.

    ``max(z, 0) - z t + log(1 + exp(-|z|))`` is the stable form of ``-t log s - (1-t) log(1-s)``.
    """

    classifier = True

    def forward(self, pred, target):
        _check_pair("BCEWithLogits", pred, target)
        z, t = pred, target.reshape(pred.shape)
        self._z, self._t = z, t
        self._pred, self._target = pred, target
        return float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))

    def backward(self):
        z = self._z
        e = np.exp(-np.abs(z))
        s = np.where(z >= 0, 1 / (1 + e), e / (1 + e))              # sigmoid(z) without overflow
        return (s - self._t) * (1 / z.size)

    def check_target(self, where, pred_shape, target):
        t = _check_values(where, pred_shape, target)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError(f"{where}: BCEWithLogits targets must lie in [0, 1], "
                             f"received values in [{t.min()}, {t.max()}]")
        return t

    def metrics(self, pred, target):
        return {"accuracy": float(np.mean((pred > 0) == (target.reshape(pred.shape) > 0.5)))}


ALIASES = {"crossentropy": "cross_entropy", "CrossEntropy": "cross_entropy", "MSE": "mse",
           "BCEWithLogits": "bce_with_logits", "bce": "bce_with_logits"}


def get(loss) -> Loss:
    """A Loss from a name (``"cross_entropy"``, ``"mse"``, ``"bce_with_logits"``) or instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if not isinstance(loss, str):
        raise ValueError(f"loss: expected a name such as 'cross_entropy' or a Loss, received {loss!r}")
    return lookup(LOSSES, "loss", ALIASES.get(loss, loss))()
