"""One test harness for every layer and loss (Chainer's FunctionTestCase, tinygrad's helper_test_op).

Adding a layer adds a row of test parameters, not a test file of copied code::

    from harness import check_layer

    @pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 2, 4, 6)])
    def test_maxpool(shape):
        check_layer(lambda: L.MaxPool2D(2), shape,
                    torch_fn=lambda layer, x, p: F.max_pool2d(x, layer.kernel_size),
                    x_fn=distinct_values)

``check_layer(make_layer, x_shape, *, torch_fn=None, training=False, seed=0, rtol=1e-4,
atol=1e-5, tol=1e-6, x_fn=None, perturb=True)`` checks one input shape (parametrize for more):

(a) **twin == vectorized**: ``vecnn.reference.forward/backward`` on a float32 layer equal the
    layer's own ``forward``/``backward`` (y, grad_x and every ``grads[k]``; ``rtol``/``atol``,
    where ``atol`` is scaled by the largest magnitude of the expected array). While the twin runs,
    the layer's ``forward`` and ``backward`` are patched *on the instance* to raise, and the
    layer holds a stale cache from a decoy input, so a twin that peeked at the cache would
    fail. The twin must leave params, state and generator untouched. The same comparison is
    repeated in float64 to ``tol``.
(b) **gradients**: the float64 copy's analytic gradients match central finite differences
    (``vecnn.gradcheck.check_layer``) and PyTorch autograd (``torch_fn``), each to ``tol`` in
    ``gradcheck.rel_error`` (max difference / larger max magnitude). The forward output is
    compared with PyTorch's too.
(c) **dtype and purity**: float32 in -> float32 y, grad_x and grads; ``forward`` does not modify
    ``x``; ``backward`` does not modify ``grad_y``; with ``input_grad = False`` the parameter
    gradients are unchanged (to 1e-6).

``make_layer()`` returns a fresh float32 layer. With ``perturb=True`` (default) the harness adds
small noise to every parameter so zero-initialized biases and unit gammas are exercised.
``x_fn(rng, shape) -> float32 array`` supplies inputs (default standard normal): keep them away
from kinks (ReLU at 0, ties in MaxPool) where finite differences are meaningless.

``torch_fn(layer, x_t, params_t) -> y_t`` computes the same function with PyTorch:

- ``layer`` is a float64 copy of the layer *in the state it had before the checked forward
  pass* (params, ``state``, generator): read configuration from it (``layer.stride``,
  ``layer.state["running_mean"]``, ``copy.deepcopy(layer.rng)`` for a Dropout mask);
- ``x_t`` is a float64 leaf tensor (``requires_grad=True``) holding the input;
- ``params_t`` maps each key of ``layer.params`` to a float64 leaf tensor requiring grad. Build
  the computation from these (not from ``layer.params``), so autograd sees the parameters.

``check_loss(make_loss, pred_shape, make_target, torch_fn=None, *, ...)`` does the same for a
loss: ``make_target(rng, pred_shape)`` gives raw targets (passed through ``loss.check_target``),
``torch_fn(loss, pred_t, target) -> scalar tensor`` with ``target`` the checked NumPy target.

Both return a dict of the measured float64 errors (handy when tuning a tolerance).
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

from vecnn import gradcheck, reference

__all__ = ["check_layer", "check_loss", "forbidden", "normal", "away_from_zero", "distinct_values"]


# -- inputs ------------------------------------------------------------------------------------
def normal(rng, shape):
    """Standard normal float32 input."""
    return rng.standard_normal(shape, dtype=np.float32)


def away_from_zero(rng, shape, margin=0.05):
    """Normal input with ``|x| >= margin``: finite differences never straddle a kink at 0."""
    x = rng.standard_normal(shape, dtype=np.float32)
    return (np.sign(x) * (np.abs(x) + np.float32(margin))).astype(np.float32)


def distinct_values(rng, shape, gap=0.01):
    """A random permutation of well-separated values: no ties within any window (for max pooling)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * gap).reshape(shape).astype(np.float32)


# -- patching ----------------------------------------------------------------------------------
@contextlib.contextmanager
def forbidden(obj, names=("forward", "backward")):
    """Patch ``obj``'s methods ``names`` on the instance to raise, for the duration of the block."""

    def refuse(name):
        def method(*args, **kwargs):
            raise AssertionError(
                f"the loop twin called {type(obj).__name__}.{name}(): a twin must compute everything itself"
            )

        return method

    for name in names:
        setattr(obj, name, refuse(name))
    try:
        yield obj
    finally:
        for name in names:
            vars(obj).pop(name, None)


