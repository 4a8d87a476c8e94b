"""Loop twin of inverted Dropout.

The mask is part of the configuration here: the layer draws it from its generator, so the twin
draws the *same* mask from a copy of that generator (``copy.deepcopy(layer.rng)``) with exactly
the layer's call, ``rng.random(x.shape, dtype=np.float32) >= rate``. The copy leaves the
layer's generator where it was; both ``forward`` and ``backward`` therefore expect
``layer.rng`` in the state it had before the layer's own forward pass (the seed state).
"""

from __future__ import annotations

import copy

import numpy as np

from . import check_shape, map_nested, register_twin, to_array


def keep_mask(layer, x) -> list:
    """Nested lists of booleans: True where the element is kept."""
    rng = copy.deepcopy(layer.rng)
    return (rng.random(x.shape, dtype=np.float32) >= layer.rate).tolist()


def _apply(layer, x, values, training):
    """``v / (1 - rate)`` where kept, ``0`` where dropped; the identity in eval mode."""
    check_shape(layer, x)
    if not training or layer.rate == 0:
        return to_array(values.tolist(), x.dtype)
    scale = 1.0 / (1.0 - layer.rate)
    return to_array(
        map_nested(lambda v, keep: v * scale if keep else 0.0, values.tolist(), keep_mask(layer, x)), x.dtype
    )


@register_twin("Dropout")
class DropoutTwin:
    @staticmethod
    def forward(layer, x, training=False):
        return _apply(layer, x, x, training)

    @staticmethod
    def backward(layer, x, grad_y, training=False):
        return _apply(layer, x, grad_y, training), {}  # the same mask and scale on the way back
