"""PyTorch interop: to_torch gives the same outputs; from_torch brings the weights back exactly,
and every module it maps computes what torch computes (eval and training mode)."""

import copy

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L
from vecnn.interop.torch import from_torch, to_torch

torch = pytest.importorskip("torch")
nn = torch.nn


def trained(layers, X, y, epochs=2):
    model = vn.Sequential(layers, seed=0)
    model.fit(X, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def test_mlp_round_trip(rng):
    X = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = trained(
        [
            L.Standardize().adapt(X),
            L.Flatten(),
            L.Dense(16, 8),
            L.BatchNorm1D(8),
            L.GELU(),
            L.Dropout(0.2),
            L.LeakyReLU(0.1),
            L.Dense(8, 6),
            L.Tanh(),
            L.Dense(6, 3),
        ],
        X,
        y,
    )
    net = to_torch(model)
    with torch.no_grad():
        out = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, model.predict(X), rtol=1e-4, atol=1e-5)
    back = from_torch(net)
    np.testing.assert_array_equal(back.flat_params, model.flat_params)
    np.testing.assert_allclose(back.predict(X), model.predict(X), rtol=1e-6, atol=1e-6)


def test_cnn_round_trip(rng):
    X = rng.standard_normal((32, 2, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    model = trained(
        [
            L.Conv2D(2, 4, 3, padding=1),
            L.BatchNorm2D(4),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Residual([L.Conv2D(4, 6, 3, stride=2, padding=1), L.ReLU()], projection=True),
            L.AvgPool2D(2),
            L.GlobalAvgPool2D(),
            L.Dense(6, 4),
        ],
        X,
        y,
        epochs=1,
    )
    net = to_torch(model)
    with torch.no_grad():
        out = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, model.predict(X), rtol=1e-4, atol=1e-5)
    back = from_torch(net)
    np.testing.assert_array_equal(back.flat_params, model.flat_params)


def test_torch_trained_model_imports(rng):
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    X = rng.standard_normal((10, 5)).astype(np.float32)
    model = from_torch(net)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(X), net(torch.from_numpy(X)).numpy(), rtol=1e-5, atol=1e-6)


def test_unsupported_module_is_named():
    with pytest.raises(ValueError, match="module 1 LSTM has no vecnn equivalent"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LSTM(2, 2)))


# -- every mapping: random weights and statistics, the same outputs as torch --------------------
IMG = (2, 7, 7)  # odd sizes: the pools' floor, the convolutions' borders


def conv(*mods):
    return [nn.Conv2d(2, 3, 3, padding=1), *mods]


def dense(*mods):
    return [nn.Linear(5, 4), *mods]


def tracking_off(m):
    """Running buffers kept, updates off (torch: eval mode uses them, training leaves them)."""
    m.track_running_stats = False
    return m


