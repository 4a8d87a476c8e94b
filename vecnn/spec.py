"""Layer spec strings: ``"dense:256,relu,dropout:0.2,dense:10"`` -> a list of layers.

Sizes that follow from the data are inferred: a dense layer's input width, a conv layer's
input channels, a batch norm's feature count. A ``flatten`` is inserted before the first
dense layer when the inputs are images. Tokens (arguments after colons):

    dense:UNITS   conv:OUT:KERNEL[:STRIDE[:PADDING]]   maxpool:K[:STRIDE]   avgpool:K[:STRIDE]
    gap   flatten   bn   dropout:RATE   relu   leakyrelu[:SLOPE]   sigmoid   tanh   gelu[:tanh]   softmax

Every token is checked before its layer is built: the number of arguments (``dense:10:20``
and ``relu:5`` are errors, not silently truncated), each argument's type and range
(``dropout:1.5``, ``leakyrelu:nan``, ``dense:0``), that windows fit the image they slide over
(``maxpool:9`` on 8x8 images), and that parameter counts stay within ``vecnn.limits``.
Errors are ``ValueError``s naming the spec, the token's position and the token.
"""

from __future__ import annotations

import math
from typing import Any

from . import layers as L
from . import limits
from .layers.conv import out_size

# token name -> its arguments: (what, type, check, default); a default of _REQUIRED is required
_REQUIRED = object()
_POS = (lambda v: v >= 1, "a positive integer")
_NONNEG = (lambda v: v >= 0, "a non-negative integer")
_RATE = (lambda v: 0 <= v < 1, "a number in [0, 1)")
_FINITE = (lambda v: math.isfinite(v), "a finite number")
_GELU_FORMS = {"tanh": "tanh", "erf": "none", "none": "none", "exact": "none"}
_GELU = (lambda v: v in _GELU_FORMS, "tanh or erf")

TOKENS: dict[str, list[tuple[str, Any, tuple[Any, str], Any]]] = {
    "dense": [("units", int, _POS, _REQUIRED)],
    "conv": [
        ("out_channels", int, _POS, _REQUIRED),
        ("kernel", int, _POS, _REQUIRED),
        ("stride", int, _POS, 1),
        ("padding", int, _NONNEG, 0),
    ],
    "maxpool": [("kernel", int, _POS, _REQUIRED), ("stride", int, _POS, None)],
    "avgpool": [("kernel", int, _POS, _REQUIRED), ("stride", int, _POS, None)],
    "gap": [],
    "flatten": [],
    "bn": [],
    "dropout": [("rate", float, _RATE, _REQUIRED)],
    "relu": [],
    "sigmoid": [],
    "tanh": [],
    "softmax": [],
    "leakyrelu": [("slope", float, _FINITE, 0.01)],
    "gelu": [("form", str, _GELU, "erf")],
}
ALIASES = {"conv2d": "conv"}


def _usage(name) -> str:
    parts = [name]
    required = True
    for what, *_, default in TOKENS[name]:
        if default is not _REQUIRED and required:
            required = False
        parts.append(what.upper() if required else f"[{what.upper()}]")
    return ":".join(parts)


def _arguments(name, args) -> list:
    """The token's arguments converted and checked, defaults filled in."""
    spec = TOKENS[name]
    n_required = sum(d is _REQUIRED for *_, d in spec)
    if not n_required <= len(args) <= len(spec):
        expected = (
            "no arguments"
            if not spec
            else f"{n_required} argument{'s' * (n_required != 1)}"
            if n_required == len(spec)
            else f"{n_required} to {len(spec)} arguments"
        )
        raise ValueError(f"expected {expected} ({_usage(name)}), received {len(args)}")
    values = []
    for i, (what, kind, (ok, text), default) in enumerate(spec):
        if i >= len(args):
            values.append(default)
            continue
        raw = args[i].strip()
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{what}: expected {text}, received {raw!r}") from None
        if not ok(value):
            raise ValueError(f"{what}: expected {text}, received {raw!r}")
        values.append(value)
    return values


