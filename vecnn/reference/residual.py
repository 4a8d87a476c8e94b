"""Loop twin of Residual: ``y = f(x) + shortcut(x)``, built from the sub-layers' own twins.

The forward pass runs the twins of ``f``'s layers in order (keeping each one's input, since a
twin recomputes rather than caches) and of the projection, then adds the two paths value by
value. Backward runs the twins backward through ``f`` and the projection and adds the two
gradients of ``x``; parameter gradients come back under the block's prefixed keys.
"""

from __future__ import annotations

from . import backward as twin_backward
from . import forward as twin_forward
from . import map_nested, register_twin, to_array


def _add(a, b, dtype):
    return to_array(map_nested(lambda u, v: u + v, a.tolist(), b.tolist()), dtype)


@register_twin("Residual")
class ResidualTwin:
    @staticmethod
    def forward(layer, x, training=False):
        h = x
        for sub in layer.layers:
            h = twin_forward(sub, h, training)
        s = x if layer.projection is None else twin_forward(layer.projection, x, training)
        if tuple(h.shape) != tuple(s.shape):
            raise ValueError(f"reference twin of {layer!r}: paths give {tuple(h.shape)} and {tuple(s.shape)}")
        return _add(h, s, x.dtype)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        inputs = [x]  # the input of every layer of f
        for sub in layer.layers[:-1]:
            inputs.append(twin_forward(sub, inputs[-1], training))
        grads = {}
        g = grad_y
        for i in reversed(range(len(layer.layers))):
            g, sub_grads = twin_backward(layer.layers[i], inputs[i], g, training)
            grads.update({f"f.{i}.{k}": v for k, v in sub_grads.items()})
        gs = grad_y
        if layer.projection is not None:
            gs, proj_grads = twin_backward(layer.projection, x, grad_y, training)
            grads.update({f"proj.{k}": v for k, v in proj_grads.items()})
        return _add(g, gs, x.dtype), grads
