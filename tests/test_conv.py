"""Convolution, pooling and residual layers: the shared harness (twin, float64 finite
differences, PyTorch autograd, float32) over many shapes, strides, paddings and dilations, then
the vectorized paths' own promises: memory layouts, chunking under a column budget, shape
errors, ties in max pooling, and CNNs / ResNets that train, save and load."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from harness import away_from_zero, check_layer, distinct_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecnn as vn
from vecnn import kernels
from vecnn import layers as L
from vecnn.layers import conv as conv_module

# the engine fixture is set once per test function, the same for every example
PROPERTY = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(params=["compiled", "numpy"])
def engine(request, monkeypatch):
    """Run a test with the compiled kernels (when numba is there) and with the NumPy paths."""
    if request.param == "compiled" and kernels.get() is None:
        pytest.skip("numba kernels unavailable")
    monkeypatch.setattr(kernels, "enabled", request.param == "compiled")
    return request.param


# -- PyTorch mirrors of the layers (params_t keys follow the layer's own params keys) ---------
def torch_forward(layer, x, p, training=False, prefix=""):
    """The same function in PyTorch, built from the tensors in ``p`` (so autograd sees them)."""
    if isinstance(layer, L.Conv2D):
        return F.conv2d(
            x, p[prefix + "W"], p.get(prefix + "b"), stride=layer.stride, padding=layer.padding, dilation=layer.dilation
        )
    if isinstance(layer, L.MaxPool2D):
        return F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, L.AvgPool2D):
        return F.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, L.GlobalAvgPool2D):
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
    if isinstance(layer, L.ReLU):
        return F.relu(x)
    if isinstance(layer, L.BatchNorm2D):
        rm = torch.tensor(layer.state["running_mean"], dtype=x.dtype)
        rv = torch.tensor(layer.state["running_var"], dtype=x.dtype)
        return F.batch_norm(
            x,
            rm,
            rv,
            p[prefix + "gamma"],
            p[prefix + "beta"],
            training=training,
            momentum=layer.momentum,
            eps=layer.eps,
        )
    if isinstance(layer, L.Residual):
        h = x
        for i, sub in enumerate(layer.layers):
            h = torch_forward(sub, h, p, training, f"{prefix}f.{i}.")
        s = x if layer.projection is None else torch_forward(layer.projection, x, p, training, prefix + "proj.")
        return h + s
    raise NotImplementedError(type(layer).__name__)


def mirror(training=False):
    return lambda layer, x, p: torch_forward(layer, x, p, training)


def channels_last(x):
    """The same values, laid out (N, H, W, C) in memory, as a Conv2D's output is."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# -- the harness over fixed rows ---------------------------------------------------------------
ROWS = [
    ("conv-basic", lambda: L.Conv2D(2, 3, 3), (2, 2, 5, 5), {}),
    ("conv-one-channel", lambda: L.Conv2D(1, 4, 3, padding=1), (2, 1, 6, 5), {}),
    ("conv-stride-pad", lambda: L.Conv2D(3, 2, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 3, 7, 6), {}),
    ("conv-dilation", lambda: L.Conv2D(2, 2, 3, dilation=2, padding=1, bias=False), (1, 2, 7, 8), {}),
    ("conv-1x1-nobias", lambda: L.Conv2D(3, 4, 1, bias=False), (2, 3, 3, 4), {}),
    ("conv-same", lambda: L.Conv2D(2, 3, 5, padding="same", init="xavier"), (1, 2, 6, 6), {}),
    ("maxpool-2", lambda: L.MaxPool2D(2), (2, 3, 6, 6), dict(x_fn=distinct_values)),
    ("maxpool-odd", lambda: L.MaxPool2D(2), (2, 2, 5, 7), dict(x_fn=distinct_values)),
    ("maxpool-overlap-pad", lambda: L.MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 6), dict(x_fn=distinct_values)),
    ("maxpool-gaps", lambda: L.MaxPool2D((2, 1), stride=(3, 2)), (1, 2, 8, 7), dict(x_fn=distinct_values)),
    ("avgpool-2", lambda: L.AvgPool2D(2), (2, 3, 5, 6), {}),
    ("avgpool-overlap-pad", lambda: L.AvgPool2D(3, stride=2, padding=1), (2, 2, 7, 7), {}),
    ("global-avgpool", L.GlobalAvgPool2D, (3, 4, 3, 5), {}),
    (
        "residual-identity",
        lambda: L.Residual([L.Conv2D(2, 2, 3, padding=1), L.ReLU(), L.Conv2D(2, 2, 3, padding=1)]),
        (2, 2, 4, 4),
        dict(x_fn=away_from_zero),
    ),
    (
        "residual-projection",
        lambda: L.Residual(
            [L.Conv2D(2, 3, 3, stride=2, padding=1), L.ReLU(), L.Conv2D(3, 3, 3, padding=1)], projection=True
        ),
        (2, 2, 5, 5),
        dict(x_fn=away_from_zero),
    ),
    (
        "residual-batchnorm",
        lambda: L.Residual([L.Conv2D(2, 2, 3, padding=1, bias=False), L.BatchNorm2D(2)]),
        (3, 2, 3, 3),
        dict(training=True),
    ),
]


