"""Every layer through the shared harness (twin, finite differences, PyTorch, float32), then
layer-specific behavior: shape errors, initializer scales, Dropout masks."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from harness import away_from_zero, check_layer

from vecnn import kernels
from vecnn import layers as L


@pytest.fixture(params=["fused", "numpy"], autouse=True)
def kernel_path(request, monkeypatch):
    """Every test here runs with the compiled kernels (when numba is present) and without."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "enabled", False)
    return request.param


def with_running_stats(layer, seed=1):
    """A BatchNorm layer whose running statistics are not the trivial 0 / 1."""
    rng = np.random.default_rng(seed)
    C = layer.num_features
    layer.state["running_mean"][...] = rng.standard_normal(C, dtype=np.float32)
    layer.state["running_var"][...] = rng.uniform(0.5, 2.0, C).astype(np.float32)
    return layer


def torch_batchnorm(layer, x, p, training):
    rm = torch.from_numpy(layer.state["running_mean"].copy())
    rv = torch.from_numpy(layer.state["running_var"].copy())
    return F.batch_norm(x, rm, rv, p["gamma"], p["beta"], training=training, momentum=layer.momentum, eps=layer.eps)


def torch_dropout(layer, x, p):
    keep = copy.deepcopy(layer.rng).random(tuple(x.shape), dtype=np.float32) >= layer.rate
    return x * torch.from_numpy(keep.astype(np.float64)) / (1 - layer.rate)


def dense_torch(layer, x, p):
    return x @ p["W"] + p["b"] if layer.bias else x @ p["W"]


def adapted(layer, shape, seed=2):
    """A Standardize layer fitted to shifted, scaled random data of per-sample ``shape``."""
    rng = np.random.default_rng(seed)
    return layer.adapt((rng.standard_normal((20, *shape)) * 3 + 1).astype(np.float32))


def torch_standardize(layer, x, p):
    return (x - torch.from_numpy(layer.state["mean"].astype(np.float64))) / torch.from_numpy(
        layer.state["std"].astype(np.float64)
    )


