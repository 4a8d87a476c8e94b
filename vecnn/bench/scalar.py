"""The bottom rung of the ladder: scalar Python loops over Python floats.

Layers and losses use their loop twins (``vecnn.reference``). A training step needs two loops
the twins do not have, written here in the same style: the first Dense layer's parameter
gradients without its input gradient (nobody needs ``dL/dX`` of the data, and the whole-batch
model skips it too, so the rungs do the same work), and the Adam update, one float at a time.
"""
from __future__ import annotations

import math

from .. import reference as R
from ..layers.dense import Dense
from ..reference import to_array, zeros


def dense_param_grads(layer, x, grad_y):
    """``{"W": X^T dZ, "b": sum_i dZ_i}`` of a Dense layer with three nested loops, no ``dX``."""
    X, dZ = x.tolist(), grad_y.tolist()                    # (n, in), (n, out)
    n, n_in, n_out = len(X), layer.in_features, layer.out_features
    dW, db = zeros((n_in, n_out)), zeros((n_out,))
    for i in range(n):
        for j in range(n_out):
            g = dZ[i][j]
            db[j] += g
            for k in range(n_in):
                dW[k][j] += X[i][k] * g
    dtype = layer.params["W"].dtype
    grads = {"W": to_array(dW, dtype)}
    if layer.bias:
        grads["b"] = to_array(db, dtype)
    return grads


def mlp_grads(layers, loss, X, y):
    """Loss value and per-layer gradient dicts of one batch, computed by the loop twins."""
    acts = [X]
    for layer in layers:
        acts.append(R.forward(layer, acts[-1], training=True))
    value = R.loss_forward(loss, acts[-1], y)
    g = R.loss_backward(loss, acts[-1], y)
    grads = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        if k == 0 and isinstance(layers[0], Dense):
            grads[0] = dense_param_grads(layers[0], acts[0], g)
        else:
            g, grads[k] = R.backward(layers[k], acts[k], g, training=True)
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
    step, inv_sqrt_bc2 = lr / (1 - b1 ** t), 1 / math.sqrt(1 - b2 ** t)
    for (p_arr, g_arr), m, v in zip(arrays, state["m"], state["v"]):
        p, g = p_arr.ravel().tolist(), g_arr.ravel().tolist()
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= step * m[i] / (math.sqrt(v[i]) * inv_sqrt_bc2 + eps)
        p_arr[...] = to_array(p, p_arr.dtype).reshape(p_arr.shape)
