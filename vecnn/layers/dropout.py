"""Inverted dropout: scale at training time so inference is the identity."""

from __future__ import annotations

import numpy as np

from .. import ops
from ..registry import register_layer
from .base import Layer, check_seed


@register_layer
class Dropout(Layer):
    """Zero each element with probability ``rate`` during training, scaling the rest by
    ``1 / (1 - rate)``; the identity when ``training=False``. Any input shape.

    The mask comes from the layer's own ``numpy.random.Generator`` (``self.rng``), seeded by
    ``seed`` or re-seeded by ``Sequential(seed=...)``: the same seed gives the same masks.
    """

    # each replica of a split batch draws its own masks (vecnn.parallel)
    batch_independent = True

    def __init__(self, rate=0.5, seed=0):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: expected 0 <= rate < 1, received rate={rate!r}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(check_seed("Dropout", seed))

    def init_params(self, rng):
        self.rng = rng

    def forward(self, x, training=False):
        self._check(x)
        if not training or self.rate == 0:
            self._mask = None
            return x
        backend = ops.get(x)  # the masks come from the layer's NumPy generator
        keep = backend.asarray(self.rng.random(x.shape, dtype=np.float32) >= self.rate)
        self._mask = keep * backend.xp.asarray(1 / (1 - self.rate), dtype=x.dtype)  # 0 or 1/(1-p)
        return x * self._mask

    def backward(self, grad_y):
        return grad_y if self._mask is None else grad_y * self._mask

    def config(self):
        return {"rate": self.rate}
