"""Dense (fully connected) layer: ``Z = X @ W + b`` for the whole batch in one matrix product."""

from __future__ import annotations

import math

import numpy as np

from .. import init, ops
from ..limits import MAX_PARAMS, check_size
from ..registry import check_config, register_layer
from .activations import ReLU
from .base import Layer, built_like, check_flag, check_seed


def _positive_int(where: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: expected {name} to be a positive integer, received {name}={value!r}")
    return int(value)


def check_init(where: str, name) -> str:
    """An initializer name known to ``vecnn.init``."""
    if not isinstance(name, str):
        raise ValueError(f"{where}: expected init to be an initializer name, received init={name!r}")
    try:
        init.get(name)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return name


def check_params(where: str, shapes) -> None:
    """Refuse a layer whose parameters would exceed ``limits.MAX_PARAMS``, before allocating."""
    total = sum(math.prod(s) for s in shapes)
    check_size(f"{where}: number of parameters", total, MAX_PARAMS, "VECNN_MAX_PARAMS")


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

    batch_independent = True

    def __init__(self, in_features, out_features, bias=True, init="he", seed=0):
        super().__init__()
        self.in_features, self.out_features, self.bias, self.init = self._check_args(
            in_features, out_features, bias, init, seed
        )
        self.input_spec = (self.in_features,)
        self._alloc("W", (self.in_features, self.out_features))
        if self.bias:
            self._alloc("b", (self.out_features,))
        self.seed = seed
        self.init_params(np.random.default_rng(seed))

    @staticmethod
    def _check_args(in_features, out_features, bias=True, init="he", seed=0):
        """The checked ``(in_features, out_features, bias, init)``; allocates nothing."""
        where = f"Dense({in_features!r}, {out_features!r})"
        i = _positive_int(where, "in_features", in_features)
        o = _positive_int(where, "out_features", out_features)
        bias = check_flag(where, "bias", bias)
        check_params(where, [(i, o), (o,) if bias else (0,)])
        check_seed(where, seed)
        return i, o, bias, check_init(where, init)

    @classmethod
    def param_shapes(cls, config):
        if not built_like(cls, Dense):
            return super().param_shapes(config)
        i, o, bias, _ = cls._check_args(**check_config(cls, config))
        return {"W": (i, o), **({"b": (o,)} if bias else {})}, {}

    def init_params(self, rng):
        init.get(self.init)(self.params["W"], rng, "dense")
        if self.bias:
            self.params["b"][...] = 0

    def forward(self, x, training=False):
        Z = self._product(x)  # (n, out)
        if self.bias:
            Z += self.params["b"]  # broadcast over the batch
        return Z

    def _product(self, x):
        """``x @ W`` for a checked input, keeping ``x`` (in ``W``'s dtype) for ``dW``."""
        self._check(x)
        W = self.params["W"]
        self._x = x = x.astype(W.dtype, copy=False)  # (n, in)
        return x @ W

    def backward(self, grad_y):
        if getattr(self, "_x", None) is None:
            raise ValueError(f"{self!r}: backward called before forward (it needs the forward's input)")
        if self.bias:  # db: (out,)
            ops.get(grad_y).column_sums(grad_y, self.grads["b"])
        return self._backward_products(grad_y)

    def _backward_products(self, grad_y):
        ops.get(grad_y).xp.matmul(self._x.T, grad_y, out=self.grads["W"])  # dW = X^T dZ: (in, out)
        if not self.input_grad:
            return None
        return grad_y @ self.params["W"].T  # dX = dZ W^T: (n, in)

    # -- Dense followed by ReLU, fused (Sequential runs them as one step; the results equal
    # the two layers' own forward and backward) ----------------------------------------------
    def fuse(self, following):
        if type(following) is ReLU:
            return self.forward_relu, self.backward_relu
        return super().fuse(following)

    def forward_relu(self, x, training=False):
        """``ReLU().forward(self.forward(x))`` with the bias and the ReLU applied in one pass
        over the product, in place; the output is kept for the ReLU's gradient."""
        y = self._product(x)
        ops.get(y).bias_relu(y, self.params["b"] if self.bias else None)
        self._relu_y = y
        return y

    def backward_relu(self, grad_y):
        """``self.backward(ReLU's backward(grad_y))``: the ReLU mask and the bias gradient in
        one pass, then the two matrix products."""
        y = self._relu_y
        backend = ops.get(grad_y)
        dz = backend.scratch(self, "dz", y.shape, y.dtype)
        if self.bias:
            backend.relu_backward_bias(y, grad_y, dz, self.grads["b"])
        else:
            backend.relu_backward(y, grad_y, dz)
        return self._backward_products(dz)

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "init": self.init,
        }

    def output_shape(self, input_shape):
        return (self.out_features,)

    def flops(self, input_shape):
        return 2 * self.in_features * self.out_features
