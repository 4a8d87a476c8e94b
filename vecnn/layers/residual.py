"""Residual block: ``y = f(x) + shortcut(x)``, the building block of a ResNet.

``f`` is a list of layers run in order; the shortcut is the identity or a projection (by
default a 1x1 ``Conv2D`` without bias, strided like ``f``) when ``f`` changes the channel
count or the image size. Backward adds the two paths' gradients.

The block is one layer to a ``Sequential``: its ``params`` / ``grads`` / ``state`` hold the
sub-layers' arrays under prefixed keys (``"f.0.W"``, ``"f.1.gamma"``, ``"proj.W"``), so the
flat buffers, optimizers and model files treat it like any other layer. When a ``Sequential``
rebinds ``params[k]`` to a view of its flat buffer, the rebinding is passed on to the
sub-layer that owns the entry, so the sub-layer computes with that same view.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import fmt_shape
from ..registry import LAYERS, check_config, lookup, register_layer
from .base import Layer, built_like

#: How deep residual blocks described by configs may nest inside one another (a ResNet nests
#: none; a model file naming hundreds of levels is refused before anything is built).
MAX_NESTING = 16


class _Linked(dict):
    """A dict of sub-layer arrays under prefixed keys. Setting a key also sets the entry of the
    sub-layer table it came from, so rebinding here rebinds there (no new keys allowed)."""

    def __init__(self, links: dict):
        super().__init__((key, table[sub]) for key, (table, sub) in links.items())
        self._links = links

    def __setitem__(self, key, value):
        try:
            table, sub = self._links[key]
        except KeyError:
            raise KeyError(
                f"{key!r}: a residual block's tables only hold its sub-layers' "
                f"entries ({', '.join(self._links) or 'none'})"
            ) from None
        table[sub] = value
        super().__setitem__(key, value)


def _spec_class(where: str, spec) -> tuple[type[Layer], dict]:
    """The registered class and the config of a ``{"name": ..., "config": ...}`` dict."""
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
        raise ValueError(
            f"{where}: expected a vecnn Layer or a {{'name': ..., 'config': ...}} dict, received {_short(spec)}"
        )
    config = spec.get("config")
    try:
        return lookup(LAYERS, "layer", spec["name"]), {} if config is None else config
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _layer(where: str, spec) -> Layer:
    """A layer from a Layer instance or a ``{"name": ..., "config": ...}`` dict (the registry)."""
    if isinstance(spec, Layer):
        return spec
    cls, config = _spec_class(where, spec)
    return cls.from_config(config)


def _short(value, limit=80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_nesting(where: str, layers, projection) -> None:
    """Refuse configs whose residual blocks nest more than ``MAX_NESTING`` deep (walked without
    recursion, so even a pathological config cannot exhaust the stack)."""
    todo = [(spec, 1) for spec in [*(layers if isinstance(layers, (list, tuple)) else []), projection]]
    while todo:
        spec, depth = todo.pop()
        if isinstance(spec, dict) and spec.get("name") == Residual.registered_name:
            if depth >= MAX_NESTING:
                raise ValueError(f"{where}: residual blocks nested more than {MAX_NESTING} deep")
            config = spec.get("config")
            if isinstance(config, dict):
                inner = config.get("layers")
                todo += [
                    (s, depth + 1)
                    for s in [*(inner if isinstance(inner, (list, tuple)) else []), config.get("projection")]
                ]


def _spec(layer: Layer) -> dict:
    return {"name": type(layer).registered_name, "config": layer.config()}


@register_layer
class Residual(Layer):
    """``y = f(x) + shortcut(x)`` with ``f`` the ``layers`` in order.

    Parameters
    ----------
    layers : list of Layer (or ``{"name": ..., "config": ...}`` dicts, as in a model file)
    projection : None, True, Layer or dict
        ``None``: identity shortcut (``f`` must keep the shape). ``True``: a bias-free 1x1
        ``Conv2D`` from the first convolution's input channels to the last one's output
        channels, with the product of the convolutions' strides. Or any layer (or its dict).

    Examples
    --------
    >>> import numpy as np, vecnn as vn
    >>> from vecnn import layers as L
    >>> block = L.Residual([L.Conv2D(8, 16, 3, stride=2, padding=1), L.ReLU(),
    ...                     L.Conv2D(16, 16, 3, padding=1)], projection=True)
    >>> block.forward(np.zeros((2, 8, 10, 10), np.float32)).shape
    (2, 16, 5, 5)
    """

    def __init__(self, layers, projection=None):
        super().__init__()
        self._check_args(layers, projection)
        self.layers = [_layer(f"Residual: layers[{i}]", spec) for i, spec in enumerate(layers)]
        if projection is True:
            projection = self._auto_projection()
        self.projection = None if projection in (None, False) else _layer("Residual: projection", projection)
        self._link()
        self.input_spec = self.layers[0].input_spec
        if self.input_spec is None and self.projection is not None:
            self.input_spec = self.projection.input_spec
        self.input_grad = True

    @staticmethod
    def _check_args(layers, projection=None):
        if isinstance(layers, (Layer, dict)) or not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"Residual: expected a non-empty list of layers, received {_short(layers)}")
        if not (projection is None or isinstance(projection, (bool, Layer, dict))):
            raise ValueError(
                f"Residual: expected projection to be None, true, a Layer or a "
                f"{{'name': ..., 'config': ...}} dict, received {_short(projection)}"
            )
        _check_nesting("Residual", layers, projection)

    @classmethod
    def param_shapes(cls, config):
        from .conv import Conv2D

        if not built_like(cls, Residual):
            return super().param_shapes(config)
        config = check_config(cls, config)
        layers, projection = config.get("layers"), config.get("projection")
        cls._check_args(layers, projection)
        params, state = {}, {}

        def add(prefix, sub):
            p, s = sub
            params.update((prefix + k, v) for k, v in p.items())
            state.update((prefix + k, v) for k, v in s.items())

        convs = []  # (class, config or instance) of each Conv2D
        for i, spec in enumerate(layers):
            where = f"Residual: layers[{i}]"
            if isinstance(spec, Layer):
                sub, sub_config = type(spec), spec
                add(
                    f"f.{i}.",
                    ({k: v.shape for k, v in spec.params.items()}, {k: v.shape for k, v in spec.state.items()}),
                )
            else:
                sub, sub_config = _spec_class(where, spec)
                try:
                    add(f"f.{i}.", sub.param_shapes(sub_config))
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
            if projection is True and issubclass(sub, Conv2D):
                convs.append((sub, sub_config))
        if projection is True:
            if not convs:
                raise ValueError(
                    "Residual: projection=True needs a Conv2D in layers to take the "
                    "channel counts from; pass the projection layer itself instead"
                )
            if not all(built_like(c, Conv2D) and isinstance(cfg, dict) for c, cfg in convs):
                return super().param_shapes(config)  # (instances, or a user's Conv2D: build it)
            cin = Conv2D._check_args(**convs[0][1])[0]
            cout = Conv2D._check_args(**convs[-1][1])[1]
            add("proj.", ({"W": (cout, cin, 1, 1)}, {}))
        elif isinstance(projection, Layer):
            add(
                "proj.",
                ({k: v.shape for k, v in projection.params.items()}, {k: v.shape for k, v in projection.state.items()}),
            )
        elif isinstance(projection, dict):
            sub, sub_config = _spec_class("Residual: projection", projection)
            try:
                add("proj.", sub.param_shapes(sub_config))
            except ValueError as e:
                raise ValueError(f"Residual: projection: {e}") from None
        return params, state

    def _auto_projection(self):
        from .conv import Conv2D

        convs = [l for l in self.layers if isinstance(l, Conv2D)]
        if not convs:
            raise ValueError(
                "Residual: projection=True needs a Conv2D in layers to take the "
                "channel counts from; pass the projection layer itself instead"
            )
        stride = [1, 1]
        for c in convs:
            stride = [stride[0] * c.stride[0], stride[1] * c.stride[1]]
        return Conv2D(
            convs[0].in_channels,
            convs[-1].out_channels,
            1,
            stride=stride[0] if stride[0] == stride[1] else stride,
            bias=False,
        )

    def _parts(self):
        parts = [(f"f.{i}.", l) for i, l in enumerate(self.layers)]
        return parts + ([("proj.", self.projection)] if self.projection is not None else [])

    def _link(self):
        """(Re)gather the sub-layers' tables under prefixed keys."""
        for name in ("params", "grads", "state"):
            links = {prefix + k: (getattr(l, name), k) for prefix, l in self._parts() for k in getattr(l, name)}
            setattr(self, name, _Linked(links))

    # -- the flag Sequential sets on its first layer --------------------------------------
    @property
    def input_grad(self):
        return self._input_grad

    @input_grad.setter
    def input_grad(self, value):
        self._input_grad = bool(value)
        if "layers" in self.__dict__:  # (not yet while the constructor runs)
            self.layers[0].input_grad = self._input_grad  # no dX wanted: f's first layer
            if getattr(self, "projection", None) is not None:  # and the projection skip it
                self.projection.input_grad = self._input_grad

    # -- the computation -------------------------------------------------------------------
    def forward(self, x, training=False):
        h = x
        for layer in self.layers:
            h = layer.forward(h, training)
        s = x if self.projection is None else self.projection.forward(x, training)
        if h.shape != s.shape:
            raise ValueError(
                f"{self!r}: the residual path gives {fmt_shape(h.shape)} but the shortcut gives "
                f"{fmt_shape(s.shape)} for input {fmt_shape(getattr(x, 'shape', ()))}; "
                f"use projection=True (or a projection layer) when f changes the shape"
            )
        return h + s

    def backward(self, grad_y):
        g = grad_y
        for layer in reversed(self.layers):
            g = layer.backward(g)  # (None from the first when no dX wanted)
        gs = grad_y if self.projection is None else self.projection.backward(grad_y)
        if not self._input_grad:
            return None
        return g + gs  # both paths carry dL/dx

    def sublayers(self):
        return [*self.layers, *([self.projection] if self.projection is not None else [])]

    def check_state(self):
        for layer in self.sublayers():
            layer.check_state()

    # -- configuration ---------------------------------------------------------------------
    def config(self):
        return {
            "layers": [_spec(l) for l in self.layers],
            "projection": None if self.projection is None else _spec(self.projection),
        }

    def init_params(self, rng):
        seeds = rng.integers(0, 2**63, size=len(self._parts()))
        for (_, layer), seed in zip(self._parts(), seeds):
            layer.init_params(np.random.default_rng(int(seed)))

    def astype(self, dtype):
        for _, layer in self._parts():
            layer.astype(dtype)
        self._link()
        return self

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        short = (
            tuple(input_shape) if self.projection is None else tuple(self.projection.output_shape(tuple(input_shape)))
        )
        if shape != short:
            raise ValueError(
                f"{self!r}: the residual path gives {fmt_shape((None, *shape))} but the "
                f"shortcut gives {fmt_shape((None, *short))} for input "
                f"{fmt_shape((None, *input_shape))}; use projection=True (or a "
                f"projection layer) when f changes the shape"
            )
        return shape

    def flops(self, input_shape):
        total, shape = 0, tuple(input_shape)
        for layer in self.layers:
            total += layer.flops(shape)
            shape = tuple(layer.output_shape(shape))
        if self.projection is not None:
            total += self.projection.flops(tuple(input_shape))
        return total + math.prod(shape)  # the addition

    def __repr__(self):
        inner = ", ".join(type(l).__name__ for l in self.layers)
        proj = "" if self.projection is None else f", projection={type(self.projection).__name__}"
        return f"Residual([{inner}]{proj})"