def _snapshot(layer):
    rng = getattr(layer, "rng", None)
    return (
        {k: v.copy() for k, v in layer.params.items()},
        {k: v.copy() for k, v in layer.state.items()},
        copy.deepcopy(rng.bit_generator.state) if isinstance(rng, np.random.Generator) else None,
    )


def _assert_same_snapshot(name, before, after):
    for table, b, a in zip(("params", "state"), before[:2], after[:2]):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: the twin modified {table}[{k!r}]")
    assert before[2] == after[2], f"{name}: the twin advanced the layer's generator"


# -- comparisons -------------------------------------------------------------------------------
def _close32(what, actual, expected, rtol, atol):
    """float32 comparison; ``atol`` is relative to the largest magnitude of ``expected``."""
    assert actual is not None, f"{what}: got None"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def _close64(what, actual, expected, tol, errors):
    assert actual is not None, f"{what}: got None"
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    err = gradcheck.rel_error(actual, expected)
    errors[what] = err
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def _is_float32(what, arr):
    assert arr.dtype == np.float32, f"{what}: dtype {arr.dtype}, expected float32"


# -- layers ------------------------------------------------------------------------------------
def check_layer(
    make_layer,
    x_shape,
    *,
    torch_fn=None,
    training=False,
    seed=0,
    rtol=1e-4,
    atol=1e-5,
    tol=1e-6,
    x_fn=None,
    perturb=True,
) -> dict:
    """Run checks (a), (b) and (c) of the module docstring for one layer and one input shape."""
    rng = np.random.default_rng(seed)
    x_fn = x_fn or normal
    layer = make_layer()
    name = f"{layer!r} on {tuple(x_shape)} ({'training' if training else 'eval'})"
    if perturb:
        for k, p in layer.params.items():
            p[...] += np.float32(0.1) * rng.standard_normal(p.shape, dtype=np.float32)
    for k, p in layer.params.items():
        _is_float32(f"{name}: params[{k!r}]", p)
    x = x_fn(rng, x_shape)
    _is_float32(f"{name}: test input", x)
    pristine = copy.deepcopy(layer)
    before = _snapshot(layer)

    # (a) the twin, with the methods patched to raise and a stale cache from a decoy input
    decoy = copy.deepcopy(layer)
    y_decoy = decoy.forward(x_fn(rng, x_shape), training)
    decoy.backward(np.ones_like(y_decoy))
    for attr, value in vars(decoy).items():
        if attr.startswith("_"):
            setattr(layer, attr, value)
    with forbidden(layer):
        y_twin = reference.forward(layer, x.copy(), training)
        grad_y = rng.standard_normal(y_twin.shape, dtype=np.float32)
        gx_twin, g_twin = reference.backward(layer, x.copy(), grad_y.copy(), training)
    _assert_same_snapshot(name, before, _snapshot(layer))
    assert sorted(g_twin) == sorted(layer.params), f"{name}: twin grads keys {sorted(g_twin)}"

    x_in, g_in = x.copy(), grad_y.copy()
    y = layer.forward(x_in, training)
    gx = layer.backward(g_in)
    np.testing.assert_array_equal(x_in, x, err_msg=f"{name}: forward modified its input")
    np.testing.assert_array_equal(g_in, grad_y, err_msg=f"{name}: backward modified grad_y")
    _close32(f"{name}: forward, twin vs vectorized", y, y_twin, rtol, atol)
    _close32(f"{name}: grad_x, twin vs vectorized", gx, gx_twin, rtol, atol)
    for k in layer.params:
        _close32(f"{name}: grads[{k!r}], twin vs vectorized", layer.grads[k], g_twin[k], rtol, atol)

    # (c) float32 end to end, from the twin as well
    for what, arr in [
        ("y", y),
        ("grad_x", gx),
        ("twin y", y_twin),
        ("twin grad_x", gx_twin),
        *((f"grads[{k!r}]", layer.grads[k]) for k in layer.params),
        *((f"twin grads[{k!r}]", g_twin[k]) for k in layer.params),
    ]:
        _is_float32(f"{name}: {what}", arr)
    no_input = copy.deepcopy(pristine)
    no_input.input_grad = False
    no_input.forward(x.copy(), training)
    no_input.backward(grad_y.copy())
    for k in layer.params:
        _close32(f"{name}: grads[{k!r}] with input_grad=False", no_input.grads[k], layer.grads[k], 1e-6, 1e-6)

    # (b) float64: twin, finite differences, PyTorch
    errors: dict = {}
    layer64 = copy.deepcopy(pristine).astype(np.float64)
    x64 = x.astype(np.float64)
    r = rng.standard_normal(y.shape)
    y64, gx64, g64 = gradcheck.layer_grads(layer64, x64.copy(), r, training)
    assert y64.dtype == gx64.dtype == np.float64, f"{name}: a float64 layer returned {y64.dtype} / {gx64.dtype}"
    _close64("twin64 y", reference.forward(layer64, x64, training), y64, tol, errors)
    gx_t64, g_t64 = reference.backward(layer64, x64, r, training)
    _close64("twin64 grad_x", gx_t64, gx64, tol, errors)
    for k in layer.params:
        _close64(f"twin64 grads[{k!r}]", g_t64[k], g64[k], tol, errors)

    fd = gradcheck.check_layer(layer64, x64, seed=seed, training=training)
    errors.update({f"finite differences {k}": v for k, v in fd.items()})
    bad = {k: v for k, v in fd.items() if not v <= tol}
    assert not bad, f"{name}: analytic vs finite differences, relative errors {bad} > {tol:g}"

    if torch_fn is not None:
        x_t = torch.tensor(x64, requires_grad=True)
        params_t = {k: torch.tensor(v, requires_grad=True) for k, v in layer64.params.items()}
        y_t = torch_fn(copy.deepcopy(layer64), x_t, params_t)
        _close64("torch y", y_t.detach().numpy(), y64, tol, errors)
        (y_t * torch.from_numpy(r)).sum().backward()
        _close64("torch grad_x", x_t.grad.numpy(), gx64, tol, errors)
        for k, p in params_t.items():
            _close64(f"torch grads[{k!r}]", p.grad.numpy(), g64[k], tol, errors)
    return errors