# (id, modules, per-sample input shape, deterministic in training mode)
MAPPINGS = [
    ("Linear", lambda: [nn.Linear(5, 4)], (5,), True),
    ("Linear-bias=False", lambda: [nn.Linear(5, 4, bias=False)], (5,), True),
    ("Conv2d", lambda: [nn.Conv2d(2, 3, 3)], IMG, True),
    ("Conv2d-stride-padding-pairs", lambda: [nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0))], IMG, True),
    ("Conv2d-dilation-bias=False", lambda: [nn.Conv2d(2, 3, 3, dilation=2, padding=2, bias=False)], IMG, True),
    ("Conv2d-same", lambda: [nn.Conv2d(2, 3, 5, padding="same")], IMG, True),
    ("Conv2d-same-even-kernel-dilated", lambda: [nn.Conv2d(2, 3, 2, padding="same", dilation=2)], IMG, True),
    ("Conv2d-valid", lambda: [nn.Conv2d(2, 3, 3, padding="valid")], IMG, True),
    ("Conv2d-reflect-no-padding", lambda: [nn.Conv2d(2, 3, 3, padding_mode="reflect")], IMG, True),
    ("BatchNorm1d", lambda: dense(nn.BatchNorm1d(4, eps=1e-3, momentum=0.3)), (5,), True),
    ("BatchNorm2d", lambda: conv(nn.BatchNorm2d(3)), IMG, True),
    ("BatchNorm1d-affine=False", lambda: dense(nn.BatchNorm1d(4, affine=False)), (5,), True),
    ("BatchNorm2d-affine=False", lambda: conv(nn.BatchNorm2d(3, affine=False, momentum=0.2)), IMG, True),
    ("BatchNorm1d-track_running_stats=False", lambda: dense(nn.BatchNorm1d(4, track_running_stats=False)), (5,), True),
    (
        "BatchNorm2d-track_running_stats=False-affine=False",
        lambda: conv(nn.BatchNorm2d(3, affine=False, track_running_stats=False)),
        IMG,
        True,
    ),
    ("BatchNorm1d-momentum=None", lambda: dense(nn.BatchNorm1d(4, momentum=None)), (5,), True),
    ("BatchNorm2d-momentum=None-affine=False", lambda: conv(nn.BatchNorm2d(3, momentum=None, affine=False)), IMG, True),
    ("BatchNorm2d-tracking-switched-off", lambda: conv(tracking_off(nn.BatchNorm2d(3))), IMG, True),
    ("ReLU-inplace", lambda: dense(nn.ReLU(inplace=True)), (5,), True),
    ("LeakyReLU", lambda: dense(nn.LeakyReLU(0.2, inplace=True)), (5,), True),
    ("Sigmoid", lambda: dense(nn.Sigmoid()), (5,), True),
    ("Tanh", lambda: dense(nn.Tanh()), (5,), True),
    ("GELU", lambda: dense(nn.GELU()), (5,), True),
    ("GELU-tanh", lambda: dense(nn.GELU(approximate="tanh")), (5,), True),
    ("Softmax-dim=-1", lambda: dense(nn.Softmax(dim=-1)), (5,), True),
    ("Softmax-dim=1-on-2d", lambda: dense(nn.Softmax(dim=1)), (5,), True),
    ("Softmax-dim=None-on-2d", lambda: dense(nn.Softmax()), (5,), True),
    ("Softmax-dim=3-on-4d", lambda: conv(nn.Softmax(dim=3)), IMG, True),
    ("Softmax-after-Flatten", lambda: conv(nn.Flatten(), nn.Softmax(dim=1)), IMG, True),
    ("Dropout", lambda: dense(nn.Dropout(0.3)), (5,), False),
    ("Dropout-inplace", lambda: dense(nn.Dropout(0.5, inplace=True)), (5,), False),
    ("Dropout-p=0", lambda: dense(nn.Dropout(0.0)), (5,), True),
    ("MaxPool2d", lambda: conv(nn.MaxPool2d(2)), IMG, True),
    ("MaxPool2d-padding", lambda: conv(nn.MaxPool2d(3, stride=2, padding=1)), IMG, True),
    ("MaxPool2d-pairs", lambda: conv(nn.MaxPool2d((2, 3), stride=(1, 2))), IMG, True),
    ("MaxPool2d-ceil-stride-1", lambda: conv(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)), IMG, True),
    ("AvgPool2d", lambda: conv(nn.AvgPool2d(2)), IMG, True),
    ("AvgPool2d-padding-counted", lambda: conv(nn.AvgPool2d(3, stride=2, padding=1)), IMG, True),
    ("AvgPool2d-count_include_pad=False-no-padding", lambda: conv(nn.AvgPool2d(2, count_include_pad=False)), IMG, True),
    ("AvgPool2d-divisor_override=kh*kw", lambda: conv(nn.AvgPool2d((2, 3), divisor_override=6)), IMG, True),
    ("AvgPool2d-ceil-stride-1", lambda: conv(nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True)), IMG, True),
    ("Flatten", lambda: conv(nn.Flatten()), IMG, True),
    ("Flatten-1-3-on-4d", lambda: conv(nn.Flatten(1, 3)), IMG, True),
    ("Flatten-negative-dims-on-4d", lambda: conv(nn.Flatten(-3, -1)), IMG, True),
    ("AdaptiveAvgPool2d(1)-Flatten", lambda: conv(nn.AdaptiveAvgPool2d(1), nn.Flatten()), IMG, True),
    ("AdaptiveAvgPool2d((1,1))-Flatten(1,3)", lambda: conv(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1, 3)), IMG, True),
    (
        "nested-Sequential",
        lambda: conv(nn.Sequential(nn.ReLU(), nn.Sequential(nn.MaxPool2d(2))), nn.Flatten()),
        IMG,
        True,
    ),
    ("nested-global-pool", lambda: conv(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())), IMG, True),
    ("Identity", lambda: [nn.Identity(), *dense(nn.Identity(), nn.ReLU())], (5,), True),
]


