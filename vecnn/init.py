"""Weight initializers: each fills an array in place from a seeded Generator.

``fan_in`` / ``fan_out`` follow PyTorch's convention for dense ``(in, out)`` weights and conv
``(out, in, kh, kw)`` weights, so the scales match the frameworks people compare against.
"""

from __future__ import annotations

import math

import numpy as np


def fans(shape: tuple, layout: str = "dense") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight. ``layout`` is ``"dense"`` (in, out) or ``"conv"`` (out, in, kh, kw)."""
    if layout == "dense":
        return int(shape[0]), int(shape[1])
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _normal(rng, W, std):
    W[...] = rng.standard_normal(W.shape, dtype=np.float32 if W.dtype == np.float32 else np.float64) * std


def he(W, rng, layout="dense"):
    """He (Kaiming) normal: std = sqrt(2 / fan_in). For ReLU networks."""
    _normal(rng, W, math.sqrt(2.0 / fans(W.shape, layout)[0]))


def xavier(W, rng, layout="dense"):
    """Xavier (Glorot) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). For tanh / sigmoid."""
    fan_in, fan_out = fans(W.shape, layout)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    W[...] = rng.uniform(-a, a, W.shape)


def lecun(W, rng, layout="dense"):
    """LeCun normal: std = sqrt(1 / fan_in). For SELU-like or linear layers."""
    _normal(rng, W, math.sqrt(1.0 / fans(W.shape, layout)[0]))


INITIALIZERS = {"he": he, "kaiming": he, "xavier": xavier, "glorot": xavier, "lecun": lecun}


def get(name: str):
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initializer {name!r}; expected one of {sorted(INITIALIZERS)}") from None
