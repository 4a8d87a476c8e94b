"""Named model architectures for the CLI and Python: ``vn.presets.build("mlp", input_shape, classes)``.

Each preset is a function ``(input_shape, n_classes) -> list of layers``; ``PRESETS`` maps the
names the CLI accepts to them.
"""
from __future__ import annotations

import math

from . import layers as L


def mlp(input_shape, n_classes, hidden=(256, 128), dropout=0.1):
    """Flatten, then Dense-ReLU(-Dropout) blocks of ``hidden`` units, then a Dense to logits."""
    layers, width = [], math.prod(input_shape)
    if len(input_shape) > 1:
        layers.append(L.Flatten())
    for units in hidden:
        layers += [L.Dense(width, units), L.ReLU()]
        if dropout:
            layers.append(L.Dropout(dropout))
        width = units
    layers.append(L.Dense(width, n_classes))
    return layers


PRESETS = {"mlp": mlp}


def build(name: str, input_shape, n_classes, seed=0):
    """A ``Sequential`` for preset ``name`` on per-sample ``input_shape`` with ``n_classes`` outputs."""
    from .model import Sequential

    try:
        make = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
    model = Sequential(make(tuple(input_shape), int(n_classes)), seed=seed)
    model.metadata["input_shape"] = list(input_shape)
    return model
