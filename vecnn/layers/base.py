"""The layer protocol every vecnn layer follows.

A layer computes its forward pass for the whole mini-batch at once and keeps only what its
backward pass needs. ``backward(dY)`` returns ``dX``, fills ``self.grads`` (same keys and
shapes as ``self.params``) and never modifies ``dY``.

Lifecycle (as in Keras' ``Dense``): the constructor checks and stores the configuration and
creates initialized float32 parameters; ``config()`` returns the constructor arguments as
plain JSON data; ``output_shape`` and ``flops`` follow from the configuration alone.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .. import ops
from ..backend import DTYPE
from ..errors import check_input
from ..registry import check_config


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
    #: the name it is registered under (``register_layer`` sets it; model files store it)
    registered_name: ClassVar[str]
    #: Whether each sample's output (and gradient) depends on that sample alone, so the batch
    #: may be split across workers (``vecnn.parallel``): False for BatchNorm (batch statistics)
    #: and, until a layer says otherwise, for layers vecnn does not know.
    batch_independent: bool = False

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.input_grad = True

    # -- the computation -------------------------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> Any:
        return x

    def backward(self, grad_y: Any) -> Any:
        return grad_y

    # -- configuration ---------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments as plain JSON data (``type(self)(**config())`` rebuilds it)."""
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        """The layer ``config()`` describes; ``config`` must name constructor arguments only
        (``ValueError`` naming the key otherwise), whose values the constructor checks."""
        return cls(**check_config(cls, config))

    @classmethod
    def param_shapes(cls, config: dict) -> tuple[dict, dict]:
        """``(params, state)``: the shape of every array a layer built from ``config`` would
        hold, by key, with every value of ``config`` checked on the way (``ValueError``).

        Model files are checked against this before anything is built. Layers whose
        constructors allocate arrays sized by their configuration (Dense, Conv2D, the
        BatchNorms, Standardize, Residual) compute the shapes without allocating; this
        default builds the layer and reads them off (nothing sized by the configuration is
        allocated by the parameter-free built-ins; a user's own layer is the user's code)."""
        layer = cls.from_config(config)
        return (
            {k: tuple(v.shape) for k, v in layer.params.items()},
            {k: tuple(v.shape) for k, v in layer.state.items()},
        )

    def init_params(self, rng: np.random.Generator) -> None:
        """(Re-)initialize parameters and any random state from ``rng``."""

    def fuse(self, following: "Layer"):
        """``(forward, backward)`` of this layer and ``following`` run as one step, when this
        layer knows how to fuse with it (Dense then ReLU: the bias and the ReLU in one pass),
        else what ``following.fuse_after(self)`` offers, else None. ``forward(x, training)``
        and ``backward(grad)`` must compute what the two layers compute one after the other."""
        return following.fuse_after(self)

    def fuse_after(self, preceding: "Layer"):
        """``(forward, backward)`` of ``preceding`` and this layer as one step, when this layer
        can absorb the one before it (a ReLU before a max pool), else None."""
        return None

    def sublayers(self) -> list:
        """The layers this layer runs inside it (a ``Residual`` block's); none for most."""
        return []

    def check_state(self) -> None:
        """Raise ``ValueError`` if ``state`` holds values the layer could never have computed
        (checked when a model file is loaded; finiteness is checked for every tensor there)."""

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
        self.drop_scratch()
        return self

    def to_backend(self, backend) -> "Layer":
        """Move parameters, gradients and state onto ``backend``'s device (``Sequential.to``)."""
        for table in (self.params, self.grads, self.state):
            for k in table:
                table[k] = backend.asarray(table[k])
        self.drop_scratch()
        return self

    def drop_scratch(self) -> None:
        """Forget the scratch memory (``backend.scratch``'s ``_bufs``) after a move or a dtype
        change: the next forward allocates afresh on the new device. What a forward keeps for its
        backward is replaced by the next forward; a layer's own private arrays are left alone."""
        self.__dict__.pop("_bufs", None)

    # -- helpers shared by subclasses -----------------------------------------------------
    def _check(self, x) -> None:
        if self.input_spec is not None:
            check_input(self, x, self.input_spec)
        elif getattr(x, "ndim", 0) < 1:
            raise ValueError(f"{self!r}: expected a batch array of shape (n, ...), received {x!r}")

    def _alloc(self, name: str, shape, dtype=DTYPE):
        """Create parameter ``name`` and its gradient, both zeros of ``shape``."""
        self.params[name] = ops.cpu().zeros(shape, dtype)
        self.grads[name] = ops.cpu().zeros(shape, dtype)
        return self.params[name]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


# -- argument checks shared by the constructors (values may come from a model file) -------
def built_like(cls, owner) -> bool:
    """Whether ``cls`` (``owner`` or a subclass) builds from a config exactly as ``owner`` does,
    so that ``owner``'s ``param_shapes`` rule holds for it."""
    return cls.__init__ is owner.__init__ and cls.from_config.__func__ is owner.from_config.__func__


def check_flag(where: str, name: str, value) -> bool:
    """A boolean argument: ``True``/``False`` (or 0/1), never a string or anything truthy."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{where}: expected {name} to be true or false, received {name}={value!r}")


def check_number(where: str, name: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number (not a bool) within ``[low, high]`` (bounds open when asked)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else math.nan
    if ok and math.isfinite(v):
        ok = (low is None or (v > low if low_open else v >= low)) and (
            high is None or (v < high if high_open else v <= high)
        )
    else:
        ok = False
    if not ok:
        rng = ""
        if low is not None or high is not None:
            lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
            hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
            rng = f" with {lo}{name}{hi}"
        raise ValueError(f"{where}: expected {name} to be a finite number{rng}, received {name}={value!r}")
    return v


def check_seed(where: str, value):
    """A seed for ``numpy.random.default_rng``: None, a non-negative integer, or a NumPy
    ``SeedSequence``/``BitGenerator``/``Generator``."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 0:
        return value
    raise ValueError(f"{where}: expected seed to be a non-negative integer or None, received seed={value!r}")