# (id, make_layer, input shapes, options)
CASES = [
    ("dense", lambda: L.Dense(7, 5), [(4, 7), (1, 7)], dict(torch_fn=dense_torch)),
    ("dense-nobias", lambda: L.Dense(3, 6, bias=False), [(5, 3)], dict(torch_fn=dense_torch)),
    ("dense-xavier", lambda: L.Dense(6, 2, init="xavier", seed=3), [(3, 6)], dict(torch_fn=dense_torch)),
    ("relu", L.ReLU, [(4, 6), (2, 3, 4, 5), (7,)], dict(torch_fn=lambda l, x, p: F.relu(x), x_fn=away_from_zero)),
    (
        "leaky-default",
        L.LeakyReLU,
        [(4, 6), (2, 3, 3, 3)],
        dict(torch_fn=lambda l, x, p: F.leaky_relu(x, l.negative_slope), x_fn=away_from_zero),
    ),
    (
        "leaky-0.2",
        lambda: L.LeakyReLU(0.2),
        [(5, 4)],
        dict(torch_fn=lambda l, x, p: F.leaky_relu(x, l.negative_slope), x_fn=away_from_zero),
    ),
    (
        "leaky-neg",
        lambda: L.LeakyReLU(-0.5),
        [(3, 4)],
        dict(torch_fn=lambda l, x, p: F.leaky_relu(x, l.negative_slope), x_fn=away_from_zero),
    ),
    ("sigmoid", L.Sigmoid, [(4, 6), (2, 3, 4, 4)], dict(torch_fn=lambda l, x, p: torch.sigmoid(x))),
    (
        "sigmoid-large",
        L.Sigmoid,
        [(3, 5)],
        dict(
            torch_fn=lambda l, x, p: torch.sigmoid(x),
            x_fn=lambda rng, s: (rng.standard_normal(s) * 30).astype(np.float32),
        ),
    ),
    ("tanh", L.Tanh, [(4, 6), (2, 2, 3, 3)], dict(torch_fn=lambda l, x, p: torch.tanh(x))),
    # the layer's erf is a float32-accurate rational approximation (|error| < 1.5e-7)
    ("gelu-exact", L.GELU, [(4, 6), (2, 3, 3, 3)], dict(torch_fn=lambda l, x, p: F.gelu(x), tol=1e-5)),
    (
        "gelu-tanh",
        lambda: L.GELU("tanh"),
        [(4, 6), (2, 3, 3, 3)],
        dict(torch_fn=lambda l, x, p: F.gelu(x, approximate="tanh")),
    ),
    ("softmax", L.Softmax, [(4, 6), (2, 3, 5), (3, 1)], dict(torch_fn=lambda l, x, p: torch.softmax(x, dim=-1))),
    (
        "softmax-large",
        L.Softmax,
        [(3, 4)],
        dict(
            torch_fn=lambda l, x, p: torch.softmax(x, dim=-1),
            x_fn=lambda rng, s: (rng.standard_normal(s) * 50).astype(np.float32),
        ),
    ),
    ("flatten", L.Flatten, [(3, 2, 4, 5), (2, 6), (2, 3, 4)], dict(torch_fn=lambda l, x, p: torch.flatten(x, 1))),
    ("dropout-eval", lambda: L.Dropout(0.4, seed=1), [(4, 6)], dict(torch_fn=lambda l, x, p: x)),
    (
        "dropout-train",
        lambda: L.Dropout(0.4, seed=1),
        [(4, 6), (2, 3, 4, 4)],
        dict(torch_fn=torch_dropout, training=True),
    ),
    ("dropout-rate0", lambda: L.Dropout(0.0), [(3, 5)], dict(torch_fn=torch_dropout, training=True)),
    (
        "bn1d-train",
        lambda: L.BatchNorm1D(5),
        [(6, 5), (2, 5)],
        dict(torch_fn=lambda l, x, p: torch_batchnorm(l, x, p, True), training=True),
    ),
    (
        "bn1d-eval",
        lambda: with_running_stats(L.BatchNorm1D(5)),
        [(6, 5), (1, 5)],
        dict(torch_fn=lambda l, x, p: torch_batchnorm(l, x, p, False)),
    ),
    (
        "bn2d-train",
        lambda: L.BatchNorm2D(3, eps=1e-3),
        [(2, 3, 4, 4), (1, 3, 2, 5)],
        dict(torch_fn=lambda l, x, p: torch_batchnorm(l, x, p, True), training=True),
    ),
    (
        "bn2d-eval",
        lambda: with_running_stats(L.BatchNorm2D(3)),
        [(2, 3, 4, 4)],
        dict(torch_fn=lambda l, x, p: torch_batchnorm(l, x, p, False)),
    ),
    (
        "standardize-channel",
        lambda: adapted(L.Standardize(), (3, 4, 4)),
        [(2, 3, 4, 4)],
        dict(torch_fn=torch_standardize),
    ),
    (
        "standardize-feature",
        lambda: adapted(L.Standardize(per="feature"), (5,)),
        [(3, 5)],
        dict(torch_fn=torch_standardize),
    ),
    (
        "standardize-global",
        lambda: adapted(L.Standardize(per="global"), (2, 3, 3)),
        [(2, 2, 3, 3)],
        dict(torch_fn=torch_standardize),
    ),
]

ROWS = [
    pytest.param(make, shape, opts, id=f"{name}-{'x'.join(map(str, shape))}")
    for name, make, shapes, opts in CASES
    for shape in shapes
]


@pytest.mark.parametrize("make_layer, shape, opts", ROWS)
def test_layer_harness(make_layer, shape, opts):
    check_layer(make_layer, shape, **opts)


def test_harness_covers_every_builtin_layer():
    covered = {type(make()).__name__ for _, make, _, _ in CASES}
    dense_family = {
        "Dense",
        "ReLU",
        "LeakyReLU",
        "Sigmoid",
        "Tanh",
        "GELU",
        "Softmax",
        "Flatten",
        "Dropout",
        "BatchNorm1D",
        "BatchNorm2D",
        "Standardize",
    }
    assert dense_family <= covered, f"no harness row for {sorted(dense_family - covered)}"


@pytest.mark.parametrize("seed", [0, 1])
def test_harness_uses_each_seed(seed):
    errs = check_layer(lambda: L.Dense(4, 3, seed=seed), (3, 4), torch_fn=dense_torch, seed=seed)
    assert errs and max(errs.values()) < 1e-6


