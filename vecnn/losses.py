"""Losses: ``forward(pred, target) -> float`` and ``backward() -> dpred``.

Reductions match PyTorch's ``reduction="mean"``: CrossEntropy averages over samples; MSE and
BCEWithLogits over all elements, with no 1/2 factor. Each loss also knows how to score
predictions (``metrics``) so ``evaluate`` can report accuracy or error without being told.

Per-sample weights (``forward(pred, target, weight)``, what ``fit(sample_weight=...)`` passes):
the loss is the weighted mean of the per-row losses, ``sum_i w_i l_i / sum_i w_i`` (a row's
loss being its mean over its elements for MSE and BCEWithLogits), as scikit-learn's
MLPClassifier since 1.7 and PyTorch's ``reduction="none"`` followed by a weighted mean compute
it; weights all equal give the unweighted mean. Rows whose weights sum to zero give a loss,
gradient and metrics of zero. Without weights the fused unweighted pass runs unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import ops
from .errors import check_finite
from .registry import LOSSES, check_config, lookup, register_loss


class Loss:
    """Base class. Subclasses implement ``forward``, ``backward``, ``check_target`` and ``metrics``."""

    def forward(self, pred: Any, target: Any, weight: Any = None) -> float:
        """The mean loss of ``pred`` against ``target``; keeps what ``backward`` needs.
        ``weight`` (losses with ``weighted = True``): one non-negative weight per row, giving
        the weighted mean of the per-row losses."""
        raise NotImplementedError

    def backward(self) -> Any:
        """The gradient of the last ``forward``'s loss with respect to its ``pred``."""
        raise NotImplementedError

    #: whether the targets are class labels (integers) rather than values
    classifier = False
    #: whether ``forward`` takes per-row weights (``fit(sample_weight=...)`` needs it)
    weighted = False
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


def _check_pair(name: str, pred, target, weight=None):
    if len(pred) != len(target):
        raise ValueError(f"{name}: pred has {len(pred)} samples but target has {len(target)}")
    if weight is not None and (getattr(weight, "shape", None) != (len(pred),)):
        raise ValueError(
            f"{name}: expected one weight per sample, shape ({len(pred)},), received "
            f"{getattr(weight, 'shape', type(weight).__name__)}"
        )


def _row_scale(pred, weight):
    """``(w, total)``: the weights as a column that broadcasts against ``pred``'s rows, in its
    dtype and on its device, and their sum (float64)."""
    backend = ops.get(pred)
    w = backend.asarray(weight).astype(pred.dtype, copy=False)
    total = float(w.sum(dtype=np.float64))
    return w.reshape((len(w),) + (1,) * (pred.ndim - 1)), total


def _weighted_mean(per_row, w, total) -> float:
    """``sum_i w_i per_row_i / sum_i w_i`` (0 when the weights sum to 0), in float64."""
    if total <= 0:
        return 0.0
    return float((w.reshape(-1) * per_row).sum(dtype=np.float64) / total)