def randomized(modules, seed=0):
    """``nn.Sequential(*modules)`` with random weights, BatchNorm scales, shifts and statistics."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(*modules)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=gen))
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                    m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.num_batches_tracked.fill_(3)  # momentum=None: the next batch weighs 1/4
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


def torch_out(net, X, training=False):
    net.train(training)
    with torch.no_grad():
        return net(torch.from_numpy(X.copy())).numpy()


def batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, (L.BatchNorm1D, L.BatchNorm2D))]


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("make, shape, deterministic", [m[1:] for m in MAPPINGS], ids=[m[0] for m in MAPPINGS])
def test_mapping_computes_what_torch_computes(make, shape, deterministic):
    X = np.random.default_rng(1).standard_normal((6, *shape)).astype(np.float32)
    net = randomized(make())
    model = from_torch(net)
    expected = torch_out(net, X)
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.forward(X), expected, rtol=1e-5, atol=1e-5)
    # and back: to_torch(from_torch(net)) is net again
    np.testing.assert_allclose(torch_out(to_torch(model), X), expected, rtol=1e-5, atol=1e-5)
    if deterministic:  # training mode: batch statistics, and the running statistics they update
        train_net = copy.deepcopy(net)
        for _ in range(2):
            expected = torch_out(train_net, X, training=True)
            np.testing.assert_allclose(model.forward(X, training=True), expected, rtol=1e-5, atol=1e-5)
        torch_bns = [m for m in train_net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert len(torch_bns) == len(batchnorms(model))
        for m, layer in zip(torch_bns, batchnorms(model)):
            assert sorted(layer.params) == (["beta", "gamma"] if m.affine else [])
            if m.running_mean is None:
                assert layer.state == {}
                continue
            np.testing.assert_allclose(layer.state["running_mean"], m.running_mean.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(layer.state["running_var"], m.running_var.numpy(), rtol=1e-5, atol=1e-6)
            if m.momentum is None:
                assert layer.state["num_batches_tracked"].tolist() == [m.num_batches_tracked.item()] == [5]


def test_top_level_global_pool_is_one_layer():
    model = from_torch(nn.Sequential(nn.Conv2d(2, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)))
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "GlobalAvgPool2D", "Dense"]


def test_dropout_in_training_mode_drops_at_the_rate():
    """Masks are random on both sides; vecnn's zeroes about p of the values and scales the rest."""
    model = from_torch(nn.Sequential(nn.Dropout(0.25)))
    X = np.ones((200, 50), np.float32)
    out = model.forward(X, training=True)
    assert set(np.unique(out).tolist()) <= {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.02


@pytest.mark.parametrize(
    "options",
    [dict(affine=False), dict(track_running_stats=False), dict(momentum=None), dict(affine=False, momentum=None)],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_batchnorm_options_round_trip(rng, options):
    """A vecnn model trained with the BatchNorm options goes to torch with them and comes back
    with the same parameters and statistics (the count of batches too)."""
    X = rng.standard_normal((24, 2, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    model = trained(
        [L.Conv2D(2, 3, 3), L.BatchNorm2D(3, **options), L.Flatten(), L.Dense(12, 4), L.BatchNorm1D(4, **options)],
        X,
        y,
    )
    net = to_torch(model)
    for m, layer in zip([net[1], net[4]], batchnorms(model)):
        assert (m.affine, m.track_running_stats, m.momentum) == (
            layer.affine,
            layer.track_running_stats,
            layer.momentum,
        )
        if "num_batches_tracked" in layer.state:
            assert m.num_batches_tracked.item() == layer.state["num_batches_tracked"][0] == 4  # 2 epochs, 2 batches
    np.testing.assert_allclose(torch_out(net, X), model.predict(X), rtol=1e-4, atol=1e-5)
    back = from_torch(net)
    assert [l.config() for l in back.layers] == [l.config() for l in model.layers]
    np.testing.assert_array_equal(back.flat_params, model.flat_params)
    for a, b in zip(batchnorms(back), batchnorms(model)):
        assert sorted(a.state) == sorted(b.state)
        for k in b.state:
            np.testing.assert_array_equal(a.state[k], b.state[k])