@pytest.mark.parametrize("make_layer, shape, opts", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_layer_harness(make_layer, shape, opts, engine):
    check_layer(make_layer, shape, torch_fn=mirror(opts.get("training", False)), **opts)


# -- property-based: random geometry -----------------------------------------------------------
@st.composite
def conv_geometry(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # the smallest image the dilated kernel fits in, plus a little
    H = max(1, d[0] * (k[0] - 1) + 1 - 2 * pad[0]) + draw(st.integers(0, 3))
    W = max(1, d[1] * (k[1] - 1) + 1 - 2 * pad[1]) + draw(st.integers(0, 3))
    C, O, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    return dict(C=C, O=O, k=k, stride=stride, pad=pad, d=d, bias=draw(st.booleans())), (n, C, H, W)


@PROPERTY
@given(conv_geometry())
def test_conv_property(engine, geometry):
    g, shape = geometry
    check_layer(
        lambda: L.Conv2D(g["C"], g["O"], g["k"], stride=g["stride"], padding=g["pad"], dilation=g["d"], bias=g["bias"]),
        shape,
        torch_fn=mirror(),
    )


@st.composite
def pool_geometry(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    H = max(1, k[0] - 2 * pad[0]) + draw(st.integers(0, 3))
    W = max(1, k[1] - 2 * pad[1]) + draw(st.integers(0, 3))
    return dict(kernel_size=k, stride=stride, padding=pad), (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)


@PROPERTY
@given(pool_geometry(), st.sampled_from([L.MaxPool2D, L.AvgPool2D]))
def test_pool_property(engine, geometry, cls):
    cfg, shape = geometry
    check_layer(lambda: cls(**cfg), shape, torch_fn=mirror(), x_fn=distinct_values)


# -- memory layouts and the compiled / NumPy paths against PyTorch -----------------------------
LAYOUT_LAYERS = [
    lambda: L.Conv2D(3, 4, 3),
    lambda: L.Conv2D(3, 4, 3, padding=1, stride=2),
    lambda: L.Conv2D(1, 4, (3, 2), padding=(2, 1), dilation=(1, 2)),
    lambda: L.Conv2D(4, 2, 1, bias=False),
    lambda: L.MaxPool2D(2),
    lambda: L.MaxPool2D(3, stride=2, padding=1),
    lambda: L.AvgPool2D(2, stride=1),
    L.GlobalAvgPool2D,
    L.ReLU,
]


@pytest.mark.parametrize("make", LAYOUT_LAYERS, ids=lambda m: repr(m()))
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_layouts_and_engines_match_torch(make, layout, engine):
    """Both memory layouts of the input, both engines: float32 results equal PyTorch's."""
    layer = make()
    C = getattr(layer, "in_channels", 4)
    x = distinct_values(np.random.default_rng(1), (3, C, 9, 8))
    x_in = channels_last(x) if layout == "channels-last" else x.copy()
    y = layer.forward(x_in, training=True)
    g = np.random.default_rng(2).standard_normal(y.shape, dtype=np.float32)
    dx = layer.backward(g)
    x_t = torch.tensor(x, requires_grad=True)
    p_t = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    y_t = torch_forward(layer, x_t, p_t)
    y_t.backward(torch.from_numpy(g))
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-5, atol=1e-5)
    for k in layer.params:
        np.testing.assert_allclose(layer.grads[k], p_t[k].grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(x_in, x)  # the input is left alone


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_layouts_and_engines_match_torch(layout, training, engine):
    """BatchNorm2D reduces a channels-last input as an (N*H*W, C) matrix (compiled or NumPy),
    an NCHW one over axes (0, 2, 3): outputs, gradients and running statistics equal PyTorch's."""
    rng = np.random.default_rng(3)
    layer = L.BatchNorm2D(4)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, 4)
    layer.params["beta"][...] = rng.standard_normal(4)
    layer.state["running_mean"][...] = rng.standard_normal(4)
    layer.state["running_var"][...] = rng.uniform(0.5, 2, 4)
    rm = torch.tensor(layer.state["running_mean"].copy())
    rv = torch.tensor(layer.state["running_var"].copy())
    x = (rng.standard_normal((5, 4, 6, 7), dtype=np.float32) * 2 + 1).astype(np.float32)
    x_in = channels_last(x) if layout == "channels-last" else x.copy()
    y = layer.forward(x_in, training=training)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    g_in = channels_last(g) if layout == "channels-last" else g
    dx = layer.backward(g_in)
    x_t = torch.tensor(x, requires_grad=True)
    p_t = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    y_t = F.batch_norm(
        x_t, rm, rv, p_t["gamma"], p_t["beta"], training=training, momentum=layer.momentum, eps=layer.eps
    )
    y_t.backward(torch.from_numpy(g))
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    for k in layer.params:
        np.testing.assert_allclose(layer.grads[k], p_t[k].grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.state["running_mean"], rm.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.state["running_var"], rv.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, C", [(lambda: L.Conv2D(3, 4, 3), 3), (L.ReLU, 4), (lambda: L.MaxPool2D(2), 4), (lambda: L.BatchNorm2D(4), 4)]
)
def test_reused_buffers_never_overwrite_an_array_the_caller_kept(make, C, engine):
    """Layers serve outputs and input gradients from per-layer buffers that are reused only
    while nobody holds them: kept results stay intact, a smaller batch is served too."""
    layer = make()
    rng = np.random.default_rng(4)
    x1, x2 = (channels_last(rng.standard_normal((n, C, 8, 8), dtype=np.float32)) for n in (4, 3))
    y1 = layer.forward(x1, training=True)
    d1 = layer.backward(np.ones_like(y1))
    y1_copy, d1_copy = y1.copy(), d1.copy()
    y2 = layer.forward(x2, training=True)  # smaller batch, y1 and d1 still held
    d2 = layer.backward(np.ones_like(y2))
    np.testing.assert_array_equal(y1, y1_copy)
    np.testing.assert_array_equal(d1, d1_copy)
    fresh = make()
    np.testing.assert_array_equal(y2, fresh.forward(x2, training=True))
    np.testing.assert_array_equal(d2, fresh.backward(np.ones_like(y2)))
    del y1, d1, y2, d2  # now free: the next call may reuse them
    y3 = layer.forward(x1, training=True)
    np.testing.assert_array_equal(y3, fresh.forward(x1, training=True))


def test_conv_output_is_channels_last_so_the_next_conv_reads_it_for_free():
    y = L.Conv2D(1, 8, 3).forward(np.zeros((2, 1, 6, 6), np.float32))
    assert y.shape == (2, 8, 4, 4) and y.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), (3, 1)])
