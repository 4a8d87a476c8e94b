"""The Standardize layer: statistics from the training split, kept in state, saved with the model."""

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L


@pytest.fixture
def images(rng):
    # channels with very different scales and offsets
    scale = np.array([1.0, 10.0, 0.1], np.float32)[None, :, None, None]
    shift = np.array([5.0, -3.0, 0.0], np.float32)[None, :, None, None]
    return (rng.standard_normal((200, 3, 5, 4), dtype=np.float32) * scale + shift).astype(np.float32)


@pytest.mark.parametrize(
    "per, axes, stats_shape",
    [
        ("channel", (0, 2, 3), (3, 1, 1)),
        ("feature", (0,), (3, 5, 4)),
        ("global", (0, 1, 2, 3), (1, 1, 1)),
    ],
)
def test_adapt_matches_numpy_statistics(images, per, axes, stats_shape):
    layer = L.Standardize(per=per).adapt(images)
    x64 = images.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)[0]
    std = x64.std(axis=axes, keepdims=True)[0]
    assert layer.state["mean"].shape == stats_shape and layer.state["mean"].dtype == np.float32
    assert np.allclose(layer.state["mean"], mean, rtol=1e-5, atol=1e-6)
    assert np.allclose(layer.state["std"], std, rtol=1e-5)
    y = layer.forward(images)
    assert y.dtype == np.float32 and y.shape == images.shape
    assert np.allclose(y.mean(axis=axes), 0, atol=1e-4) and np.allclose(y.std(axis=axes), 1, atol=1e-4)


def test_dense_input_is_standardized_per_feature(rng):
    X = rng.standard_normal((100, 6), dtype=np.float32) * np.arange(1, 7, dtype=np.float32)
    layer = L.Standardize().adapt(X)
    assert layer.state["mean"].shape == (6,) and layer.input_spec == (6,)
    assert np.allclose(layer.forward(X).std(axis=0), 1, atol=1e-5)


def test_statistics_come_from_the_adapt_data_only(images, rng):
    train, test = images[:150], images[150:] * 2 + 1
    layer = L.Standardize().adapt(train)
    m = train.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    s = train.astype(np.float64).std(axis=(0, 2, 3), keepdims=True)
    assert np.allclose(layer.forward(test), (test - m) / s, rtol=1e-4, atol=1e-4)


def test_constant_inputs_are_only_centered():
    X = np.ones((10, 3), np.float32) * np.array([2, 3, 4], np.float32)
    X[:, 1] += np.arange(10, dtype=np.float32)
    layer = L.Standardize(per="feature").adapt(X)
    assert layer.state["std"][0] == 1 and layer.state["std"][2] == 1
    assert np.all(layer.forward(X)[:, [0, 2]] == 0)


def test_backward_divides_by_std_and_matches_finite_differences(images, rng):
    layer = L.Standardize().adapt(images).astype(np.float64)
    x = images[:4].astype(np.float64)
    g = rng.standard_normal(x.shape)
    layer.forward(x, training=True)
    dx = layer.backward(g)
    assert np.allclose(dx, g / layer.state["std"])
    eps, num = 1e-6, np.zeros_like(x)
    for idx in [(0, 0, 0, 0), (1, 1, 2, 3), (3, 2, 4, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = ((layer.forward(xp) * g).sum() - (layer.forward(xm) * g).sum()) / (2 * eps)
        assert np.isclose(dx[idx], num[idx], rtol=1e-6)
    layer.input_grad = False
    assert layer.backward(g) is None
    assert layer.params == {} and layer.grads == {}


def test_refuses_use_before_adapt_and_wrong_shapes(images):
    with pytest.raises(ValueError, match="adapt"):
        L.Standardize().forward(images)
    layer = L.Standardize().adapt(images)
    with pytest.raises(ValueError, match=r"Standardize.*\(n, 3, "):
        layer.forward(images[:, :2])
    with pytest.raises(ValueError, match="input_shape"):
        L.Standardize(input_shape=(3, 5, 4)).adapt(images[:, :, :4])
    with pytest.raises(ValueError, match="per"):
        L.Standardize(per="pixel")
    with pytest.raises(ValueError, match="non-empty"):
        L.Standardize().adapt(np.zeros((0, 3), np.float32))


def test_config_round_trip_gives_the_shapes_to_load_into(images):
    layer = L.Standardize(per="feature").adapt(images)
    clone = L.Standardize.from_config(layer.config())
    assert {k: v.shape for k, v in clone.state.items()} == {k: v.shape for k, v in layer.state.items()}
    assert clone.output_shape((3, 5, 4)) == (3, 5, 4) and clone.flops((3, 5, 4)) == 120


def test_statistics_are_saved_in_the_model_file(tmp_path, images, rng):
    y = rng.integers(0, 3, len(images))
    std = L.Standardize().adapt(images)
    model = vn.Sequential([std, L.Flatten(), L.Dense(60, 3)], seed=0)
    model.fit(images, y, loss="cross_entropy", epochs=1, batch_size=50, verbose=0)
    assert np.array_equal(model.layers[0].state["mean"], std.state["mean"])  # not reset by Sequential
    path = tmp_path / "m.vecnn"
    model.save(path)
    loaded = vn.load(path)
    assert isinstance(loaded.layers[0], L.Standardize)
    for k in ("mean", "std"):
        assert np.array_equal(loaded.layers[0].state[k], std.state[k])
    assert np.array_equal(loaded.predict(images), model.predict(images))