def test_harness_catches_a_wrong_backward():
    class LeakyBack(L.ReLU):  # the classic bug: masking on the wrong array
        def backward(self, grad_y):
            return grad_y * (grad_y > 0)

    with pytest.raises(AssertionError, match="twin vs vectorized"):
        check_layer(LeakyBack, (4, 5), x_fn=away_from_zero)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, x_shape, expected, received",
    [
        (L.Dense(7, 5), (4, 6), "(n, 7)", "(4, 6)"),
        (L.Dense(7, 5), (4, 7, 1), "(n, 7)", "(4, 7, 1)"),
        (L.Dense(7, 5), (7,), "(n, 7)", "(7,)"),
        (L.BatchNorm1D(5), (4, 3), "(n, 5)", "(4, 3)"),
        (L.BatchNorm2D(3), (2, 4, 5, 5), "(n, 3, ", "(2, 4, 5, 5)"),
        (L.BatchNorm2D(3), (2, 3, 5), "(n, 3, ", "(2, 3, 5)"),
    ],
)
def test_bad_input_shape_names_layer_and_shapes(layer, x_shape, expected, received):
    x = np.zeros(x_shape, np.float32)
    name = type(layer).__name__
    with pytest.raises(ValueError, match=name) as err:
        layer.forward(x)
    assert expected in str(err.value) and received in str(err.value), str(err.value)
    from vecnn import reference

    with pytest.raises(ValueError, match=name):
        reference.forward(layer, x)


@pytest.mark.parametrize("layer", [L.ReLU(), L.Sigmoid(), L.Softmax(), L.Flatten(), L.Dropout(0.2)])
def test_scalar_input_refused(layer):
    with pytest.raises(ValueError, match=type(layer).__name__):
        layer.forward(np.float32(1.0))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.Dense(0, 3), "in_features"),
        (lambda: L.Dense(3, 2.5), "out_features"),
        (lambda: L.Dense(3, 2, init="bogus"), "bogus"),
        (lambda: L.LeakyReLU("x"), "negative_slope"),
        (lambda: L.GELU("fast"), "approximate"),
        (lambda: L.Dropout(1.0), "rate"),
        (lambda: L.Dropout(-0.1), "rate"),
        (lambda: L.BatchNorm1D(4, momentum=2), "momentum"),
        (lambda: L.BatchNorm2D(0), "num_features"),
    ],
)
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- initializers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "init, std",
    [
        ("he", lambda i, o: math.sqrt(2 / i)),
        ("xavier", lambda i, o: math.sqrt(2 / (i + o))),  # U(-a, a) with a = sqrt(6/(i+o)): std a/sqrt(3)
        ("lecun", lambda i, o: math.sqrt(1 / i)),
    ],
)
@pytest.mark.parametrize("fan_in, fan_out", [(400, 100), (50, 300)])
def test_dense_init_std(init, std, fan_in, fan_out):
    W = L.Dense(fan_in, fan_out, init=init, seed=5).params["W"]
    assert W.dtype == np.float32
    expected = std(fan_in, fan_out)
    # with 15,000+ samples the sample std is within ~1% of the truth; allow 5%
    assert abs(float(W.std()) / expected - 1) < 0.05, (float(W.std()), expected)
    assert abs(float(W.mean())) < 0.05 * expected
    if init == "xavier":
        assert float(np.abs(W).max()) <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7


def test_dense_seed_and_bias_init():
    a, b, c = L.Dense(6, 4, seed=1), L.Dense(6, 4, seed=1), L.Dense(6, 4, seed=2)
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert not np.array_equal(a.params["W"], c.params["W"])
    assert not a.params["b"].any()


# -- dtype ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer",
    [
        L.Dense(4, 3),
        L.ReLU(),
        L.LeakyReLU(),
        L.Sigmoid(),
        L.Tanh(),
        L.GELU(),
        L.GELU("tanh"),
        L.Softmax(),
        L.Dropout(0.3),
        L.BatchNorm1D(4),
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_float32_stays_float32(layer, training):
    x = np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32)
    y = layer.forward(x, training)
    g = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32 and g.dtype == np.float32
    assert all(v.dtype == np.float32 for v in (*layer.grads.values(), *layer.state.values()))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_order", ["C", "F"])
