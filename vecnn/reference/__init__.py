"""The loop twins: every layer and loss written the textbook way, before vectorization.

Each twin computes the same math as its vectorized layer with plain Python loops over samples,
units and channels, on Python floats (``math.exp``, ``math.tanh``, ``math.erf``): no matrix
products, no array reductions. The tests run each twin next to its layer (with the layer's own
``forward``/``backward`` patched to raise) and the benchmark times them side by side, so the
speed of vectorization is measured against code that is easy to check by eye.

Public API
----------
``forward(layer, x, training=False) -> y``
``backward(layer, x, grad_y, training=False) -> (grad_x, grads)``
    ``grads`` has the same keys and shapes as ``layer.params``. Both return NumPy arrays with the
    input's dtype (gradients of parameters: the parameters' dtype).
``loss_forward(loss, pred, target) -> float`` and ``loss_backward(loss, pred, target) -> grad_pred``
    for the losses (CrossEntropy with label smoothing, MSE, BCEWithLogits).

Writing a twin (a new file in this package is imported automatically)
----------------------------------------------------------------------
Register an object that has ``forward`` and ``backward`` callables under the layer's registered
name (the class name for built-in layers)::

    from . import register_twin

    @register_twin("Dense")
    class DenseTwin:
        @staticmethod
        def forward(layer, x, training=False): ...        # -> y
        @staticmethod
        def backward(layer, x, grad_y, training=False): ...  # -> (grad_x, grads_dict)

Losses use ``@register_loss_twin("cross_entropy")`` (the loss's registered name) with
``forward(loss, pred, target) -> float`` and ``backward(loss, pred, target) -> grad_pred``.

The rules a twin keeps (``tests/test_reference.py`` enforces them):

- it reads only the layer's configuration (``layer.config()`` and the public attributes set from
  it), ``layer.params``, and ``layer.state`` where the math needs it (BatchNorm in eval mode);
- it never calls the layer's ``forward``/``backward`` and never reads its cache (attributes
  starting with ``_``): a twin is a pure function of configuration, parameters and input, so
  ``backward`` recomputes whatever the forward pass would have cached;
- it turns arrays into nested lists (``.tolist()``) and loops; no ``@``, ``np.dot``, ``np.sum``,
  ``np.mean``, ``.max()`` or any other arithmetic on arrays. The result goes back to an array
  (``to_array``) only at the very end.

The helpers below (``to_array``, ``zeros``, ``map_nested``, ``flatten``, ``unflatten``,
``check_shape``) are shared by the twin files.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np

#: layer name -> twin (an object with ``forward`` and ``backward``)
TWINS: dict[str, object] = {}
#: loss name -> twin (an object with ``forward`` and ``backward``)
LOSS_TWINS: dict[str, object] = {}


def _register(table: dict, kind: str, name: str):
    if not isinstance(name, str):
        raise TypeError(
            f"register_{kind}: expected the registered name as a string, received {name!r}; "
            f'write @register_{kind}("Name")'
        )

    def add(twin):
        for method in ("forward", "backward"):
            if not callable(getattr(twin, method, None)):
                raise TypeError(f"register_{kind}({name!r}): {twin!r} has no callable {method}()")
        table[name] = twin
        return twin

    return add


def register_twin(layer_name: str):
    """Decorator: register the loop twin of the layer whose registered name is ``layer_name``."""
    return _register(TWINS, "twin", layer_name)


def register_loss_twin(loss_name: str):
    """Decorator: register the loop twin of the loss whose registered name is ``loss_name``."""
    return _register(LOSS_TWINS, "loss_twin", loss_name)


def _lookup(table: dict, what: str, obj):
    cls = type(obj)
    for name in (getattr(cls, "registered_name", None), cls.__name__):
        if name in table:
            return table[name]
    known = ", ".join(sorted(table))
    raise ValueError(f"vecnn.reference: no loop twin for {what} {cls.__name__!r}; known twins: {known}")


def get_twin(layer):
    """The twin registered for ``layer`` (by ``registered_name``, else class name)."""
    return _lookup(TWINS, "layer", layer)


def forward(layer, x, training=False):
    """Loop-twin forward pass of ``layer`` on the batch ``x``."""
    return get_twin(layer).forward(layer, x, training)


def backward(layer, x, grad_y, training=False):
    """Loop-twin backward pass: ``(grad_x, grads)`` for input ``x`` and output gradient ``grad_y``."""
    return get_twin(layer).backward(layer, x, grad_y, training)


def loss_forward(loss, pred, target) -> float:
    """Loop-twin loss value (PyTorch's ``reduction="mean"``)."""
    return _lookup(LOSS_TWINS, "loss", loss).forward(loss, pred, target)


def loss_backward(loss, pred, target):
    """Loop-twin gradient of the loss with respect to ``pred``."""
    return _lookup(LOSS_TWINS, "loss", loss).backward(loss, pred, target)


# -- helpers shared by the twin files ---------------------------------------------------------
def to_array(nested, dtype):
    """Nested lists of Python floats -> an array of ``dtype`` (the only array made by a twin)."""
    return np.array(nested, dtype=dtype)


def zeros(shape) -> list | float:
    """Nested lists of ``0.0`` with ``shape``: the twin's accumulator."""
    if len(shape) == 0:
        return 0.0
    return [zeros(shape[1:]) for _ in range(shape[0])]


def map_nested(f, *nested):
    """Apply ``f`` to matching Python floats of equally shaped nested lists (any rank)."""
    if isinstance(nested[0], list):
        return [map_nested(f, *items) for items in zip(*nested)]
    return f(*nested)


def flatten(nested) -> list:
    """All floats of a nested list in C order."""
    if not isinstance(nested, list):
        return [nested]
    out = []
    for item in nested:
        out.extend(flatten(item))
    return out


def unflatten(flat: list, shape) -> list:
    """Inverse of ``flatten``: cut ``flat`` (C order) into nested lists of ``shape``."""
    if len(shape) == 0:
        return flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [unflatten(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def check_shape(layer, x) -> None:
    """Refuse input the layer would refuse (from its configured ``input_spec``)."""
    from ..errors import check_input

    spec = getattr(layer, "input_spec", None)
    if spec is not None:
        check_input(f"reference twin of {layer!r}", x, spec)
    elif getattr(x, "ndim", 0) < 1:
        raise ValueError(f"reference twin of {layer!r}: expected a batch array of shape (n, ...), received {x!r}")


# every module of this package registers its twins on import: adding a file adds twins
def _import_twin_modules():
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_twin_modules()

__all__ = [
    "forward",
    "backward",
    "loss_forward",
    "loss_backward",
    "register_twin",
    "register_loss_twin",
    "get_twin",
    "TWINS",
    "LOSS_TWINS",
]
