"""The layer protocol every vecnn layer follows.

A layer computes its forward pass for the whole mini-batch at once and keeps only what its
backward pass needs. ``backward(dY)`` returns ``dX``, fills ``self.grads`` (same keys and
shapes as ``self.params``) and never modifies ``dY``.

Lifecycle (as in Keras' ``Dense``): the constructor checks and stores the configuration and
creates initialized float32 parameters; ``config()`` returns the constructor arguments as
plain JSON data; ``output_shape`` and ``flops`` follow from the configuration alone.
"""
from __future__ import annotations

import numpy as np

from ..backend import DTYPE
from ..errors import check_input


class Layer:
    """Base class: a parameter-free identity layer. Subclasses override what they need.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Trainable parameters and their gradients (same keys and shapes). Inside a
        ``Sequential`` these are views into one flat buffer each: write with ``[...]``.
    state : dict[str, ndarray]
        Non-trainable arrays that are saved with the model (BatchNorm running statistics).
    input_grad : bool
        When False the layer may skip computing ``dX`` (the first layer of a model does) and
        ``backward`` returns None.
    """

    #: Per-sample input shape this layer accepts, ``None`` for any size on that axis;
    #: ``None`` altogether for any rank. Subclasses set it from their configuration.
    input_spec: tuple | None = None

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.input_grad = True

    # -- the computation -------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        return x

    def backward(self, grad_y):
        return grad_y

    # -- configuration ---------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments as plain JSON data (``type(self)(**config())`` rebuilds it)."""
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def init_params(self, rng: np.random.Generator) -> None:
        """(Re-)initialize parameters and any random state from ``rng``."""

    def output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample ``input_shape`` (no batch axis)."""
        return tuple(input_shape)

    def flops(self, input_shape: tuple) -> int:
        """Multiply-add work of one sample's forward pass, counting 2 per multiply-add."""
        return 0

    def astype(self, dtype) -> "Layer":
        """Convert parameters, gradients and state to ``dtype`` in place (float64 for gradient checks)."""
        for table in (self.params, self.grads, self.state):
            for k in table:
                table[k] = table[k].astype(dtype)
        return self

    # -- helpers shared by subclasses -----------------------------------------------------
    def _check(self, x) -> None:
        if self.input_spec is not None:
            check_input(self, x, self.input_spec)
        elif getattr(x, "ndim", 0) < 1:
            raise ValueError(f"{self!r}: expected a batch array of shape (n, ...), received {x!r}")

    def _alloc(self, name: str, shape, dtype=DTYPE):
        """Create parameter ``name`` and its gradient, both zeros of ``shape``."""
        self.params[name] = np.zeros(shape, dtype=dtype)
        self.grads[name] = np.zeros(shape, dtype=dtype)
        return self.params[name]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