def test_dense_relu_fused_equals_the_two_layers(bias, grad_order):
    """Sequential runs Dense+ReLU as one step (bias and ReLU in one pass, the ReLU mask and the
    bias gradient in one pass); it must give what the two layers give one after the other."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 7), dtype=np.float32)
    x[8, 0] = np.nan  # the fused step treats NaN as the ReLU does
    g = np.asarray(rng.standard_normal((9, 5), dtype=np.float32), order=grad_order)
    pairs = []
    for _ in range(2):
        d, r = L.Dense(7, 5, bias=bias, seed=4), L.ReLU()
        if bias:
            d.params["b"][...] = rng.standard_normal(5, dtype=np.float32)  # some units switched off
        pairs.append((d, r))
    (d1, r1), (d2, r2) = pairs
    d2.params["b" if bias else "W"][...] = d1.params["b" if bias else "W"]
    d2.params["W"][...] = d1.params["W"]
    y_two = r1.forward(d1.forward(x, True), True)
    forward, backward = d2.fuse(r2)  # what Sequential runs as one step
    y_fused = forward(x, True)
    np.testing.assert_allclose(y_fused, y_two, rtol=1e-6, atol=1e-6)
    assert (y_fused == 0).any() and (y_fused > 0).any()
    assert y_fused.dtype == np.float32
    g_before = g.copy()
    dx_two = d1.backward(r1.backward(g))
    backward(g)
    dx_fused = backward(g)  # gradients are set, not summed
    np.testing.assert_array_equal(g, g_before)  # grad_y untouched
    np.testing.assert_allclose(dx_fused, dx_two, rtol=1e-5, atol=1e-6)
    for k in d1.grads:
        np.testing.assert_allclose(d2.grads[k], d1.grads[k], rtol=1e-5, atol=1e-6)
    # a second batch reuses the fused layer's scratch memory without corrupting held results
    dx_kept = dx_fused.copy()
    forward(x[:4], True)
    backward(g[:4])
    np.testing.assert_array_equal(dx_fused, dx_kept)


@pytest.mark.parametrize(
    "pool_args", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), stride=1)]
)
@pytest.mark.parametrize("channels_last", [True, False])
def test_relu_maxpool_fused_equals_the_two_layers(pool_args, channels_last, kernel_path):
    """Sequential runs ReLU+MaxPool2D as one pass (pool max(x, 0); windows without a positive
    value pass no gradient); it must give what the two layers give one after the other,
    including windows that are all negative and ties."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 7, 9), dtype=np.float32)
    x[0, 0, :3, :3] = -1.0  # an all-negative corner
    x[1, 1, :2, :2] = 0.5  # ties: the first maximum wins
    x[2, 2, 0, 0], x[2, 2, 1, 1] = np.nan, 5.0  # NaN beside a positive value (ReLU maps NaN to 0)
    x[2, 3, 0, 0] = np.nan  # NaN among negatives
    x[2, 3, :3, 1:3] = -2.0
    if channels_last:  # a Conv2D's output layout
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    r1, p1 = L.ReLU(), L.MaxPool2D(**pool_args)
    r2, p2 = L.ReLU(), L.MaxPool2D(**pool_args)
    y_two = p1.forward(r1.forward(x, True), True)
    forward, backward = r2.fuse(p2)  # the pool absorbs the ReLU before it
    y_fused = forward(x, True)
    np.testing.assert_array_equal(y_fused, y_two)
    assert y_fused.dtype == np.float32 and (y_fused == 0).any()
    if pool_args == dict(kernel_size=2) and kernel_path == "fused":  # NumPy's maximum keeps NaN
        assert y_fused[2, 2, 0, 0] == 5.0
    g = rng.standard_normal(y_two.shape, dtype=np.float32)
    g_before = g.copy()
    dx_two = r1.backward(p1.backward(g))
    dx_fused = backward(g)
    np.testing.assert_array_equal(g, g_before)
    np.testing.assert_array_equal(dx_fused, dx_two)
    assert dx_fused.shape == x.shape


def plan_groups(model):
    return [tuple(type(l).__name__ for l in group) for group, _, _ in model._plan()]


def check_plan_matches_layer_by_layer(model, x, g):
    """The model's fused steps give the outputs and gradients of its layers run one by one."""
    out = model.forward(x, training=True).copy()
    model.backward(g)
    fused_grads = model.flat_grads.copy()
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=True)
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)
    for layer in reversed(model.layers):
        g = layer.backward(g)
    np.testing.assert_allclose(fused_grads, model.flat_grads, rtol=1e-5, atol=1e-6)
    assert np.abs(fused_grads).sum() > 0


