"""Standardize: ``(x - mean) / std`` with statistics computed once from the training split.

The statistics are not trained: ``adapt(X_train)`` computes them (training data only, never
the test split) and keeps them in ``state``, so they are saved in the model file with the
weights and the loaded model preprocesses raw inputs exactly as in training.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..backend import DTYPE
from ..limits import check_shape
from ..registry import check_config, register_layer
from .base import Layer, built_like, check_number

_PER = ("channel", "feature", "global")
_CHUNK = 4096  # rows per pass of adapt(): bounded float64 temporaries


def _sample_shape(input_shape) -> tuple:
    """A per-sample shape: a non-empty sequence of positive integers within ``limits``."""
    ok = (
        isinstance(input_shape, (tuple, list))
        and 0 < len(input_shape) <= 32
        and all(
            isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 1 for d in input_shape
        )
    )
    if not ok:
        raise ValueError(
            f"Standardize: expected a per-sample input shape of positive sizes, received input_shape={input_shape!r}"
        )
    return check_shape("Standardize: input_shape", input_shape)


def _stats_shape(shape: tuple, per: str) -> tuple:
    if per == "channel":
        return (shape[0],) + (1,) * (len(shape) - 1)
    if per == "feature":
        return shape
    return (1,) * len(shape)


@register_layer
class Standardize(Layer):
    """Subtract a mean and divide by a standard deviation computed by ``adapt``.

    Parameters
    ----------
    input_shape : tuple, optional
        Per-sample input shape, e.g. ``(1, 28, 28)`` or ``(64,)``. Set by ``adapt`` when omitted.
    per : "channel", "feature" or "global"
        "channel": one mean/std per index of axis 1 (per channel of NCHW images, per feature of
        ``(n, features)`` input); "feature": one per element of the per-sample shape; "global":
        one for everything.
    eps : float
        A standard deviation below ``eps`` (a constant input) is replaced by 1, so such inputs
        are only centered.

    Input shape ``(n, *input_shape)`` (for "channel", H and W may differ from adapt's);
    output shape the same. ``state``: ``mean`` and ``std``, float32, shaped to broadcast over a
    sample (``(C, 1, 1)`` for images per channel).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).random((100, 3, 4, 4), dtype=np.float32)
    >>> std = Standardize().adapt(X)
    >>> std.state["mean"].shape, std.forward(X).dtype
    ((3, 1, 1), dtype('float32'))
    """

    def __init__(self, input_shape=None, per: str = "channel", eps: float = 1e-6):
        super().__init__()
        shape, self.per, self.eps = self._check_args(input_shape, per, eps)
        self.input_shape = None
        if shape is not None:
            self._set_shape(shape)
            self.state["mean"] = ops.cpu().zeros(self._stats_shape(), DTYPE)
            self.state["std"] = ops.cpu().zeros(self._stats_shape(), DTYPE) + 1

    @staticmethod
    def _check_args(input_shape=None, per="channel", eps=1e-6):
        """The checked ``(input_shape or None, per, eps)``; allocates nothing."""
        if not isinstance(per, str) or per not in _PER:
            raise ValueError(f"Standardize: per must be one of {_PER}, received per={per!r}")
        eps = check_number("Standardize", "eps", eps, low=0, low_open=True)
        if input_shape is None:
            return None, per, eps
        return _sample_shape(input_shape), per, eps

    @classmethod
    def param_shapes(cls, config):
        if not built_like(cls, Standardize):
            return super().param_shapes(config)
        shape, per, _ = cls._check_args(**check_config(cls, config))
        if shape is None:
            return {}, {}
        stats = _stats_shape(shape, per)
        return {}, {"mean": stats, "std": stats}

    def _set_shape(self, input_shape):
        shape = _sample_shape(input_shape)
        self.input_shape = shape
        if self.per == "channel":
            self.input_spec = (shape[0],) + (None,) * (len(shape) - 1)
        elif self.per == "feature":
            self.input_spec = shape
        else:
            self.input_spec = (None,) * len(shape)

    def _stats_shape(self) -> tuple:
        if self.input_shape is None:
            raise ValueError("Standardize: no input shape yet; call adapt(X_train) first")
        return _stats_shape(self.input_shape, self.per)

    def adapt(self, X) -> "Standardize":
        """Compute ``mean`` and ``std`` from ``X`` ``(n, *input_shape)``, the training split
        only. Works in float64 over chunks of rows; stores float32. Returns ``self``."""
        xp = ops.get(X).xp if hasattr(X, "shape") else ops.cpu().xp
        X = xp.asarray(X)
        if X.ndim < 2 or len(X) == 0 or X.dtype.kind not in "fiub":
            raise ValueError(
                f"Standardize.adapt: expected a non-empty numeric array of shape "
                f"(n, ...), received shape {X.shape} dtype {X.dtype}"
            )
        if self.input_shape is not None and X.shape[1:] != self.input_shape:
            raise ValueError(
                f"Standardize.adapt: this layer was made for input_shape "
                f"{self.input_shape}, received samples of shape {X.shape[1:]}"
            )
        self._set_shape(X.shape[1:])
        stats = self._stats_shape()
        axes = tuple(i for i, s in enumerate((len(X), *stats)) if s == 1 or i == 0)
        count = math.prod(X.shape[a] for a in axes)
        # two passes (mean, then squared deviations) in float64: no catastrophic cancellation
        total = xp.zeros((1, *stats))
        for i in range(0, len(X), _CHUNK):
            total += X[i : i + _CHUNK].sum(axis=axes, keepdims=True, dtype=np.float64)
        mean = total / count  # (1, *stats)
        sq = xp.zeros((1, *stats))
        for i in range(0, len(X), _CHUNK):
            d = X[i : i + _CHUNK] - mean  # float64 chunk
            sq += xp.square(d, out=d).sum(axis=axes, keepdims=True)
        std = xp.sqrt(sq / count)
        std[std < self.eps] = 1.0  # constant inputs: only center
        self.state["mean"] = mean[0].astype(DTYPE)
        self.state["std"] = std[0].astype(DTYPE)
        return self

    @property
    def adapted(self) -> bool:
        return "mean" in self.state

    batch_independent = True

    def forward(self, x, training=False):
        if not self.adapted:
            raise ValueError(
                "Standardize: no statistics yet; call adapt(X_train) first (or construct it with input_shape=...)"
            )
        self._check(x)
        self._inv_std = 1 / self.state["std"]  # (*stats)
        return (x - self.state["mean"]) * self._inv_std

    def backward(self, grad_y):
        if not self.input_grad:
            return None
        return grad_y * self._inv_std  # dX = dY / std

    def config(self):
        return {
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "per": self.per,
            "eps": self.eps,
        }

    def check_state(self):
        std = self.state.get("std")
        if std is not None and not (std > 0).all():
            raise ValueError(f"{self!r}: std holds values <= 0; a standard deviation adapted from data is positive")

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def flops(self, input_shape):
        return 2 * math.prod(input_shape)
