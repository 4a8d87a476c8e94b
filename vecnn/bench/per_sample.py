"""The middle rung of the ladder: vectorized inside one sample, a Python loop over the batch.

This is how the classic textbook network trains: for each sample ``x_i`` it computes
``z_i = x_i @ W + b`` as a vector-matrix product and accumulates ``dW += outer(x_i, dz_i)``.
Every function here computes the same math as the vecnn layer of the same name (the tests
check forward values and gradients against the whole-batch layers), so the ladder compares
one computation written three ways. Parameters come in as plain arrays; nothing here reads a
layer's cache.

Shapes use the letters of the layers: ``X (n, in)``, ``W (in, out)``, ``b (out,)``; images
``(n, C, H, W)`` with conv weights ``(O, C, kh, kw)``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided


# -- Dense -------------------------------------------------------------------------------------
def dense_forward(W, b, X):
    """``Z[i] = X[i] @ W + b``, one vector-matrix product per sample."""
    Z = np.empty((len(X), W.shape[1]), W.dtype)  # (n, out)
    for i in range(len(X)):
        z = X[i] @ W  # (in,) @ (in, out) -> (out,)
        if b is not None:
            z += b
        Z[i] = z
    return Z


def dense_backward(W, X, dZ, input_grad=True):
    """``(dX, dW, db)``: per sample ``dW += outer(x_i, dz_i)``, ``db += dz_i``, ``dx_i = W @ dz_i``.
    ``dX`` is None when ``input_grad`` is False (a first layer needs no input gradient)."""
    dW = np.zeros_like(W)  # (in, out)
    db = np.zeros(W.shape[1], W.dtype)  # (out,)
    dX = np.empty((len(X), W.shape[0]), W.dtype) if input_grad else None
    for i in range(len(X)):
        dz = dZ[i]  # (out,)
        dW += np.outer(X[i], dz)  # (in, out)
        db += dz
        if input_grad:
            dX[i] = W @ dz  # (in, out) @ (out,) -> (in,)
    return dX, dW, db


# -- ReLU --------------------------------------------------------------------------------------
def relu_forward(X):
    Y = np.empty_like(X)
    for i in range(len(X)):
        Y[i] = np.maximum(X[i], 0)
    return Y


def relu_backward(X, dY):
    dX = np.empty_like(dY)
    for i in range(len(X)):
        dX[i] = dY[i] * (X[i] > 0)
    return dX


# -- softmax cross-entropy (mean over samples) ---------------------------------------------
def cross_entropy_forward(Z, y):
    """Mean over samples of ``logsumexp(z_i) - z_i[y_i]``, one row at a time."""
    total = 0.0
    for i in range(len(Z)):
        z = Z[i] - Z[i].max()  # (C,) shifted: exp never overflows
        total += float(np.log(np.exp(z).sum()) - z[y[i]])
    return total / len(Z)


def cross_entropy_backward(Z, y):
    """``(softmax(z_i) - onehot(y_i)) / n`` for each row."""
    n = len(Z)
    dZ = np.empty_like(Z)
    for i in range(n):
        e = np.exp(Z[i] - Z[i].max())  # (C,)
        p = e / e.sum()
        p[y[i]] -= 1
        dZ[i] = p / n
    return dZ


# -- Conv2D --------------------------------------------------------------------------------------
def _cols(x, kernel, stride, padding, dilation):
    """im2col of one image ``x (C, H, W)``: ``(Ho*Wo, C*kh*kw)``, in the weights' (C, kh, kw) order."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw))) if ph or pw else x  # (C, Hp, Wp)
    C, Hp, Wp = xp.shape
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    sC, sH, sW = xp.strides
    view = as_strided(xp, (Ho, Wo, C, kh, kw), (sH * sh, sW * sw, sC, sH * dh, sW * dw), writeable=False)
    return view.reshape(Ho * Wo, C * kh * kw), (Ho, Wo)  # reshape copies: the GEMV/GEMM operand