def test_maxpool_ties_go_to_the_first_maximum_like_torch(kernel, stride, engine):
    """Windows full of equal values (ReLU zeros, constant patches): row-major first max, as in
    PyTorch, including the anti-diagonal tie that separable implementations get wrong."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 8, 8)).astype(np.float32)  # many ties
    x[0, 0, :2, :2] = [[0, 5], [5, 1]]  # b == c == max > a
    for x_in in (x, channels_last(x)):
        layer = L.MaxPool2D(kernel, stride)
        y = layer.forward(x_in, training=True)
        g = rng.integers(-4, 5, y.shape).astype(np.float32)  # integer sums are exact in any order
        dx = layer.backward(g)
        x_t = torch.tensor(x, requires_grad=True)
        F.max_pool2d(x_t, kernel, stride).backward(torch.from_numpy(g))
        np.testing.assert_array_equal(dx, x_t.grad.numpy())


def test_maxpool_backward_after_an_eval_forward():
    x = distinct_values(np.random.default_rng(0), (2, 2, 4, 4))
    layer = L.MaxPool2D(2)
    y = layer.forward(x, training=False)
    dx = layer.backward(np.ones_like(y))
    assert dx.sum() == y.size and set(np.unique(dx)) == {0.0, 1.0}


# -- chunking under the column budget ----------------------------------------------------------
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Conv2D(3, 5, 3, padding=1), (7, 3, 6, 5)),
        (lambda: L.Conv2D(1, 4, 3, stride=2), (5, 1, 9, 9)),
        (lambda: L.Conv2D(4, 3, 2, dilation=2, bias=False), (6, 4, 7, 7)),
    ],
)
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_chunking_under_a_tiny_budget_gives_the_same_result(make, shape, layout, monkeypatch, engine):
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    x = channels_last(x) if layout == "channels-last" else x
    whole = make()
    y = whole.forward(x, training=True)
    g = np.random.default_rng(1).standard_normal(y.shape, dtype=np.float32)
    dx = whole.backward(g)

    chunked = make()
    monkeypatch.setattr(conv_module, "COLUMN_BUDGET", 1)  # one sample at a time
    y2 = chunked.forward(x, training=True)
    dx2 = chunked.backward(g)
    np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx2, dx, rtol=1e-6, atol=1e-6)
    for k in whole.params:
        np.testing.assert_allclose(chunked.grads[k], whole.grads[k], rtol=1e-5, atol=1e-5)
    # the budget bounds the scratch memory: no buffer holds more than one sample's columns
    one_sample = max(b.nbytes for b in chunked._colbufs.values())  # the column scratch
    assert one_sample * 2 <= max(b.nbytes for b in whole._colbufs.values())


def test_per_layer_budget_splits_predict_batches(engine):
    model = vn.Sequential([L.Conv2D(1, 3, 3), L.Flatten(), L.Dense(3 * 4 * 4, 2)], seed=0)
    x = np.random.default_rng(0).standard_normal((10, 1, 6, 6), dtype=np.float32)
    full = model.predict(x)
    model.layers[0].col_budget = 4 * 16 * 10 * 3  # about three samples' columns
    np.testing.assert_allclose(model.predict(x), full, rtol=1e-6, atol=1e-6)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, shape, words",
    [
        (L.Conv2D(1, 4, 3), (2, 3, 28, 28), ["Conv2D", "(n, 1, H, W)", "(2, 3, 28, 28)"]),
        (L.Conv2D(3, 4, 5), (2, 3, 4, 9), ["Conv2D", "4x9", "kernel 5x5"]),
        (L.Conv2D(3, 4, 3, dilation=3), (1, 3, 6, 6), ["dilated kernel 7x7", "(1, 3, 6, 6)"]),
        (L.Conv2D(2, 4, 3), (2, 2, 8), ["Conv2D", "(n, 2, H, W)", "(2, 2, 8)"]),
        (L.MaxPool2D(3), (1, 2, 2, 5), ["MaxPool2D", "2x5", "kernel 3x3"]),
        (L.AvgPool2D(2), (4, 8), ["AvgPool2D", "(n, C, H, W)", "(4, 8)"]),
        (L.GlobalAvgPool2D(), (4, 8), ["GlobalAvgPool2D", "(4, 8)"]),
    ],
)
def test_shape_errors_name_layer_and_shapes(layer, shape, words):
    with pytest.raises(ValueError) as e:
        layer.forward(np.zeros(shape, np.float32))
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_model_refuses_wrong_channels_before_training():
    model = vn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(2 * 3 * 3, 2)])
    with pytest.raises(ValueError, match=r"Conv2D.*received \(n, 3, 5, 5\)"):
        model.fit(np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, int), verbose=0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.Conv2D(0, 2, 3), "in_channels"),
        (lambda: L.Conv2D(1, 2, (3, 3, 3)), "kernel_size"),
        (lambda: L.Conv2D(1, 2, 3, stride=0), "stride"),
        (lambda: L.Conv2D(1, 2, 3, padding=-1), "padding"),
        (lambda: L.Conv2D(1, 2, 3, padding="same", stride=2), "same"),
        (lambda: L.Conv2D(1, 2, 3, init="nope"), "initializer"),
        (lambda: L.MaxPool2D(2, padding=2), "half the kernel"),
        (lambda: L.Residual([]), "non-empty list"),
        (lambda: L.Residual([L.ReLU()], projection=True), "Conv2D"),
    ],
)
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_residual_shape_mismatch_asks_for_a_projection():
    block = L.Residual([L.Conv2D(2, 3, 3, padding=1)])
    with pytest.raises(ValueError, match="projection"):
        block.forward(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="projection"):
        vn.Sequential([block]).shapes((2, 4, 4))


# -- configuration, shapes, FLOPs --------------------------------------------------------------
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Conv2D(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1), bias=False), (3, 11, 9)),
        (lambda: L.MaxPool2D(3, 2, 1), (2, 9, 8)),
        (lambda: L.AvgPool2D((2, 3)), (2, 7, 8)),
        (L.GlobalAvgPool2D, (5, 3, 3)),
        (
            lambda: L.Residual([L.Conv2D(2, 4, 3, stride=2, padding=1), L.BatchNorm2D(4), L.ReLU()], projection=True),
            (2, 7, 7),
        ),
    ],
)
def test_config_round_trip_and_output_shape(make, shape):
    layer = make()
    cls = vn.registry.LAYERS[type(layer).registered_name]
    again = cls.from_config(copy.deepcopy(layer.config()))
    assert again.config() == layer.config()
    y = layer.forward(np.zeros((2, *shape), np.float32))
    assert y.shape[1:] == layer.output_shape(shape) == again.output_shape(shape)
    assert layer.flops(shape) >= 0


def test_conv_flops_and_params_match_the_formula():
    conv = L.Conv2D(32, 64, 3)
    assert conv.output_shape((32, 13, 13)) == (64, 11, 11)
    assert conv.flops((32, 13, 13)) == 2 * 11 * 11 * 64 * 32 * 9
    assert conv.params["W"].shape == (64, 32, 3, 3) and conv.params["W"].dtype == np.float32
    std = conv.params["W"].std()
    assert abs(std - np.sqrt(2 / (32 * 9))) < 0.1 * std  # He init with the conv fan-in


def test_first_layer_skips_the_input_gradient():
    model = vn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(2 * 4 * 4, 2)])
    conv = model.layers[0]
    y = conv.forward(np.ones((2, 1, 6, 6), np.float32), training=True)
    assert conv.backward(np.ones_like(y)) is None
    assert np.abs(conv.grads["W"]).sum() > 0


# -- Residual inside a Sequential: flat buffers, training, files --------------------------------
def small_resnet(seed=0):
    return vn.Sequential(
        [
            L.Conv2D(1, 4, 3, padding=1, bias=False),
            L.BatchNorm2D(4),
            L.ReLU(),
            L.Residual([L.Conv2D(4, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(), L.Conv2D(4, 4, 3, padding=1)]),
            L.Residual(
                [L.Conv2D(4, 8, 3, stride=2, padding=1), L.ReLU(), L.Dropout(0.1), L.Conv2D(8, 8, 3, padding=1)],
                projection=True,
            ),
            L.MaxPool2D(2),
            L.GlobalAvgPool2D(),
            L.Dense(8, 3),
        ],
        seed=seed,
    )


def test_residual_sublayers_compute_with_the_flat_buffer_views():
    model = small_resnet()
    block = model.layers[4]
    assert sorted(block.params) == ["f.0.W", "f.0.b", "f.3.W", "f.3.b", "proj.W"]
    for prefix, sub in [("f.0.", block.layers[0]), ("f.3.", block.layers[3]), ("proj.", block.projection)]:
        for k, v in sub.params.items():
            assert v is block.params[prefix + k]
            assert np.shares_memory(v, model.flat_params)
            assert np.shares_memory(sub.grads[k], model.flat_grads)
    # an optimizer step moves the sub-layers' weights, because they are the flat buffer
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8), dtype=np.float32)
    before = block.layers[0].params["W"].copy()
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(before, block.layers[0].params["W"])
    assert np.abs(block.layers[0].grads["W"]).sum() > 0


def test_residual_init_is_seeded_and_reinitializes_sublayers():
    a, b, c = small_resnet(0), small_resnet(0), small_resnet(1)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)
    W = a.layers[3].layers[0].params["W"]
    assert W.std() > 0 and not np.array_equal(W, L.Conv2D(4, 4, 3, padding=1).params["W"])


def bars(n, size=10, seed=0):
    """Two classes of images: a bright vertical bar or a bright horizontal bar, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    pos = rng.integers(1, size - 1, n)
    for cls, axis in ((0, 3), (1, 2)):
        idx = np.flatnonzero(y == cls)
        index = [idx, 0, slice(None), slice(None)]
        mask = np.zeros((len(idx), size, size), bool)
        if axis == 3:
            mask[np.arange(len(idx)), :, pos[idx]] = True
        else:
            mask[np.arange(len(idx)), pos[idx], :] = True
        x[tuple(index[:2])] += 2.0 * mask
    return x, y


