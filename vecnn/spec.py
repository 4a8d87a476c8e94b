"""Layer spec strings: ``"dense:256,relu,dropout:0.2,dense:10"`` -> a list of layers.

Sizes that follow from the data are inferred: a dense layer's input width, a conv layer's
input channels, a batch norm's feature count. A ``flatten`` is inserted before the first
dense layer when the inputs are images. Tokens (arguments after colons):

    dense:UNITS   conv:OUT:KERNEL[:STRIDE[:PADDING]]   maxpool:K[:STRIDE]   avgpool:K[:STRIDE]
    gap   flatten   bn   dropout:RATE   relu   leakyrelu[:SLOPE]   sigmoid   tanh   gelu   softmax
"""
from __future__ import annotations

import math

from . import layers as L


def _num(text, kind, token_no, token):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"token {token_no} {token!r}: expected {kind.__name__} argument, received {text!r}") from None


def parse(spec: str, input_shape: tuple) -> list:
    """Layers for ``spec`` applied to per-sample ``input_shape`` (e.g. ``(1, 28, 28)``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec: expected a string such as 'dense:256,relu,dense:10', received {spec!r}")
    shape, out = tuple(input_shape), []
    for no, token in enumerate((t.strip() for t in spec.split(",")), start=1):
        name, *args = token.lower().split(":")

        def arg(i, kind=int, default=None):
            if i < len(args):
                return _num(args[i], kind, no, token)
            if default is None:
                raise ValueError(f"model spec {spec!r}: token {no} {token!r}: missing argument {i + 1} "
                                 f"(see `vecnn train --help` for the token forms)")
            return default

        try:
            layer = _make(name, arg, args, shape, out)
        except ValueError as e:
            msg = str(e)
            if not msg.startswith("model spec"):
                msg = f"model spec {spec!r}: token {no} {token!r}: {msg}"
            raise ValueError(msg) from None
        if isinstance(layer, list):                       # flatten inserted before dense
            out.extend(layer)
            for l in layer:
                shape = l.output_shape(shape)
        else:
            out.append(layer)
            shape = layer.output_shape(shape)
    return out


def _make(name, arg, args, shape, built):
    if name == "dense":
        units = arg(0)
        if len(shape) > 1:
            return [L.Flatten(), L.Dense(math.prod(shape), units)]
        return L.Dense(shape[0], units)
    if name in ("conv", "conv2d"):
        _need_image(name, shape)
        return L.Conv2D(shape[0], arg(0), arg(1), stride=arg(2, default=1), padding=arg(3, int, 0) if len(args) > 3 else 0)
    if name in ("maxpool", "avgpool"):
        _need_image(name, shape)
        cls = L.MaxPool2D if name == "maxpool" else L.AvgPool2D
        return cls(arg(0), stride=arg(1) if len(args) > 1 else None)
    if name == "gap":
        _need_image(name, shape)
        return L.GlobalAvgPool2D()
    if name == "bn":
        return L.BatchNorm2D(shape[0]) if len(shape) == 3 else L.BatchNorm1D(shape[0])
    if name == "dropout":
        return L.Dropout(arg(0, float))
    if name == "leakyrelu":
        return L.LeakyReLU(arg(0, float, 0.01))
    if name == "gelu":
        return L.GELU("tanh" if args[:1] == ["tanh"] else "none")
    simple = {"relu": L.ReLU, "sigmoid": L.Sigmoid, "tanh": L.Tanh, "softmax": L.Softmax, "flatten": L.Flatten}
    if name in simple:
        return simple[name]()
    known = "dense, conv, maxpool, avgpool, gap, flatten, bn, dropout, relu, leakyrelu, sigmoid, tanh, gelu, softmax"
    raise ValueError(f"unknown layer {name!r}; known: {known}")


def _need_image(name, shape):
    if len(shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W), but its input here has shape {shape}")