@register_loss(name="cross_entropy")
class CrossEntropy(Loss):
    """Softmax cross-entropy on logits ``(n, classes)`` and integer labels ``(n,)``.

    Softmax and log-loss are fused through log-sum-exp, so the loss never takes ``log`` of a
    softmax that underflowed to 0. ``label_smoothing`` mixes the one-hot target with the
    uniform distribution, as in PyTorch.
    """

    classifier = True
    weighted = True

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

    def forward(self, pred, target, weight=None):
        if pred.ndim != 2:
            raise ValueError(f"CrossEntropy: expected logits of shape (n, classes), received {pred.shape}")
        _check_pair("CrossEntropy", pred, target, weight)
        n = pred.shape[0]
        backend = ops.get(pred)
        self._grad = backend.empty(pred.shape, pred.dtype)
        # softmax, log-sum-exp loss, gradient and argmax in one fused pass over the logits
        loss, correct = backend.softmax_cross_entropy(pred, target, self.label_smoothing, self._grad)
        self._accuracy = correct / n
        if weight is None:
            return loss
        # weighted: the fused pass's gradient rows (softmax - target) / n, each scaled by
        # n w_i / sum(w); the loss and accuracy from per-row values (whole-array operations)
        xp = backend.xp
        w, total = _row_scale(pred, weight)
        target = backend.asarray(target)
        eps = self.label_smoothing
        shifted = pred - pred.max(axis=1, keepdims=True)
        lse = xp.log(xp.exp(shifted).sum(axis=1))
        nll = lse - shifted[xp.arange(n), target]
        if eps:
            nll = (1 - eps) * nll + eps * (lse - shifted.mean(axis=1))
        hit = (pred.argmax(axis=1) == target).astype(pred.dtype)
        if total > 0:
            self._grad *= w * pred.dtype.type(n / total)
        else:
            self._grad[...] = 0
        self._accuracy = _weighted_mean(hit, w, total)
        return _weighted_mean(nll, w, total)

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

    def metrics(self, pred, target, weight=None):
        hit = pred.argmax(axis=1) == target
        if weight is None:
            return {"accuracy": float(hit.mean())}
        w, total = _row_scale(pred, weight)
        return {"accuracy": _weighted_mean(hit.astype(pred.dtype), w, total)}

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

    weighted = True

    def forward(self, pred, target, weight=None):
        _check_pair("MSE", pred, target, weight)
        self._pred, self._target, self._weight = pred, target, weight
        self._diff = pred - target.reshape(pred.shape)
        if weight is None:
            return float((self._diff * self._diff).mean())
        w, total = _row_scale(pred, weight)
        # d/dpred of sum_i w_i mean_j(d_ij^2) / sum(w): 2 d_ij w_i / (row size * sum(w))
        self._scale = w * pred.dtype.type(2 / (max(self._diff[0].size, 1) * total)) if total > 0 else w * 0
        return _weighted_mean(_row_mean(self._diff * self._diff), w, total)

    def backward(self):
        if self._weight is not None:
            return self._diff * self._scale
        return self._diff * (2 / self._diff.size)

    check_target = staticmethod(_check_values)

    def metrics(self, pred, target, weight=None):
        d = pred - target.reshape(pred.shape)
        if weight is None:
            return {"mse": float((d * d).mean()), "mae": float(abs(d).mean())}
        w, total = _row_scale(pred, weight)
        return {"mse": _weighted_mean(_row_mean(d * d), w, total), "mae": _weighted_mean(_row_mean(abs(d)), w, total)}

    def last_metrics(self):
        return self.metrics(self._pred, self._target, self._weight)


def _row_mean(a):
    """The mean of each row of ``a`` over its other axes (``(n,)``)."""
    return a.reshape(len(a), -1).mean(axis=1)


@register_loss(name="bce_with_logits")
class BCEWithLogits(Loss):
    """Binary cross-entropy on logits, elementwise, averaged over all elements.

    ``max(z, 0) - z t + log(1 + exp(-|z|))`` is the stable form of ``-t log s - (1-t) log(1-s)``.
    """

    classifier = True
    weighted = True

    def forward(self, pred, target, weight=None):
        _check_pair("BCEWithLogits", pred, target, weight)
        z, t = pred, target.reshape(pred.shape)
        self._z, self._t = z, t
        self._pred, self._target, self._weight = pred, target, weight
        xp = ops.get(z).xp
        elementwise = xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-abs(z)))
        if weight is None:
            return float(elementwise.mean())
        w, total = _row_scale(pred, weight)
        # d/dz of sum_i w_i mean_j(l_ij) / sum(w): (s - t) w_i / (row size * sum(w))
        self._scale = w * pred.dtype.type(1 / (max(z[0].size, 1) * total)) if total > 0 else w * 0
        return _weighted_mean(_row_mean(elementwise), w, total)

    def backward(self):
        z = self._z
        xp = ops.get(z).xp
        e = xp.exp(-abs(z))
        s = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))  # sigmoid(z) without overflow
        if self._weight is not None:
            return (s - self._t) * self._scale
        return (s - self._t) * (1 / z.size)

    def check_target(self, where, pred_shape, target):
        t = _check_values(where, pred_shape, target)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError(
                f"{where}: BCEWithLogits targets must lie in [0, 1], received values in [{t.min()}, {t.max()}]"
            )
        return t

    def metrics(self, pred, target, weight=None):
        hit = (pred > 0) == (target.reshape(pred.shape) > 0.5)
        if weight is None:
            return {"accuracy": float(hit.mean())}
        w, total = _row_scale(pred, weight)
        return {"accuracy": _weighted_mean(_row_mean(hit.astype(pred.dtype)), w, total)}

    def last_metrics(self):
        return self.metrics(self._pred, self._target, self._weight)


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
