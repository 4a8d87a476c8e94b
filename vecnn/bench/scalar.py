"""The bottom rung of the ladder: scalar Python loops over Python floats.

Layers and losses use their loop twins (``vecnn.reference``); like the layers, the first
Dense twin of a model skips ``dL/dX`` of the data, so the rungs do the same work. A training
step needs one loop the twins do not have, written here in the same style: the Adam update,
one float at a time.
"""

from __future__ import annotations

import math

from .. import reference as R
from ..reference import to_array


def mlp_grads(layers, loss, X, y):
    """Loss value and per-layer gradient dicts of one batch, computed by the loop twins."""
    acts = [X]
    for layer in layers:
        acts.append(R.forward(layer, acts[-1], training=True))
    value = R.loss_forward(loss, acts[-1], y)
    g = R.loss_backward(loss, acts[-1], y)
    grads = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        g, grads[k] = R.backward(layers[k], acts[k], g, training=True)  # (no dX for layer 0)
    return value, grads


def adam_update(layers, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Adam (as ``torch.optim.Adam``) one Python float at a time; writes the new parameters into
    ``layer.params[k][...]``. ``state`` holds ``t`` and per-array lists ``m``, ``v``."""
    b1, b2 = betas
    arrays = [(layer.params[k], g[k]) for layer, g in zip(layers, grads) for k in layer.params]
    if "m" not in state:
        state.update(t=0, m=[[0.0] * p.size for p, _ in arrays], v=[[0.0] * p.size for p, _ in arrays])
    state["t"] += 1
    t = state["t"]
    step, inv_sqrt_bc2 = lr / (1 - b1**t), 1 / math.sqrt(1 - b2**t)
    for (p_arr, g_arr), m, v in zip(arrays, state["m"], state["v"]):
        p, g = p_arr.ravel().tolist(), g_arr.ravel().tolist()
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= step * m[i] / (math.sqrt(v[i]) * inv_sqrt_bc2 + eps)
        p_arr[...] = to_array(p, p_arr.dtype).reshape(p_arr.shape)