def test_sequential_fuses_dense_relu_and_matches_layer_by_layer():
    import vecnn as vn

    rng = np.random.default_rng(5)
    model = vn.Sequential([L.Dense(6, 8), L.ReLU(), L.Dense(8, 8), L.ReLU(), L.ReLU(), L.Dense(8, 3)], seed=1)
    assert plan_groups(model) == [("Dense", "ReLU"), ("Dense", "ReLU"), ("ReLU",), ("Dense",)]
    x = rng.standard_normal((10, 6), dtype=np.float32)
    check_plan_matches_layer_by_layer(model, x, rng.standard_normal((10, 3), dtype=np.float32))
    model.layers = model.layers[:-1]  # the plan follows the list
    assert plan_groups(model)[-1] == ("ReLU",) and model.forward(x).shape == (10, 8)


def test_sequential_fuses_relu_maxpool_in_a_cnn():
    import vecnn as vn

    rng = np.random.default_rng(8)
    model = vn.Sequential(
        [
            L.Conv2D(2, 4, 3),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Conv2D(4, 5, 3, padding=1),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Flatten(),
            L.Dense(20, 6),
            L.ReLU(),
            L.Dense(6, 3),
        ],
        seed=2,
    )
    assert plan_groups(model) == [
        ("Conv2D",),
        ("ReLU", "MaxPool2D"),
        ("Conv2D",),
        ("ReLU", "MaxPool2D"),
        ("Flatten",),
        ("Dense", "ReLU"),
        ("Dense",),
    ]
    check_plan_matches_layer_by_layer(
        model, rng.standard_normal((5, 2, 10, 10), dtype=np.float32), rng.standard_normal((5, 3), dtype=np.float32)
    )


def test_dense_casts_float64_input_to_its_dtype():
    layer = L.Dense(3, 2)
    assert layer.forward(np.ones((2, 3))).dtype == np.float32


# -- Dropout --------------------------------------------------------------------------------------
def test_dropout_same_seed_same_mask_and_mean_preserved():
    x = np.ones((200, 50), np.float32)
    a = L.Dropout(0.3, seed=7).forward(x, training=True)
    b = L.Dropout(0.3, seed=7).forward(x, training=True)
    c = L.Dropout(0.3, seed=8).forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    dropped = float(np.mean(a == 0))
    assert abs(dropped - 0.3) < 0.02  # 10,000 draws: std ~0.005
    assert abs(float(a.mean()) - 1) < 0.03  # inverted dropout keeps the mean
    assert set(np.unique(a).tolist()) == {0.0, np.float32(1 / 0.7)}


def test_dropout_consecutive_masks_differ_and_backward_uses_mask():
    layer = L.Dropout(0.5, seed=0)
    x = np.ones((10, 10), np.float32)
    m1 = layer.forward(x, training=True)
    g = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(g, 2 * m1)
    m2 = layer.forward(x, training=True)
    assert not np.array_equal(m1, m2)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


# -- BatchNorm running statistics (vs torch) -----------------------------------------------------
@pytest.mark.parametrize(
    "make, tmod, shape",
    [
        (lambda: L.BatchNorm1D(4, momentum=0.2), lambda: torch.nn.BatchNorm1d(4, momentum=0.2), (8, 4)),
        (lambda: L.BatchNorm2D(3), lambda: torch.nn.BatchNorm2d(3), (2, 3, 4, 5)),
    ],
)
def test_batchnorm_running_stats_match_torch(make, tmod, shape):
    rng = np.random.default_rng(0)
    layer, ref = make(), tmod().double()
    for _ in range(3):
        x = rng.standard_normal(shape, dtype=np.float32) * 2 + 1
        layer.forward(x, training=True)
        ref(torch.from_numpy(x.astype(np.float64)))
    np.testing.assert_allclose(layer.state["running_mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.state["running_var"], ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    ref.eval()
    x = rng.standard_normal(shape, dtype=np.float32)
    np.testing.assert_allclose(
        layer.forward(x), ref(torch.from_numpy(x.astype(np.float64))).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_batchnorm_training_needs_two_values():
    with pytest.raises(ValueError, match="BatchNorm1D"):
        L.BatchNorm1D(3).forward(np.ones((1, 3), np.float32), training=True)
