"""The loop twins keep their rules: no array arithmetic at all (only ``tolist`` and loops over
Python floats), no peeking at a layer's cache, a clear error for a layer without a twin."""

import ast
import contextlib
import copy
import pathlib

import numpy as np
import pytest
from harness import forbidden
from hypothesis import given, settings
from hypothesis import strategies as st

import vecnn as vn
from vecnn import layers as L
from vecnn import reference
from vecnn.losses import MSE, BCEWithLogits, CrossEntropy


class Untouchable(np.ndarray):
    """An array that can only be inspected (shape, dtype) and read out with ``tolist()``: any
    ufunc (``+``, ``@``, ``.sum()``, ``.max()``, ``np.exp``...) or NumPy function raises."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise AssertionError(f"a twin did array arithmetic: np.{ufunc.__name__}.{method}")

    def __array_function__(self, func, types, args, kwargs):
        raise AssertionError(f"a twin called np.{func.__name__} on an array")


def untouchable(a):
    return np.asarray(a).view(Untouchable)


def fenced(layer):
    """A copy of ``layer`` whose params and state are untouchable arrays."""
    layer = copy.deepcopy(layer)
    for table in (layer.params, layer.state):
        for k in table:
            table[k] = untouchable(table[k])
    return layer


FORBIDDEN_NP = [
    "matmul",
    "dot",
    "vdot",
    "inner",
    "outer",
    "einsum",
    "tensordot",
    "sum",
    "mean",
    "max",
    "min",
    "amax",
    "amin",
    "var",
    "std",
    "prod",
    "cumsum",
    "average",
    "maximum",
    "exp",
]


@contextlib.contextmanager
def no_numpy_math():
    """``np.matmul``, ``np.sum``, ... raise inside the block (the ``@`` operator and array methods
    cannot be patched on ndarray; ``Untouchable`` inputs cover those)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in FORBIDDEN_NP:

            def refuse(*args, _name=name, **kwargs):
                raise AssertionError(f"a twin called np.{_name}")

            mp.setattr(np, name, refuse)
        yield


def layer_cases():
    """(layer, input shape, training) for every twin this test knows how to build."""
    cases = [
        (L.Dense(5, 3), (4, 5), False),
        (L.Dense(5, 3, bias=False), (2, 5), False),
        (L.ReLU(), (3, 4), False),
        (L.LeakyReLU(0.1), (2, 3, 2, 2), False),
        (L.Sigmoid(), (3, 4), False),
        (L.Tanh(), (3, 4), False),
        (L.GELU(), (3, 4), False),
        (L.GELU("tanh"), (3, 4), False),
        (L.Softmax(), (3, 4), False),
        (L.Flatten(), (2, 3, 2, 2), False),
        (L.Dropout(0.3), (3, 4), True),
        (L.Dropout(0.3), (3, 4), False),
        (L.BatchNorm1D(4), (5, 4), True),
        (L.BatchNorm1D(4), (5, 4), False),
        (L.BatchNorm2D(3), (2, 3, 3, 3), True),
        (L.BatchNorm2D(3), (2, 3, 3, 3), False),
    ]
    # twins added by the convolution work, where both the layer and its twin exist
    for name, make in [
        ("Conv2D", lambda: L.Conv2D(3, 4, 3, padding=1)),
        ("MaxPool2D", lambda: L.MaxPool2D(2)),
        ("AvgPool2D", lambda: L.AvgPool2D(2)),
        ("GlobalAvgPool2D", lambda: L.GlobalAvgPool2D()),
    ]:
        if hasattr(L, name) and name in reference.TWINS:
            cases.append((make(), (2, 3, 4, 4), False))
    return cases


CASES = layer_cases()


@pytest.mark.parametrize(
    "layer, shape, training", CASES, ids=[f"{l!r}-{'train' if t else 'eval'}" for l, _, t in CASES]
)
def test_twins_do_no_array_arithmetic(layer, shape, training):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    y_plain = reference.forward(layer, x, training)
    g = rng.standard_normal(y_plain.shape, dtype=np.float32)
    gx_plain, grads_plain = reference.backward(layer, x, g, training)

    guarded = fenced(layer)
    with no_numpy_math(), forbidden(guarded):
        y = reference.forward(guarded, untouchable(x), training)
        gx, grads = reference.backward(guarded, untouchable(x), untouchable(g), training)
    assert type(y) is np.ndarray and y.dtype == np.float32
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(gx, gx_plain)
    assert sorted(grads) == sorted(grads_plain) == sorted(layer.params)
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads_plain[k])