def conv_forward(W, b, X, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Per image: ``Y_i = (cols_i @ Wm^T + b)^T``, one matrix product per sample.

    Returns ``(Y, cache)``; the cache holds each sample's columns for ``conv_backward``."""
    O = W.shape[0]
    Wm = W.reshape(O, -1)  # (O, C*kh*kw)
    Y, cache = None, []
    for i in range(len(X)):
        cols, (Ho, Wo) = _cols(X[i], W.shape[2:], stride, padding, dilation)  # (L, K)
        y = cols @ Wm.T  # (L, O)
        if b is not None:
            y += b
        if Y is None:
            Y = np.empty((len(X), O, Ho, Wo), W.dtype)
        Y[i] = y.T.reshape(O, Ho, Wo)
        cache.append(cols)
    return Y, cache


def conv_backward(W, X, dY, cache, stride=(1, 1), padding=(0, 0), dilation=(1, 1), input_grad=True):
    """``(dX, dW, db)``: per image ``dW += dY_i cols_i``, ``dcols = dY_i^T Wm``, then col2im
    (one slice-add per kernel offset) into the padded input gradient."""
    O, C, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Wm = W.reshape(O, -1)  # (O, K)
    dWm = np.zeros_like(Wm)
    db = np.zeros(O, W.dtype)
    N, _, H, Wd = X.shape
    Ho, Wo = dY.shape[2:]
    dX = np.empty_like(X) if input_grad else None
    for i in range(N):
        dy = dY[i].reshape(O, Ho * Wo)  # (O, L)
        dWm += dy @ cache[i]  # (O, L) @ (L, K)
        db += dy.sum(axis=1)
        if not input_grad:
            continue
        dcols = (dy.T @ Wm).reshape(Ho, Wo, C, kh, kw)  # (L, K) -> per kernel offset
        dxp = np.zeros((C, H + 2 * ph, Wd + 2 * pw), W.dtype)
        for p in range(kh):
            for q in range(kw):
                rows = slice(p * dh, p * dh + sh * (Ho - 1) + 1, sh)
                cols = slice(q * dw, q * dw + sw * (Wo - 1) + 1, sw)
                dxp[:, rows, cols] += dcols[:, :, :, p, q].transpose(2, 0, 1)  # (C, Ho, Wo)
        dX[i] = dxp[:, ph : ph + H, pw : pw + Wd]
    return dX, dWm.reshape(W.shape), db


# -- one MLP training step (Dense-ReLU-...-Dense, softmax cross-entropy, Adam) -------------------
def mlp_grads(params, X, y):
    """Loss and gradients of an MLP, one sample at a time (the textbook backprop loop).

    ``params`` is a list of ``(W, b)``; ReLU between the layers; returns ``(loss, grads)`` with
    ``grads`` a list of ``(dW, db)``. The first layer's input gradient is not computed."""
    n = len(X)
    grads = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    total = 0.0
    for i in range(n):
        acts, zs = [X[i]], []  # activations per layer, (width,)
        for k, (W, b) in enumerate(params):
            z = acts[-1] @ W + b
            zs.append(z)
            if k < len(params) - 1:
                acts.append(np.maximum(z, 0))
        z = zs[-1] - zs[-1].max()  # logits, shifted
        e = np.exp(z)
        total += float(np.log(e.sum()) - z[y[i]])
        dz = e / e.sum()
        dz[y[i]] -= 1
        dz /= n  # mean over samples
        for k in range(len(params) - 1, -1, -1):
            dW, db = grads[k]
            dW += np.outer(acts[k], dz)
            db += dz
            if k:
                dz = (params[k][0] @ dz) * (zs[k - 1] > 0)  # through W, then through ReLU
    return total / n, grads


def adam_update(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Adam (as ``torch.optim.Adam``), one parameter array at a time, in place.
    ``state`` is a dict holding ``t`` and the lists ``m``, ``v`` (created on the first call)."""
    b1, b2 = betas
    flat_p = [a for pair in params for a in pair]
    flat_g = [a for pair in grads for a in pair]
    if "m" not in state:
        state.update(t=0, m=[np.zeros_like(p) for p in flat_p], v=[np.zeros_like(p) for p in flat_p])
    state["t"] += 1
    t = state["t"]
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    for p, g, m, v in zip(flat_p, flat_g, state["m"], state["v"]):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        p -= (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + eps)


def mlp_step(params, state, X, y, lr=1e-3):
    """One training step: per-sample gradients, then the per-array Adam update. Returns the loss."""
    loss, grads = mlp_grads(params, X, y)
    adam_update(params, grads, state, lr)
    return loss