def parse(spec: str, input_shape: tuple, batch_size: int = 1) -> list:
    """Layers for ``spec`` applied to per-sample ``input_shape`` (e.g. ``(1, 28, 28)``).

    Before each layer with weights is allocated, the memory that training it would take
    (parameters and optimizer state, and ``batch_size`` samples' activations) is checked
    against what the machine has available (``vecnn.limits.check_memory``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec: expected a string such as 'dense:256,relu,dense:10', received {spec!r}")
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"model spec {spec!r}: the samples have shape {shape}: no features to build a model on")
    out, n_params, n_act = [], 0, math.prod(shape)

    def budget(params, activations):
        """Before a layer with weights is allocated: will training the model up to it fit?"""
        limits.check_memory(
            f"training the model up to here (batch {batch_size})",
            (n_params + params) * limits.TRAINING_BYTES_PER_PARAM
            + (n_act + activations) * batch_size * limits.TRAINING_BYTES_PER_ACTIVATION,
        )

    for no, token in enumerate((t.strip() for t in spec.split(",")), start=1):
        try:
            if not token:
                raise ValueError("empty token (two commas in a row, or one at an end?)")
            name, *args = token.lower().split(":")
            name = ALIASES.get(name, name)
            if name not in TOKENS:
                raise ValueError(f"unknown layer {name!r}; known: {', '.join(TOKENS)}")
            values = _arguments(name, args)
            made = _make(name, values, shape, budget)
            for layer in made if isinstance(made, list) else [made]:
                n_params = limits.check_size(
                    "parameters of the model up to here",
                    n_params + _param_count(layer),
                    limits.MAX_PARAMS,
                    "VECNN_MAX_PARAMS",
                )
                new = tuple(layer.output_shape(shape))
                if any(d < 1 for d in new):
                    raise ValueError(f"its output would be empty (shape {new} from input {shape})")
                limits.check_shape("output of one sample", new)
                out.append(layer)
                shape = new
                n_act += math.prod(new)
        except ValueError as e:
            raise ValueError(f"model spec {spec!r}: token {no} {token!r}: {e}") from None
    return out


def _param_count(layer) -> int:
    return sum(v.size for v in layer.params.values())


def _make(name, values, shape, budget):
    """The layer(s) for one checked token at per-sample input ``shape``; sizes are checked
    against the limits, and ``budget(parameters, activations per sample)`` against the memory,
    before anything is allocated."""
    if name == "dense":
        (units,) = values
        width = math.prod(shape)
        limits.check_size(
            f"dense weights ({width:,} x {units:,})", width * units, limits.MAX_PARAMS, "VECNN_MAX_PARAMS"
        )
        budget(width * units, units)
        if len(shape) > 1:
            return [L.Flatten(), L.Dense(width, units)]
        return L.Dense(width, units)
    if name == "conv":
        _need_image(name, shape)
        out, k, stride, padding = values
        _fits(shape, k, padding, "kernel")
        limits.check_size(
            f"conv weights ({out:,} x {shape[0]:,} x {k} x {k})",
            out * shape[0] * k * k,
            limits.MAX_PARAMS,
            "VECNN_MAX_PARAMS",
        )
        positions = math.prod(out_size(d, k, stride, padding) for d in shape[1:])
        budget(out * shape[0] * k * k, (out + shape[0] * k * k) * positions)  # output and im2col columns
        return L.Conv2D(shape[0], out, k, stride=stride, padding=padding)
    if name in ("maxpool", "avgpool"):
        _need_image(name, shape)
        k, stride = values
        _fits(shape, k, 0, "window")
        cls = L.MaxPool2D if name == "maxpool" else L.AvgPool2D
        return cls(k, stride=stride)
    if name == "gap":
        _need_image(name, shape)
        return L.GlobalAvgPool2D()
    if name == "bn":
        if len(shape) not in (1, 3):
            raise ValueError(f"bn needs (features,) or image (C, H, W) input, but its input here has shape {shape}")
        return L.BatchNorm2D(shape[0]) if len(shape) == 3 else L.BatchNorm1D(shape[0])
    if name == "dropout":
        return L.Dropout(values[0])
    if name == "leakyrelu":
        return L.LeakyReLU(values[0])
    if name == "gelu":
        return L.GELU(_GELU_FORMS[values[0]])
    return {"relu": L.ReLU, "sigmoid": L.Sigmoid, "tanh": L.Tanh, "softmax": L.Softmax, "flatten": L.Flatten}[name]()


def _need_image(name, shape):
    if len(shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W), but its input here has shape {shape}")


def _fits(shape, k, padding, what):
    _, h, w = shape
    if k > min(h, w) + 2 * padding:
        pad = f" padded by {padding}" if padding else ""
        raise ValueError(f"the input is only {h}x{w}{pad}, smaller than the {k}x{k} {what}")