def test_small_cnn_learns():
    x, y = bars(256)
    model = vn.Sequential(
        [
            L.Conv2D(1, 4, 3, padding=1),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Conv2D(4, 8, 3),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Flatten(),
            L.Dense(8, 2),
        ],
        seed=0,
    )
    hist = model.fit(x, y, epochs=10, batch_size=32, verbose=0, seed=0, optimizer=vn.optim.Adam(lr=5e-3))
    losses = hist.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    xt, yt = bars(128, seed=1)
    assert model.evaluate(xt, yt)["accuracy"] > 0.9


def test_resnet_with_batchnorm_trains_saves_and_loads(tmp_path):
    x, y = bars(96, size=8)
    model = small_resnet()
    hist = model.fit(x, y % 3, epochs=3, batch_size=16, verbose=0, seed=0)
    assert np.isfinite(hist.history["loss"]).all()
    path = tmp_path / "resnet.vecnn"
    model.save(path)
    loaded = vn.load(path)
    assert loaded.config() == model.config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(model.layers, loaded.layers):
        assert sorted(a.state) == sorted(b.state)
        for k in a.state:
            np.testing.assert_array_equal(a.state[k], b.state[k])
    # running statistics were learned (not the initial 0 / 1) and survived the round trip
    assert np.abs(loaded.layers[3].state["f.1.running_mean"]).sum() > 0
    # the loaded block's sub-layers compute with the loaded model's flat buffer
    assert np.shares_memory(loaded.layers[4].projection.params["W"], loaded.flat_params)


