"""The models and layer cases both export tests use (tests/test_onnx.py, tests/test_keras.py):
each exporter's outputs are compared with ``model.predict`` on the same networks."""

from __future__ import annotations

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L

TOL = dict(rtol=1e-5, atol=1e-5)


def walk(layers):
    for layer in layers:
        yield layer
        yield from walk(layer.sublayers())


def prepared(layers, shape, rng):
    """A model of ``layers`` for per-sample ``shape`` whose BatchNorms and Standardizes are not
    the identity: random running statistics, scale and shift, statistics adapted to data of
    mean 1 and std 3."""
    model = vn.Sequential(layers, seed=0)
    for layer in walk(model.layers):
        if isinstance(layer, (L.BatchNorm1D, L.BatchNorm2D)):
            n = layer.num_features
            layer.state["running_mean"][...] = rng.normal(size=n)
            layer.state["running_var"][...] = rng.uniform(0.3, 3.0, size=n)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, size=n)
            layer.params["beta"][...] = rng.normal(size=n)
        if isinstance(layer, L.Standardize):
            layer.adapt((1 + 3 * rng.standard_normal((64, *shape))).astype(np.float32))
    model.metadata["input_shape"] = list(shape)
    return model


def data(rng, n, shape):
    # shifted negative: a padded max-pool window whose real pixels are all negative tells
    # -inf padding (vecnn's) from zero padding
    return (rng.standard_normal((n, *shape)) - 0.7).astype(np.float32)


def mlp(rng):
    X = data(rng, 48, (1, 4, 4))
    y = rng.integers(0, 3, 48)
    model = vn.Sequential(
        [
            L.Standardize().adapt(X),
            L.Flatten(),
            L.Dense(16, 12),
            L.BatchNorm1D(12),
            L.GELU(),
            L.Dropout(0.3),
            L.Dense(12, 8),
            L.LeakyReLU(0.1),
            L.Dense(8, 3),
        ],
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    return model, X


def cnn(rng):
    X = data(rng, 32, (2, 8, 8))
    y = rng.integers(0, 4, 32)
    model = vn.Sequential(
        [
            L.Conv2D(2, 4, 3, padding=1, bias=False),
            L.BatchNorm2D(4),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Residual([L.Conv2D(4, 6, 3, stride=2, padding=1), L.BatchNorm2D(6), L.ReLU()], projection=True),
            L.Flatten(),
            L.Dense(24, 4),
        ],
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    return model, X


def assert_batchnorm_learned(model):
    """The BatchNorms' running statistics moved away from (0, 1): they are not the identity."""
    bns = [l for l in walk(model.layers) if isinstance(l, (L.BatchNorm1D, L.BatchNorm2D))]
    assert bns
    for bn in bns:
        assert np.abs(bn.state["running_mean"]).max() > 1e-3
        assert np.abs(bn.state["running_var"] - 1).max() > 1e-3


CASES = [
    pytest.param(lambda: [L.Dense(5, 4)], (5,), id="dense"),
    pytest.param(lambda: [L.Dense(5, 4, bias=False)], (5,), id="dense-no-bias"),
    pytest.param(lambda: [L.Conv2D(2, 3, 3)], (2, 7, 6), id="conv"),
    pytest.param(
        lambda: [L.Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), bias=False)], (2, 7, 6), id="conv-stride-pad"
    ),
    pytest.param(lambda: [L.Conv2D(2, 3, 3, dilation=2, padding=2)], (2, 7, 6), id="conv-dilation"),
    pytest.param(
        lambda: [L.Conv2D(2, 3, 3, stride=2, dilation=(2, 1), padding=1)], (2, 9, 8), id="conv-stride-dilation"
    ),
    pytest.param(lambda: [L.MaxPool2D(2)], (2, 7, 6), id="maxpool"),
    pytest.param(lambda: [L.MaxPool2D(3, stride=2, padding=1)], (2, 7, 6), id="maxpool-pad"),
    pytest.param(lambda: [L.AvgPool2D((2, 3), stride=1)], (2, 5, 6), id="avgpool"),
    pytest.param(lambda: [L.AvgPool2D(3, stride=2, padding=1)], (2, 7, 6), id="avgpool-pad"),
    pytest.param(lambda: [L.GlobalAvgPool2D()], (3, 4, 5), id="global-avgpool"),
    pytest.param(lambda: [L.Flatten()], (2, 3, 4), id="flatten"),
    pytest.param(lambda: [L.Dropout(0.5)], (5,), id="dropout"),
    pytest.param(lambda: [L.BatchNorm1D(5, eps=1e-3)], (5,), id="batchnorm1d"),
    pytest.param(lambda: [L.BatchNorm2D(2)], (2, 4, 3), id="batchnorm2d"),
    pytest.param(lambda: [L.ReLU()], (2, 3, 3), id="relu"),
    pytest.param(lambda: [L.LeakyReLU(0.2)], (2, 3, 3), id="leaky-relu"),
    pytest.param(lambda: [L.Sigmoid()], (2, 3, 3), id="sigmoid"),
    pytest.param(lambda: [L.Tanh()], (7,), id="tanh"),
    pytest.param(lambda: [L.GELU()], (2, 3, 3), id="gelu"),
    pytest.param(lambda: [L.GELU("tanh")], (2, 3, 3), id="gelu-tanh"),
    pytest.param(lambda: [L.Softmax()], (5,), id="softmax"),
    pytest.param(lambda: [L.Residual([L.Conv2D(2, 2, 3, padding=1), L.ReLU()])], (2, 5, 5), id="residual"),
    pytest.param(
        lambda: [L.Residual([L.Conv2D(2, 4, 3, stride=2, padding=1), L.BatchNorm2D(4)], projection=True)],
        (2, 6, 6),
        id="residual-projection",
    ),
    pytest.param(lambda: [L.Residual([L.Dense(5, 5), L.Tanh()])], (5,), id="residual-dense"),
    pytest.param(lambda: [L.Standardize(per="channel")], (2, 3, 3), id="standardize-channel"),
    pytest.param(lambda: [L.Standardize(per="feature")], (2, 3, 3), id="standardize-feature"),
    pytest.param(lambda: [L.Standardize(per="global")], (6,), id="standardize-global"),
]


