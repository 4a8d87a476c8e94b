"""The operations on the ladder: for each, its description, FLOP count and one callable per rung.

Each ``*_case(cfg, rng, torch) -> (info, rungs)`` builds its inputs from ``rng`` and returns
``info`` (``op``, ``title``, ``flops``, ``flops_note``) and ``rungs``: rung name -> a callable
doing one forward + backward (or one training step) on the whole batch, or ``(f, k)`` where
``f(m)`` does it on the first ``m`` samples and the caller times it on at most ``k`` of them
(and extrapolates to the batch), or a list of such parts whose times add up (a plain callable
in the list is timed in full). ``torch`` is the imported module
or None; without it there is no ``pytorch`` rung.

FLOPs count matrix-product work only, ``2 m n k`` per product, the same for every rung.
"""

from __future__ import annotations

import numpy as np

from .. import layers as L
from .. import losses, optim
from .. import reference as R
from ..model import Sequential
from . import per_sample as PS
from . import scalar as S
from .peak import matmul_flops


# -- FLOP counts (matrix products only, 2 m n k each) --------------------------------------------
def dense_flops(n, n_in, n_out, input_grad=True) -> int:
    """Forward ``X W``, backward ``X^T dZ`` and (with ``input_grad``) ``dZ W^T``."""
    return matmul_flops(n, n_out, n_in) * (3 if input_grad else 2)


def conv_flops(n, c_in, c_out, k, ho, wo, input_grad=True) -> int:
    """The im2col products: ``(n Ho Wo, C k k) @ (C k k, O)`` forward, two of that size backward."""
    return matmul_flops(n * ho * wo, c_out, c_in * k * k) * (3 if input_grad else 2)


def mlp_step_flops(n, sizes) -> int:
    """Every Dense layer's forward and ``dW``; ``dX`` for all but the first (the data needs none)."""
    return sum(dense_flops(n, a, b, input_grad=i > 0) for i, (a, b) in enumerate(zip(sizes, sizes[1:])))


# -- the operations: each returns its description and its rungs -------------------------------------
def _rand(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _twin(layer, X, G):
    """The loop twin's forward and backward on the first ``m`` samples, as ``f(m)``."""

    def run(m):
        R.forward(layer, X[:m], training=True)
        R.backward(layer, X[:m], G[:m], training=True)

    return run


def _seq(*fns):
    """One callable running ``fns`` in order (a forward, then its backward)."""

    def run_all():
        for fn in fns:
            fn()

    return run_all


def dense_case(cfg, rng, torch):
    n, (n_in, n_out) = cfg.batch, cfg.dense
    layer = L.Dense(n_in, n_out, seed=0)
    X, G = _rand(rng, (n, n_in)), _rand(rng, (n, n_out))
    W, b = layer.params["W"], layer.params["b"]
    k = min(cfg.scalar_slice, n)
    rungs = {
        "scalar": (_twin(layer, X, G), k),
        "per_sample": _seq(lambda: PS.dense_forward(W, b, X), lambda: PS.dense_backward(W, X, G)),
        "vecnn": _seq(lambda: layer.forward(X, training=True), lambda: layer.backward(G)),
    }
    if torch:
        Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (W, b))
        Xt, Gt = torch.from_numpy(X).requires_grad_(), torch.from_numpy(G)

        def torch_step():
            Wt.grad = bt.grad = Xt.grad = None
            torch.addmm(bt, Xt, Wt).backward(Gt)

        rungs["pytorch"] = torch_step
    return {
        "op": "dense",
        "title": f"Dense {n_in}->{n_out}, forward+backward, batch {n}",
        "flops": dense_flops(n, n_in, n_out),
        "flops_note": "3 matrix products: Z = X W, dW = X^T dZ, dX = dZ W^T",
    }, rungs


def conv_case(cfg, rng, torch):
    n, (C, O, k, side) = cfg.batch, cfg.conv
    layer = L.Conv2D(C, O, k, seed=0)  # ImportError/AttributeError: skipped
    X = _rand(rng, (n, C, side, side))  # (N, C, H, W), contiguous like data
    Y = layer.forward(X, training=True)
    G = np.empty_like(Y)  # the layer's own output memory layout
    G[...] = _rand(rng, Y.shape)
    _check_conv(layer, rng)
    geo = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    W, b = layer.params["W"], layer.params["b"]
    ks = min(cfg.conv_scalar_slice, n)
    rungs = {}
    if "Conv2D" in R.TWINS:
        rungs["scalar"] = (_twin(layer, X, G), ks)

    def per_sample():
        _, cache = PS.conv_forward(W, b, X, **geo)
        PS.conv_backward(W, X, G, cache, **geo)

    rungs["per_sample"] = per_sample
    rungs["vecnn"] = _seq(lambda: layer.forward(X, training=True), lambda: layer.backward(G))
    if torch:
        F = torch.nn.functional
        Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (W, b))
        Xt, Gt = torch.from_numpy(X).requires_grad_(), torch.from_numpy(np.ascontiguousarray(G))

        def torch_step():
            Wt.grad = bt.grad = Xt.grad = None
            F.conv2d(Xt, Wt, bt, **geo).backward(Gt)

        rungs["pytorch"] = torch_step
    Ho, Wo = Y.shape[2:]
    return {
        "op": "conv2d",
        "title": f"Conv2D {C}->{O} {k}x{k} on {side}x{side}, forward+backward, batch {n}",
        "flops": conv_flops(n, C, O, k, Ho, Wo),
        "flops_note": f"3 im2col products of (n*{Ho}*{Wo}, {C * k * k}) x ({C * k * k}, {O}); bias not counted",
    }, rungs