# -- losses ------------------------------------------------------------------------------------
def check_loss(
    make_loss, pred_shape, make_target, torch_fn=None, *, seed=0, pred_fn=None, rtol=1e-5, atol=1e-6, tol=1e-6
) -> dict:
    """Checks (a), (b) and (c) for a loss: value and gradient vs twin, finite differences, torch."""
    rng = np.random.default_rng(seed)
    loss = make_loss()
    name = f"{loss!r} on {tuple(pred_shape)}"
    pred = (pred_fn or normal)(rng, pred_shape)
    _is_float32(f"{name}: test pred", pred)
    target = loss.check_target("target", tuple(pred_shape[1:]), make_target(rng, pred_shape))

    with forbidden(loss):
        v_twin = reference.loss_forward(loss, pred.copy(), target)
        g_twin = reference.loss_backward(loss, pred.copy(), target)
    p_in = pred.copy()
    value = loss.forward(p_in, target)
    grad = loss.backward()
    np.testing.assert_array_equal(p_in, pred, err_msg=f"{name}: forward modified pred")
    assert isinstance(value, float), f"{name}: forward returned {type(value).__name__}, not float"
    assert isinstance(v_twin, float), f"{name}: twin forward returned {type(v_twin).__name__}"
    np.testing.assert_allclose(value, v_twin, rtol=rtol, atol=atol, err_msg=f"{name}: value, twin vs vectorized")
    _close32(f"{name}: grad, twin vs vectorized", grad, g_twin, rtol, atol)
    _is_float32(f"{name}: grad", grad)
    _is_float32(f"{name}: twin grad", g_twin)

    errors: dict = {}
    pred64 = pred.astype(np.float64)
    loss64 = copy.deepcopy(loss)
    v64 = loss64.forward(pred64.copy(), target)
    g64 = loss64.backward()
    assert g64.dtype == np.float64, f"{name}: float64 pred gave a {g64.dtype} gradient"
    _close64("twin64 value", np.array(reference.loss_forward(loss64, pred64, target)), np.array(v64), tol, errors)
    _close64("twin64 grad", reference.loss_backward(loss64, pred64, target), g64, tol, errors)
    fd = gradcheck.check_loss(loss64, pred64, target)
    errors["finite differences pred"] = fd["pred"]
    assert fd["pred"] <= tol, f"{name}: analytic vs finite differences, relative error {fd['pred']:.3g}"
    if torch_fn is not None:
        pred_t = torch.tensor(pred64, requires_grad=True)
        v_t = torch_fn(copy.deepcopy(loss64), pred_t, target)
        _close64("torch value", np.array(v_t.item()), np.array(v64), tol, errors)
        v_t.backward()
        _close64("torch grad", pred_t.grad.numpy(), g64, tol, errors)
    return errors
