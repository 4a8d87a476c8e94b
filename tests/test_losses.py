"""Every loss through the shared harness (twin, finite differences, PyTorch, float32), plus large
logits and bad targets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from harness import check_loss

import vecnn as vn
from vecnn import gradcheck, reference
from vecnn.losses import MSE, BCEWithLogits, CrossEntropy


@pytest.fixture(autouse=True)
def every_cpu_backend(cpu_backend):
    """Every loss test runs on the compiled CPU backend and on the NumPy reference."""
    return cpu_backend


def labels(rng, shape):
    return rng.integers(0, shape[1], shape[0])


def values(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def probabilities(rng, shape):
    return rng.uniform(0, 1, shape).astype(np.float32)


def hard_binary(rng, shape):
    return rng.integers(0, 2, shape).astype(np.float32)


def torch_ce(loss, pred, target):
    return F.cross_entropy(pred, torch.from_numpy(target), label_smoothing=loss.label_smoothing)


def torch_mse(loss, pred, target):
    return F.mse_loss(pred, torch.from_numpy(target.astype(np.float64)).reshape(pred.shape))


def torch_bce(loss, pred, target):
    return F.binary_cross_entropy_with_logits(pred, torch.from_numpy(target.astype(np.float64)).reshape(pred.shape))


CASES = [
    ("ce", CrossEntropy, [(5, 4), (1, 3), (8, 10)], labels, torch_ce),
    ("ce-smooth0.1", lambda: CrossEntropy(label_smoothing=0.1), [(5, 4), (6, 2)], labels, torch_ce),
    ("ce-smooth0.5", lambda: CrossEntropy(label_smoothing=0.5), [(4, 7)], labels, torch_ce),
    ("mse", MSE, [(6, 3), (4, 1), (2, 3, 2)], values, torch_mse),
    ("mse-flat-target", MSE, [(5, 1)], lambda rng, s: values(rng, s[:1]), torch_mse),
    ("bce", BCEWithLogits, [(6, 1), (4, 3)], probabilities, torch_bce),
    ("bce-hard", BCEWithLogits, [(7, 2)], hard_binary, torch_bce),
]
ROWS = [
    pytest.param(make, shape, target, tfn, id=f"{name}-{'x'.join(map(str, shape))}")
    for name, make, shapes, target, tfn in CASES
    for shape in shapes
]


@pytest.mark.parametrize("make_loss, shape, make_target, torch_fn", ROWS)
def test_loss_harness(make_loss, shape, make_target, torch_fn):
    errs = check_loss(make_loss, shape, make_target, torch_fn)
    assert len(errs) == 5


@pytest.mark.parametrize(
    "name, cls",
    [("cross_entropy", CrossEntropy), ("mse", MSE), ("bce_with_logits", BCEWithLogits), ("bce", BCEWithLogits)],
)
def test_get_by_name(name, cls):
    assert isinstance(vn.losses.get(name), cls)


def test_harness_catches_a_wrong_loss_gradient():
    class HalfMSE(MSE):  # the classic 1/2 factor left in
        def backward(self):
            return super().backward() / 2

    with pytest.raises(AssertionError, match="twin vs vectorized"):
        check_loss(HalfMSE, (4, 3), values)


# -- large logits --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, target",
    [
        (CrossEntropy, np.array([0, 2, 1])),
        (lambda: CrossEntropy(label_smoothing=0.2), np.array([0, 2, 1])),
        (BCEWithLogits, np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], np.float32)),
    ],
)
def test_large_logits_stay_finite(make, target):
    pred = np.array([[1e4, -1e4, 0], [-1e4, 1e4, 3e3], [5e3, 1e4, -1e4]], np.float32)
    loss = make()
    value = loss.forward(pred, target)
    grad = loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all() and grad.dtype == np.float32
    assert np.isfinite(reference.loss_forward(loss, pred, target))
    twin = reference.loss_backward(loss, pred, target)
    np.testing.assert_allclose(grad, twin, rtol=1e-5, atol=1e-7)
    pt = torch.from_numpy(pred.astype(np.float64))
    tt = torch.from_numpy(target)
    if isinstance(loss, CrossEntropy):
        expected = F.cross_entropy(pt, tt, label_smoothing=loss.label_smoothing).item()
    else:
        expected = F.binary_cross_entropy_with_logits(pt, tt.double()).item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value > 100  # the wrong predictions cost thousands, not 0 or inf


def test_confident_right_answer_costs_nothing():
    loss = CrossEntropy()
    value = loss.forward(np.array([[1e4, 0, 0]], np.float32), np.array([0]))
    assert value == 0.0 and not loss.backward().any()


# -- bad targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, match",
    [
        (np.array([0, 1, 4]), r"\[0, 4\).*4"),
        (np.array([0, -1, 2]), r"\[0, 4\).*-1"),
        (np.array([0.0, 1.5, 2.0]), "integer"),
        (np.array([0.0, np.nan, 2.0]), "integer"),
        (np.array([[0], [1], [2]]), r"shape \(n,\).*\(3, 1\)"),
        (np.array(["a", "b", "c"]), "integer"),
    ],
)
def test_cross_entropy_bad_labels(target, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropy().check_target("y", (4,), target)


def test_cross_entropy_accepts_integral_floats():
    y = CrossEntropy().check_target("y", (4,), np.array([0.0, 3.0, 1.0]))
    assert y.dtype == np.int64 and y.tolist() == [0, 3, 1]


@pytest.mark.parametrize(
    "cls, target, match",
    [
        (MSE, np.zeros((3, 2)), r"\(n, 3\).*\(3, 2\)"),
        (MSE, np.array([[0, 1, np.inf]] * 3), "non-finite"),
        (MSE, np.array([["a"] * 3] * 3), "numeric"),
        (BCEWithLogits, np.array([[0, 1, 2]] * 3, np.float32), r"\[0, 1\]"),
        (BCEWithLogits, np.zeros((3, 4)), r"\(n, 3\)"),
    ],
)
def test_value_losses_bad_targets(cls, target, match):
    with pytest.raises(ValueError, match=match):
        cls().check_target("y", (3,), target)


def test_pred_and_target_length_mismatch():
    for loss, target in [
        (CrossEntropy(), np.array([0, 1])),
        (MSE(), np.zeros((2, 3), np.float32)),
        (BCEWithLogits(), np.zeros((2, 3), np.float32)),
    ]:
        with pytest.raises(ValueError, match="3 samples.*2"):
            loss.forward(np.zeros((3, 3), np.float32), target)


def test_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropy(label_smoothing=1.0)


def test_gradcheck_on_losses_directly():
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((4, 5))
    for loss, target in [
        (CrossEntropy(0.1), rng.integers(0, 5, 4)),
        (MSE(), rng.standard_normal((4, 5))),
        (BCEWithLogits(), rng.uniform(0, 1, (4, 5))),
    ]:
        gradcheck.assert_ok(gradcheck.check_loss(loss, pred, target))
