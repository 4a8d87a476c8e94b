"""Losses: ``forward(pred, target) -> float`` and ``backward() -> dpred``.

Reductions match PyTorch's ``reduction="mean"``: CrossEntropy averages over samples; MSE and
BCEWithLogits over all elements, with no 1/2 factor. Each loss also knows how to score
predictions (``metrics``) so ``evaluate`` can report accuracy or error without being told.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import ops
from .errors import check_finite
from .registry import LOSSES, check_config, lookup, register_loss


class Loss:
    """Base class. Subclasses implement ``forward``, ``backward``, ``check_target`` and ``metrics``."""

    def forward(self, pred: Any, target: Any) -> float:
        """The mean loss of ``pred`` against ``target``; keeps what ``backward`` needs."""
        raise NotImplementedError

    def backward(self) -> Any:
        """The gradient of the last ``forward``'s loss with respect to its ``pred``."""
        raise NotImplementedError

    #: whether the targets are class labels (integers) rather than values
    classifier = False
    #: the name it is registered under (``register_loss`` sets it)
    registered_name: ClassVar[str]
    _pred: Any  # the last forward's predictions and targets (for ``last_metrics``)
    _target: Any

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

    def check_target(self, where: str, pred_shape: tuple, target: Any) -> Any:
        """Validate and convert targets for predictions of per-sample ``pred_shape``."""
        return _array(target)

    def metrics(self, pred: Any, target: Any) -> dict[str, float]:
        return {}

    def last_metrics(self) -> dict:
        """``metrics`` of the batch the last ``forward`` saw (losses may compute them on the way)."""
        return self.metrics(self._pred, self._target)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _array(a):
    """``a`` as an array of the backend that owns it (a list or a scalar: the CPU's)."""
    return a if hasattr(a, "shape") and hasattr(a, "dtype") else ops.cpu().asarray(a)


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
        n = pred.shape[0]
        backend = ops.get(pred)
        self._grad = backend.empty(pred.shape, pred.dtype)
        # softmax, log-sum-exp loss, gradient and argmax in one fused pass over the logits
        loss, correct = backend.softmax_cross_entropy(pred, target, self.label_smoothing, self._grad)
        self._accuracy = correct / n
        return loss

    def backward(self):
        return self._grad

    def check_target(self, where, pred_shape, target):
        y = _array(target)
        xp = ops.get(y).xp
        if y.ndim != 1:
            raise ValueError(f"{where}: expected integer class labels of shape (n,), received shape {y.shape}")
        if y.dtype.kind == "f":
            if not bool(xp.isfinite(y).all()) or not bool((y == xp.round(y)).all()):
                raise ValueError(
                    f"{where}: class labels must be integers, received non-integer values "
                    f"such as {y[xp.flatnonzero(y != xp.round(y))[:1]].tolist()}"
                )
        elif y.dtype.kind not in "iub":
            raise ValueError(f"{where}: class labels must be integers, received dtype {y.dtype}")
        classes = pred_shape[-1]
        if len(y) and y.dtype.kind in "uf" and y.max() >= classes:  # before the cast: 2**63 wraps negative
            raise ValueError(
                f"{where}: labels must lie in [0, {classes}) for a model with {classes} "
                f"outputs, received label {y.max()}"
            )
        y = y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)][0]
            raise ValueError(
                f"{where}: labels must lie in [0, {classes}) for a model with {classes} "
                f"outputs, received label {int(bad)}"
            )
        return y

    def metrics(self, pred, target):
        return {"accuracy": float((pred.argmax(axis=1) == target).mean())}

    def last_metrics(self):
        return {"accuracy": self._accuracy}

    def config(self):
        return {"label_smoothing": self.label_smoothing}


def _check_values(where, pred_shape, target):
    t = _array(target)
    if t.dtype.kind not in "fiub":
        raise ValueError(f"{where}: expected numeric targets, received dtype {t.dtype}")
    if t.ndim == 1 and pred_shape == (1,):
        t = t[:, None]  # (n,) targets for one output
    if t.shape[1:] != tuple(pred_shape):
        raise ValueError(
            f"{where}: expected targets of shape (n, {', '.join(map(str, pred_shape))}) "
            f"matching the model output, received {t.shape}"
        )
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
        return float((self._diff * self._diff).mean())

    def backward(self):
        return self._diff * (2 / self._diff.size)

    check_target = staticmethod(_check_values)

    def metrics(self, pred, target):
        d = pred - target.reshape(pred.shape)
        return {"mse": float((d * d).mean()), "mae": float(abs(d).mean())}


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
        xp = ops.get(z).xp
        return float((xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-abs(z)))).mean())

    def backward(self):
        z = self._z
        xp = ops.get(z).xp
        e = xp.exp(-abs(z))
        s = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))  # sigmoid(z) without overflow
        return (s - self._t) * (1 / z.size)

    def check_target(self, where, pred_shape, target):
        t = _check_values(where, pred_shape, target)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError(
                f"{where}: BCEWithLogits targets must lie in [0, 1], received values in [{t.min()}, {t.max()}]"
            )
        return t

    def metrics(self, pred, target):
        return {"accuracy": float(((pred > 0) == (target.reshape(pred.shape) > 0.5)).mean())}


ALIASES = {
    "crossentropy": "cross_entropy",
    "CrossEntropy": "cross_entropy",
    "MSE": "mse",
    "BCEWithLogits": "bce_with_logits",
    "bce": "bce_with_logits",
}


def get(loss) -> Loss:
    """A Loss from a name (``"cross_entropy"``, ``"mse"``, ``"bce_with_logits"``) or instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if not isinstance(loss, str):
        raise ValueError(f"loss: expected a name such as 'cross_entropy' or a Loss, received {loss!r}")
    return lookup(LOSSES, "loss", ALIASES.get(loss, loss))()
