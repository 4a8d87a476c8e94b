"""PyTorch interop: to_torch gives the same outputs; from_torch brings the weights back exactly."""

import numpy as np
import pytest
import torch

import vecnn as vn
from vecnn import layers as L
from vecnn.interop.torch import from_torch, to_torch


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
