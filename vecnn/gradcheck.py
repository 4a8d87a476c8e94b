"""Gradient checks: analytic backward passes against central finite differences in float64.

Every check works on a float64 deep copy, so the object checked is left untouched. A layer's
output is reduced to one scalar with a fixed random projection, ``f(x) = sum(y * r)``, whose
gradient is exactly what ``backward(r)`` returns. Randomness inside a layer (a Dropout mask)
stays fixed across evaluations: every evaluation runs a fresh copy of the same layer, with its
generator in the same state.

The error reported for one array is the largest absolute difference divided by the larger of
the two arrays' largest magnitudes (at least ``1e-3``, so that gradients that are zero both
ways do not divide noise by zero)::

    err = max|analytic - numeric| / max(max|analytic|, max|numeric|, 1e-3)

Correct float64 gradients give ~1e-9; a wrong one gives ~1.

Examples
--------
>>> import numpy as np, vecnn as vn
>>> errs = vn.gradcheck.check_layer(vn.layers.Dense(3, 2), np.ones((4, 3)))
>>> sorted(errs), max(errs.values()) < 1e-6
(['W', 'b', 'x'], True)
"""

from __future__ import annotations

import copy

import numpy as np

#: default tolerance of ``assert_ok``
TOL = 1e-6


def rel_error(analytic, numeric, floor: float = 1e-3) -> float:
    """Largest difference relative to the larger magnitude (see the module docstring)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"rel_error: shapes differ, analytic {a.shape} vs numeric {n.shape}")
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(n).all()):
        return float("inf")
    scale = max(float(np.abs(a).max()), float(np.abs(n).max()), floor)
    return float(np.abs(a - n).max() / scale)


def numerical_grad(f, x, eps: float = 1e-6):
    """Central differences ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` for every element of ``x``.

    ``x`` is perturbed *in place* (one element at a time, restored after each) and ``f(x)``
    must return a float; pass an array ``f`` reads (a parameter) to differentiate with respect
    to it. ``x`` should be float64.
    """
    if x.dtype != np.float64:
        raise ValueError(
            f"numerical_grad: expected a float64 array, received {x.dtype}; float32 finite differences are too noisy"
        )
    grad = np.zeros(x.shape, np.float64)
    flat, g = x.reshape(-1), grad.reshape(-1)  # views: writing flat[i] perturbs x
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_grad: x must be contiguous so it can be perturbed in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f(x)
        flat[i] = old - eps
        minus = f(x)
        flat[i] = old
        g[i] = (plus - minus) / (2 * eps)
    return grad


def _float64_layer(layer):
    copy64 = copy.deepcopy(layer).astype(np.float64)
    copy64.input_grad = True
    return copy64


def layer_grads(layer, x, r, training=False):
    """Analytic ``(y, grad_x, grads)`` of ``sum(y * r)`` from a copy of ``layer`` (any dtype)."""
    run = copy.deepcopy(layer)
    run.input_grad = True
    y = run.forward(x, training)
    grad_x = run.backward(r)
    return y, grad_x, {k: v.copy() for k, v in run.grads.items()}


def check_layer(layer, x, seed: int = 0, training: bool = False, eps: float = 1e-6) -> dict:
    """Relative errors of ``layer``'s analytic gradients against finite differences.

    Returns ``{"x": err, "<param>": err, ...}``, computed in float64 on a copy (``layer`` itself is
    not modified). ``training`` selects the mode (batch statistics, dropout masks); ``seed``
    picks the random projection ``r``.
    """
    base = _float64_layer(layer)
    x = np.array(x, dtype=np.float64)  # a private, contiguous copy
    # r from its own stream: never equal to an input drawn with default_rng(seed)
    rng = np.random.default_rng([seed, 0x9C])
    r = _probe(base, x, training, rng)
    y, grad_x, grads = layer_grads(base, x.copy(), r, training)

    def f(_):  # a fresh copy per call: same mask, same stats
        out = copy.deepcopy(base).forward(x, training)
        return float(np.sum(out * r))

    errors = {"x": rel_error(grad_x, numerical_grad(f, x, eps))}
    for k, p in base.params.items():
        errors[k] = rel_error(grads[k], numerical_grad(f, p, eps))
    return errors


def _probe(layer, x, training, rng):
    """The fixed random projection ``r`` (shape of the output) that makes the output a scalar."""
    y = copy.deepcopy(layer).forward(x.copy(), training)
    return rng.standard_normal(y.shape)


def check_loss(loss, pred, target, eps: float = 1e-6) -> dict:
    """Relative error of ``loss.backward()`` against finite differences: ``{"pred": err}``."""
    loss = copy.deepcopy(loss)
    pred = np.array(pred, dtype=np.float64)
    loss.forward(pred.copy(), target)
    analytic = loss.backward()
    numeric = numerical_grad(lambda p: loss.forward(p, target), pred, eps)
    return {"pred": rel_error(analytic, numeric)}


def float64_model(model):
    """A float64 deep copy of a ``Sequential``, with its own flat float64 buffers."""
    model64 = copy.deepcopy(model)
    for layer in model64.layers:
        layer.astype(np.float64)
    model64._build_flat()  # float64 buffers, params/grads as views
    return model64


def check_model(model, X, y, loss=None, training: bool = False, eps: float = 1e-6) -> dict:
    """Relative errors of ``model.backward`` against finite differences of the loss, per parameter.

    Returns ``{"<layer index>.<param>": err}`` (e.g. ``"0.W"``). ``loss`` defaults to the model's
    own; the check runs on a float64 copy, so ``model`` is not modified.
    """
    from . import losses

    if loss is None and model.loss is None:
        raise ValueError("check_model: the model has no loss yet; pass loss=")
    loss = losses.get(loss if loss is not None else model.loss)
    model = float64_model(model)
    X = np.asarray(X, dtype=np.float64)
    y = loss.check_target("y", model.shapes(X.shape[1:])[-1], y)
    rng_states = model.rng_states()  # dropout masks fixed across evaluations

    def value(_=None):
        model.set_rng_states(rng_states)
        return loss.forward(model.forward(X, training), y)

    value()
    model.flat_grads[...] = 0
    model.backward(loss.backward())
    errors = {}
    for i, layer in enumerate(model.layers):
        for k, p in layer.params.items():
            errors[f"{i}.{k}"] = rel_error(layer.grads[k], numerical_grad(value, p, eps))
    model.set_rng_states(rng_states)
    return errors


def assert_ok(errors: dict, tol: float = TOL) -> None:
    """Raise ``AssertionError`` naming every entry of ``errors`` above ``tol``."""
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in bad.items())
        raise AssertionError(f"gradient check failed (tolerance {tol:g}): {listing}")