@pytest.mark.parametrize(
    "loss, pred_shape, target",
    [
        (CrossEntropy(), (4, 3), np.array([0, 2, 1, 1])),
        (CrossEntropy(label_smoothing=0.1), (4, 3), np.array([0, 2, 1, 1])),
        (MSE(), (4, 3), np.ones((4, 3), np.float32)),
        (BCEWithLogits(), (4, 2), np.full((4, 2), 0.25, np.float32)),
    ],
    ids=["ce", "ce-smooth", "mse", "bce"],
)
def test_loss_twins_do_no_array_arithmetic(loss, pred_shape, target):
    pred = np.random.default_rng(0).standard_normal(pred_shape, dtype=np.float32)
    value, grad = reference.loss_forward(loss, pred, target), reference.loss_backward(loss, pred, target)
    with no_numpy_math(), forbidden(loss):
        v2 = reference.loss_forward(loss, untouchable(pred), untouchable(target))
        g2 = reference.loss_backward(loss, untouchable(pred), untouchable(target))
    assert v2 == value and isinstance(v2, float)
    np.testing.assert_array_equal(g2, grad)


def test_the_fence_catches_vectorized_code(monkeypatch):
    """The checks above can fail: a 'twin' that uses @ or np.sum is caught."""

    class Sneaky:
        @staticmethod
        def forward(layer, x, training=False):
            return x @ layer.params["W"]

        @staticmethod
        def backward(layer, x, grad_y, training=False):
            return np.sum(grad_y), {}

    monkeypatch.setitem(reference.TWINS, "Dense", Sneaky)
    layer = fenced(L.Dense(3, 2))
    with pytest.raises(AssertionError, match="matmul"):
        reference.forward(layer, untouchable(np.ones((2, 3), np.float32)))
    with no_numpy_math(), pytest.raises(AssertionError, match="np.sum"):
        reference.backward(layer, np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(AssertionError, match="maximum"):
        untouchable(np.ones(3)).max()
    with pytest.raises(AssertionError, match="multiply"):
        untouchable(np.ones(3)) * 2.0


def test_forbidden_patches_the_instance_only():
    layer, other = L.ReLU(), L.ReLU()
    x = np.ones((2, 2), np.float32)
    with forbidden(layer):
        with pytest.raises(AssertionError, match="ReLU.forward"):
            layer.forward(x)
        other.forward(x)  # the class is untouched
    np.testing.assert_array_equal(layer.forward(x), x)  # and the instance restored


# -- the source of every twin file: no @, no numpy reductions, no cache reads ------------------
TWIN_FILES = sorted(pathlib.Path(reference.__file__).parent.glob("*.py"))
REDUCTIONS = {
    "sum",
    "mean",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "var",
    "std",
    "prod",
    "dot",
    "matmul",
    "einsum",
    "tensordot",
    "inner",
    "outer",
    "vdot",
    "cumsum",
    "average",
    "nansum",
    "nanmax",
    "nanmin",
    "nanmean",
    "reduce",
}


@pytest.mark.parametrize("path", TWIN_FILES, ids=[p.name for p in TWIN_FILES])
def test_twin_source_has_no_vectorized_math(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
            problems.append(f"{where}: matrix product @")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in REDUCTIONS:
            base = node.func.value
            if not (isinstance(base, ast.Name) and base.id in ("math", "builtins")):
                problems.append(f"{where}: call .{node.func.attr}()")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "layer"
            and node.attr.startswith("_")
        ):
            problems.append(f"{where}: reads layer.{node.attr} (the layer's cache or internals)")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            problems.append(f"{where}: getattr of private attribute {node.args[1].value!r}")
    assert not problems, "\n".join(problems)


def test_twin_files_are_scanned():
    names = {p.name for p in TWIN_FILES}
    assert {"dense.py", "activations.py", "norm.py", "dropout.py", "shape.py", "losses.py"} <= names


# -- registry and dispatch ---------------------------------------------------------------------
def test_every_builtin_layer_and_loss_has_a_twin():
    builtin = {name for name, cls in vn.registry.LAYERS.items() if cls.__module__.startswith("vecnn.layers")}
    assert {"Dense", "ReLU", "Dropout", "BatchNorm1D", "BatchNorm2D", "Flatten", "Standardize"} <= builtin
    missing = builtin - set(reference.TWINS)
    assert not missing, f"built-in layers without a loop twin: {sorted(missing)}"
    for name in ["cross_entropy", "mse", "bce_with_logits"]:
        assert name in reference.LOSS_TWINS
    registered_layers = set(vn.registry.LAYERS) & set(reference.TWINS)
    assert registered_layers, "twins are keyed by the registry's layer names"


def test_unknown_layer_error_lists_known_twins():
    class Cube(L.Layer):
        pass

    with pytest.raises(ValueError, match=r"no loop twin for layer 'Cube'.*Dense.*ReLU"):
        reference.forward(Cube(), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="Cube"):
        reference.backward(Cube(), np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))