def batchnorm_options_model(rng, **options):
    """A CNN and an MLP part, each BatchNorm built with ``options``, trained a few steps so the
    running statistics (a cumulative average when ``momentum=None``) moved off (0, 1)."""
    X = data(rng, 24, (2, 6, 6))
    y = rng.integers(0, 3, 24)
    model = vn.Sequential(
        [
            L.Conv2D(2, 4, 3, padding=1),
            L.BatchNorm2D(4, **options),
            L.ReLU(),
            L.Flatten(),
            L.Dense(144, 8),
            L.BatchNorm1D(8, **options),
            L.Tanh(),
            L.Dense(8, 3),
        ],
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert_batchnorm_learned(model)
    return model, X


#: a BatchNorm that normalizes with its batch's own statistics in inference too
#: (``track_running_stats=False``), which no exporter can translate: id -> (layers, input shape)
BATCH_STATISTICS_MODELS = {
    "1d": (lambda: [L.Dense(3, 4), L.BatchNorm1D(4, track_running_stats=False)], (3,)),
    "2d-in-residual": (
        lambda: [L.Conv2D(1, 2, 3), L.Residual([L.BatchNorm2D(2, track_running_stats=False, affine=False)])],
        (1, 5, 5),
    ),
}


class Double(L.Layer):
    """A user's own layer: vecnn runs it, no exporter has a translation for it."""

    def forward(self, x, training=False):
        return 2 * x


class MyReLU(L.ReLU):
    """A subclass may compute something else: refused, not exported as its parent."""