def _check_conv(layer, rng):
    """Refuse to time a Conv2D whose results disagree with the per-sample version."""
    X = _rand(rng, (2, layer.in_channels, 7, 7))
    Y = layer.forward(X, training=True)
    G = _rand(rng, Y.shape)
    dX = layer.backward(G)
    geo = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    Yp, cache = PS.conv_forward(layer.params["W"], layer.params["b"], X, **geo)
    dXp, dWp, _ = PS.conv_backward(layer.params["W"], X, G, cache, **geo)
    for name, a, e in (("forward", Y, Yp), ("input gradient", dX, dXp), ("weight gradient", layer.grads["W"], dWp)):
        if not np.allclose(a, e, rtol=1e-3, atol=1e-4):
            raise RuntimeError(f"Conv2D's {name} disagrees with the per-sample convolution")


def relu_case(cfg, rng, torch):
    n, width = cfg.batch, cfg.act_width
    layer = L.ReLU()
    X, G = _rand(rng, (n, width)), _rand(rng, (n, width))
    rungs = {
        "scalar": (_twin(layer, X, G), n),
        "per_sample": _seq(lambda: PS.relu_forward(X), lambda: PS.relu_backward(X, G)),
        "vecnn": _seq(lambda: layer.forward(X, training=True), lambda: layer.backward(G)),
    }
    if torch:
        Xt, Gt = torch.from_numpy(X).requires_grad_(), torch.from_numpy(G)

        def torch_step():
            Xt.grad = None
            torch.relu(Xt).backward(Gt)

        rungs["pytorch"] = torch_step
    return {
        "op": "relu",
        "title": f"ReLU on ({n}, {width}), forward+backward",
        "flops": 0,
        "flops_note": f"elementwise, no matrix products ({n * width:,} elements)",
    }, rungs


def loss_case(cfg, rng, torch):
    n, C = cfg.batch, cfg.classes
    loss = losses.CrossEntropy()
    Z, y = _rand(rng, (n, C)), rng.integers(0, C, n)
    rungs = {
        "scalar": (lambda m: (R.loss_forward(loss, Z[:m], y[:m]), R.loss_backward(loss, Z[:m], y[:m])), n),
        "per_sample": _seq(lambda: PS.cross_entropy_forward(Z, y), lambda: PS.cross_entropy_backward(Z, y)),
        "vecnn": _seq(lambda: loss.forward(Z, y), loss.backward),
    }
    if torch:
        Zt, yt = torch.from_numpy(Z).requires_grad_(), torch.from_numpy(y)

        def torch_step():
            Zt.grad = None
            torch.nn.functional.cross_entropy(Zt, yt).backward()

        rungs["pytorch"] = torch_step
    return {
        "op": "cross_entropy",
        "title": f"softmax cross-entropy on ({n}, {C}), forward+backward",
        "flops": 0,
        "flops_note": f"elementwise and row reductions, no matrix products ({n * C:,} logits)",
    }, rungs


def mlp_layers(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [L.Dense(a, b)] + ([L.ReLU()] if i < len(sizes) - 2 else [])
    return layers


def mlp_case(cfg, rng, torch):
    n, sizes = cfg.batch, cfg.mlp
    X = rng.random((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n)
    model, loss, opt = Sequential(mlp_layers(sizes), seed=0), losses.CrossEntropy(), optim.Adam(lr=1e-3)

    def vecnn_step():
        loss.forward(model.forward(X, training=True), y)
        model.backward(loss.backward())
        opt.step(model.flat_params, model.flat_grads)

    dense = [layer for layer in Sequential(mlp_layers(sizes), seed=0).layers if layer.params]
    params, state = [(d.params["W"].copy(), d.params["b"].copy()) for d in dense], {}
    # scalar: gradients on k/2 and k samples (extrapolated to n), then Adam over every parameter
    twin_layers, k, twin_state = Sequential(mlp_layers(sizes), seed=0).layers, min(cfg.scalar_slice, n), {}
    _, twin_grads = S.mlp_grads(twin_layers, loss, X[:1], y[:1])
    rungs = {
        "scalar": [
            (lambda m: S.mlp_grads(twin_layers, loss, X[:m], y[:m]), k),
            (lambda: S.adam_update(twin_layers, twin_grads, twin_state), None),
        ],
        "per_sample": lambda: PS.mlp_step(params, state, X, y),
        "vecnn": vecnn_step,
    }
    if torch:
        rungs["pytorch"] = _torch_mlp_step(torch, sizes, X, y)
    return {
        "op": "mlp_step",
        "title": f"MLP {'-'.join(map(str, sizes))} training step (Adam), batch {n}",
        "flops": mlp_step_flops(n, sizes),
        "flops_note": "forward and dW of every Dense, dX of all but the first; Adam and ReLU not counted",
    }, rungs


def _torch_mlp_step(torch, sizes, X, y):
    mods = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        mods += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    net = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        opt.step()

    return step


CASES = {"dense": dense_case, "conv2d": conv_case, "relu": relu_case, "cross_entropy": loss_case, "mlp_step": mlp_case}