@pytest.mark.parametrize(
    "name, shape", [("cnn", (1, 28, 28)), ("resnet", (1, 28, 28)), ("cnn", (3, 8, 8)), ("resnet", (3, 12, 12))]
)
def test_presets_build_and_run(name, shape):
    model = vn.presets.build(name, shape, 10, seed=0)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    assert model.predict(x).shape == (2, 10)
    assert model.shapes(shape)[-1] == (10,)
    assert "Conv2D" in model.summary()


def test_cnn_preset_with_batchnorm_trains():
    layers = vn.presets.cnn((1, 12, 12), 3, channels=(4, 8), hidden=16, batchnorm=True)
    assert [type(l).__name__ for l in layers[:4]] == ["Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D"]
    assert not layers[0].bias
    model = vn.Sequential(layers, seed=0)
    X = np.random.default_rng(0).standard_normal((32, 1, 12, 12), dtype=np.float32)
    y = np.arange(32) % 3
    X[:, 0, :4] += y[:, None, None] * 2.0  # a learnable signal
    before = model.evaluate(X, y)["loss"]
    model.fit(X, y, epochs=20, batch_size=16, verbose=0)
    assert model.evaluate(X, y)["loss"] < before


def test_presets_refuse_flat_input():
    with pytest.raises(ValueError, match="image shape"):
        vn.presets.build("cnn", (784,), 10)