def test_unknown_loss_error():
    class Hinge(vn.losses.Loss):
        pass

    with pytest.raises(ValueError, match=r"no loop twin for loss 'Hinge'.*cross_entropy"):
        reference.loss_forward(Hinge(), np.zeros((2, 2)), np.zeros(2))


def test_register_twin_for_a_custom_layer(monkeypatch):
    monkeypatch.setattr(vn.registry, "LAYERS", dict(vn.registry.LAYERS))

    @vn.register_layer(name="MyDouble")
    class Double(L.Layer):
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, grad_y):
            return 2 * grad_y

    monkeypatch.setattr(reference, "TWINS", dict(reference.TWINS))

    @reference.register_twin("MyDouble")
    class DoubleTwin:
        @staticmethod
        def forward(layer, x, training=False):
            return reference.to_array(reference.map_nested(lambda v: 2 * v, x.tolist()), x.dtype)

        @staticmethod
        def backward(layer, x, grad_y, training=False):
            return DoubleTwin.forward(layer, grad_y), {}

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(reference.forward(Double(), x), 2 * x)
    gx, grads = reference.backward(Double(), x, x)
    np.testing.assert_array_equal(gx, 2 * x)
    assert grads == {}


def test_subclass_falls_back_to_the_parents_twin():
    class MyReLU(L.ReLU):
        pass

    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(reference.forward(MyReLU(), x), [[0.0, 2.0]])


def test_register_twin_refuses_incomplete_twins():
    with pytest.raises(TypeError, match="backward"):
        reference.register_twin("Nothing")(type("OnlyForward", (), {"forward": staticmethod(lambda *a: a)}))
    with pytest.raises(TypeError, match="string"):
        reference.register_twin(type("Twin", (), {}))
    assert "Nothing" not in reference.TWINS


def test_twin_reads_params_not_a_snapshot():
    """The twin follows params written in place (as inside a Sequential's flat buffer)."""
    layer = L.Dense(2, 2)
    x = np.ones((1, 2), np.float32)
    layer.params["W"][...] = [[1, 2], [3, 4]]
    layer.params["b"][...] = [10, 20]
    np.testing.assert_array_equal(reference.forward(layer, x), [[14, 26]])


def test_dropout_twin_leaves_the_generator_alone():
    layer = L.Dropout(0.5, seed=3)
    state = copy.deepcopy(layer.rng.bit_generator.state)
    x = np.ones((4, 4), np.float32)
    twin = reference.forward(layer, x, training=True)
    assert layer.rng.bit_generator.state == state
    np.testing.assert_array_equal(twin, layer.forward(x, training=True))


# -- a few random shapes (hypothesis) ------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 4), fin=st.integers(1, 5), fout=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 2**16)
)
def test_dense_twin_random_shapes(n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    layer = L.Dense(fin, fout, bias=bias, seed=seed)
    x = rng.standard_normal((n, fin), dtype=np.float32)
    g = rng.standard_normal((n, fout), dtype=np.float32)
    np.testing.assert_allclose(reference.forward(layer, x), layer.forward(x), rtol=1e-5, atol=1e-5)
    gx, grads = reference.backward(layer, x, g)
    np.testing.assert_allclose(gx, layer.backward(g), rtol=1e-5, atol=1e-5)
    for k in layer.params:
        np.testing.assert_allclose(grads[k], layer.grads[k], rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_softmax_and_flatten_twins_any_rank(shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    sm = L.Softmax()
    np.testing.assert_allclose(reference.forward(sm, x), sm.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference.backward(sm, x, g)[0], sm.backward(g), rtol=1e-4, atol=1e-6)
    fl = L.Flatten()
    y = fl.forward(x)
    np.testing.assert_array_equal(reference.forward(fl, x), y)
    np.testing.assert_array_equal(reference.backward(fl, x, y)[0], x)
