"""vecnn.gradcheck: finite differences find broken gradients and pass correct ones."""

import numpy as np
import pytest

import vecnn as vn
from vecnn import gradcheck
from vecnn import layers as L


class WrongReLU(L.ReLU):
    """Masks on the gradient instead of the input: a classic copy-paste bug."""

    def backward(self, grad_y):
        return grad_y * (grad_y > 0)


class TransposedDense(L.Dense):
    """Right dX and db, but dW off by a factor of 2."""

    def backward(self, grad_y):
        gx = super().backward(grad_y)
        self.grads["W"][...] *= 0.5
        return gx


def test_numerical_grad_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = gradcheck.numerical_grad(lambda v: float(np.sum(v**3)), x)
    np.testing.assert_allclose(g, 3 * x**2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored after perturbing


def test_numerical_grad_refuses_float32():
    with pytest.raises(ValueError, match="float64"):
        gradcheck.numerical_grad(lambda v: 0.0, np.zeros(3, np.float32))


def test_rel_error():
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert gradcheck.rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2)
    assert gradcheck.rel_error([np.nan], [1.0]) == float("inf")
    with pytest.raises(ValueError, match="shapes"):
        gradcheck.rel_error(np.zeros(2), np.zeros(3))


def test_check_layer_passes_correct_layers():
    rng = np.random.default_rng(0)
    for layer, x, training in [
        (L.Dense(4, 3), rng.standard_normal((5, 4)), False),
        (L.BatchNorm1D(3), rng.standard_normal((6, 3)), True),
        (L.Dropout(0.5, seed=2), rng.standard_normal((4, 6)), True),
        (L.GELU("tanh"), rng.standard_normal((3, 4)), False),
    ]:
        errors = gradcheck.check_layer(layer, x, training=training)
        assert set(errors) == {"x", *layer.params}
        gradcheck.assert_ok(errors)


def test_check_layer_finds_a_wrong_backward():
    x = np.random.default_rng(0).standard_normal((4, 5))
    errors = gradcheck.check_layer(WrongReLU(), x)
    assert errors["x"] > 0.1
    with pytest.raises(AssertionError, match="x: "):
        gradcheck.assert_ok(errors)
    gradcheck.assert_ok(gradcheck.check_layer(L.ReLU(), x))  # the real one on the same input


def test_check_layer_names_the_wrong_parameter():
    x = np.random.default_rng(1).standard_normal((3, 4))
    errors = gradcheck.check_layer(TransposedDense(4, 2), x)
    assert errors["W"] > 0.1 and errors["x"] < 1e-6 and errors["b"] < 1e-6


def test_check_layer_leaves_the_layer_alone():
    layer = L.Dropout(0.5, seed=0)
    state = layer.rng.bit_generator.state
    dense = L.Dense(3, 2)
    W = dense.params["W"].copy()
    gradcheck.check_layer(layer, np.ones((2, 3)), training=True)
    gradcheck.check_layer(dense, np.ones((2, 3), np.float32))
    assert layer.rng.bit_generator.state == state
    assert dense.params["W"].dtype == np.float32
    np.testing.assert_array_equal(dense.params["W"], W)


def test_dropout_mask_is_fixed_across_evaluations():
    """Without a fixed mask every evaluation would drop different units and the check would fail."""
    x = np.random.default_rng(0).standard_normal((8, 8))
    errors = gradcheck.check_layer(L.Dropout(0.5, seed=4), x, training=True)
    assert errors["x"] < 1e-8


def test_check_loss_passes_and_fails():
    rng = np.random.default_rng(0)
    pred, y = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    gradcheck.assert_ok(gradcheck.check_loss(vn.losses.CrossEntropy(0.2), pred, y))

    class NoMean(vn.losses.CrossEntropy):
        def backward(self):
            return super().backward() * len(self._grad)  # forgot the 1/n

    assert gradcheck.check_loss(NoMean(), pred, y)["pred"] > 0.5


def small_model(*middle, seed=0):
    return vn.Sequential([L.Dense(4, 6), *middle, L.Dense(6, 3)], seed=seed)


@pytest.mark.parametrize(
    "middle, training",
    [
        ((L.Tanh(),), False),
        ((L.BatchNorm1D(6), L.GELU()), True),
        ((L.Sigmoid(), L.Dropout(0.3)), True),
    ],
)
def test_check_model_passes_correct_models(middle, training):
    rng = np.random.default_rng(0)
    model = small_model(*middle)
    X, y = rng.standard_normal((7, 4)).astype(np.float32), rng.integers(0, 3, 7)
    before = model.flat_params.copy()
    errors = gradcheck.check_model(model, X, y, loss="cross_entropy", training=training)
    assert set(errors) == {f"{i}.{k}" for i, l in enumerate(model.layers) for k in l.params}
    gradcheck.assert_ok(errors)
    np.testing.assert_array_equal(model.flat_params, before)
    assert model.flat_params.dtype == np.float32


def test_check_model_finds_a_broken_layer_and_names_it():
    rng = np.random.default_rng(0)
    model = small_model(WrongReLU())
    X, y = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 3))
    errors = gradcheck.check_model(model, X, y, loss="mse")
    assert errors["2.W"] < 1e-6 and errors["2.b"] < 1e-6  # above the bug: still right
    assert errors["0.W"] > 0.1  # below it: wrong
    with pytest.raises(AssertionError, match="0.W"):
        gradcheck.assert_ok(errors)


def test_check_model_uses_the_models_loss_or_asks_for_one():
    rng = np.random.default_rng(0)
    model = small_model(L.ReLU())
    X, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    with pytest.raises(ValueError, match="loss"):
        gradcheck.check_model(model, X, y)
    model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0)
    gradcheck.assert_ok(gradcheck.check_model(model, X, y))


def test_float64_model_is_a_separate_copy():
    model = small_model(L.ReLU())
    m64 = gradcheck.float64_model(model)
    assert m64.flat_params.dtype == np.float64
    assert all(np.shares_memory(l.params[k], m64.flat_params) for l in m64.layers for k in l.params)
    np.testing.assert_array_equal(m64.flat_params.astype(np.float32), model.flat_params)
    m64.flat_params[...] = 0
    assert model.flat_params.any()
