"""Dense (fully connected) layer: ``Z = X @ W + b`` for the whole batch in one matrix product."""
from __future__ import annotations

import numpy as np

from .. import init
from ..registry import register_layer
from .base import Layer


def _positive_int(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: expected {name} to be a positive integer, received {name}={value!r}")
    return int(value)


@register_layer
class Dense(Layer):
    """Fully connected layer.

    Input shape ``(n, in_features)``; output shape ``(n, out_features)``.
    ``W`` has shape ``(in_features, out_features)`` and ``b`` shape ``(out_features,)``, so the
    forward pass is ``X @ W + b``: one BLAS call for all samples and all units.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    init : {"he", "xavier", "lecun"}, default "he"
    seed : int, default 0
        Seed of the initial weights when the layer is used on its own.

    Examples
    --------
    >>> import numpy as np, vecnn as vn
    >>> layer = vn.layers.Dense(3, 2)
    >>> layer.forward(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, bias=True, init="he", seed=0):
        super().__init__()
        where = f"Dense({in_features!r}, {out_features!r})"
        self.in_features = _positive_int(where, "in_features", in_features)
        self.out_features = _positive_int(where, "out_features", out_features)
        self.bias = bool(bias)
        self.init = init                # an unknown name fails in init_params below
        self.input_spec = (self.in_features,)
        self._alloc("W", (self.in_features, self.out_features))
        if self.bias:
            self._alloc("b", (self.out_features,))
        self.seed = seed
        self.init_params(np.random.default_rng(seed))

    def init_params(self, rng):
        init.get(self.init)(self.params["W"], rng, "dense")
        if self.bias:
            self.params["b"][...] = 0

    def forward(self, x, training=False):
        self._check(x)
        W = self.params["W"]
        x = x.astype(W.dtype, copy=False)
        self._x = x                                   # (n, in) kept for dW
        Z = x @ W                                     # (n, out)
        if self.bias:
            Z += self.params["b"]                     # broadcast over the batch
        return Z

    def backward(self, grad_y):
        W = self.params["W"]
        x = self._x
        np.matmul(x.T, grad_y, out=self.grads["W"])   # dW = X^T dZ: (in, out)
        if self.bias:
            np.sum(grad_y, axis=0, out=self.grads["b"])  # db: (out,)
        if not self.input_grad:
            return None
        return grad_y @ W.T                           # dX = dZ W^T: (n, in)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "init": self.init}

    def output_shape(self, input_shape):
        return (self.out_features,)

    def flops(self, input_shape):
        return 2 * self.in_features * self.out_features
