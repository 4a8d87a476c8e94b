"""The compute boundary (``vecnn.ops``): backends looked up from the arrays, the compiled backend
equal to the NumPy reference op by op, what ``report()`` says, devices, and the rule that the
compute path reaches NumPy, numba and BLAS only through a backend (read from the sources)."""

import ast
import math
import pathlib

import numpy as np
import pytest
import torch

import vecnn as vn
from vecnn import kernels, ops
from vecnn import layers as L
from vecnn.ops.numpy_backend import NumPyBackend

PACKAGE = pathlib.Path(vn.__file__).parent
F = np.float32


# -- the lookup ------------------------------------------------------------------------------
def test_numpy_arrays_get_the_cpu_backend(cpu_backend):
    backend = ops.get(np.zeros(3, F))
    assert backend is ops.cpu() and backend.name == cpu_backend and backend.device == "cpu"
    assert ops.get(None, 2.0, np.ones(2)) is backend  # scalars and None are skipped


@pytest.mark.parametrize(
    "thing, name",
    [(torch.zeros(3), "torch.Tensor"), ([1.0, 2.0], "builtins.list"), (memoryview(b"ab"), "builtins.memoryview")],
)
def test_an_unknown_array_type_is_refused_by_name(thing, name):
    with pytest.raises(ValueError, match=rf"no backend computes on {name} arrays; expected numpy.ndarray"):
        ops.get(thing)


def test_a_layer_refuses_a_foreign_array_at_the_boundary():
    with pytest.raises(ValueError, match="no backend computes on torch.Tensor"):
        L.ReLU().forward(torch.ones(2, 3))


def test_use_switches_the_cpu_backend(monkeypatch):
    monkeypatch.setattr(kernels, "enabled", True)
    ops.use("numpy")
    try:
        assert type(ops.cpu()) is NumPyBackend and ops.cpu().name == "numpy"
    finally:
        ops.use("numba")
    with pytest.raises(ValueError, match="expected 'numba' or 'numpy'"):
        ops.use("fortran")


@pytest.mark.parametrize("device", ["tpu", "", None, "GPU0"])
def test_an_unknown_device_is_refused(device):
    with pytest.raises(ValueError, match="expected 'cpu', 'gpu' or 'auto'"):
        ops.device(device)


def test_asking_for_a_gpu_where_there_is_none_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(ops, "gpu_problem", lambda: "CuPy is not installed (...); pip install 'vecnn[gpu-cuda13]'")
    monkeypatch.setattr(ops, "_gpu", None)
    model = vn.Sequential([L.Dense(3, 2)], seed=0)
    with pytest.raises(ValueError, match=r"no GPU backend: CuPy is not installed.*pip install"):
        model.to("gpu")
    assert model.device == "cpu" and model.to("auto") is model and model.device == "cpu"
    assert model.to("cpu") is model


def test_without_cupy_the_problem_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    problem = ops.gpu_problem()
    assert "CuPy is not installed" in problem and "gpu-cuda13" in problem and "gpu-cuda12" in problem


# -- the compiled backend equals the reference, op by op --------------------------------------
def compiled():
    k = kernels.get()
    if k is None:
        pytest.skip("numba kernels unavailable")
    return ops.cpu()


def pair_run(fn, *arrays):
    """``fn(backend, *copies)`` on the NumPy and on the compiled backend, with fresh copies."""
    ref = NumPyBackend()
    results = []
    for backend in (ref, compiled()):
        copies = [a.copy(order="K") if isinstance(a, np.ndarray) else a for a in arrays]
        out = fn(backend, *copies)
        results.append((out, copies))
    return results


def assert_same(a, b, rtol=1e-6, atol=1e-6):
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b):
            assert_same(x, y, rtol, atol)
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    else:
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_passes_equal_the_reference(bias, rng):
    z = rng.standard_normal((33, 17), dtype=F)
    b = rng.standard_normal(17, dtype=F) if bias else None
    g = rng.standard_normal((33, 17), dtype=F)
    (r1, c1), (r2, c2) = pair_run(lambda k, z, b: k.bias_relu(z, b), z, b)
    assert_same(r1, r2)
    y = np.maximum(z, 0)
    for name in ("relu_backward_bias", "column_sums"):
        if name == "column_sums":
            (r1, _), (r2, _) = pair_run(lambda k, g: k.column_sums(g, np.empty(17, F)), g)
        else:
            (r1, c1), (r2, c2) = pair_run(
                lambda k, y, g: (k.relu_backward_bias(y, g, np.empty_like(g), db := np.empty(17, F)), db), y, g
            )
        assert_same(r1, r2, rtol=1e-5)


@pytest.mark.parametrize("layout", ["c", "channels-last", "strided"])
def test_relu_passes_equal_the_reference(layout, rng):
    x = rng.standard_normal((4, 3, 5, 6), dtype=F)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "strided":
        x = x[:, :, ::2]
    g = rng.standard_normal(x.shape, dtype=F)
    (r1, _), (r2, _) = pair_run(lambda k, x: k.relu(x, np.empty_like(x)), x)
    assert_same(r1, r2)
    (r1, _), (r2, _) = pair_run(lambda k, y, g: k.relu_backward(y, g, np.empty_like(g)), np.maximum(x, 0), g)
    assert_same(r1, r2)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_equals_the_reference(eps, rng):
    z = (rng.standard_normal((50, 10)) * 5).astype(F)
    y = rng.integers(0, 10, 50)
    (r1, c1), (r2, c2) = pair_run(lambda k, z, y, g: k.softmax_cross_entropy(z, y, eps, g), z, y, np.empty_like(z))
    assert r1[1] == r2[1] and r1[0] == pytest.approx(r2[0], rel=1e-5)
    np.testing.assert_allclose(c1[2], c2[2], rtol=1e-4, atol=1e-7)


def test_batch_norm_passes_equal_the_reference(rng):
    x = (rng.standard_normal((64, 8)) * 3 + 1).astype(F)
    g = rng.standard_normal((64, 8), dtype=F)
    (s1, _), (s2, _) = pair_run(lambda k, x: k.bn_stats(x), x)
    assert_same(s1, s2, rtol=1e-5)
    mean, var = s1
    inv = (1 / np.sqrt(var + 1e-5)).astype(F)
    gamma, beta = rng.standard_normal(8, dtype=F), rng.standard_normal(8, dtype=F)
    (_, c1), (_, c2) = pair_run(
        lambda k, *a: k.bn_normalize(*a), x, mean, inv, gamma, beta, np.empty_like(x), np.empty_like(x)
    )
    assert_same(c1[5:], c2[5:], rtol=1e-5)
    xhat = c1[5]
    (_, c1), (_, c2) = pair_run(lambda k, *a: k.bn_grad_sums(*a), g, xhat, np.empty(8, F), np.empty(8, F))
    assert_same(c1[2:], c2[2:], rtol=1e-4, atol=1e-4)
    (_, c1), (_, c2) = pair_run(lambda k, *a: k.bn_input_grad(*a), g, xhat, gamma, beta, gamma * 0.1, np.empty_like(g))
    assert_same(c1[5], c2[5], rtol=1e-5)


GEOMETRIES = [
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 3), (2, 1), (0, 1), (1, 1)),
    ((3, 3), (1, 2), (2, 0), (2, 1)),
    ((1, 1), (2, 2), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation", GEOMETRIES)
def test_im2col_and_col2im_equal_the_reference(kernel, stride, padding, dilation, rng):
    N, H, W, C = 2, 7, 8, 3
    x = rng.standard_normal((N, H, W, C), dtype=F)
    Ho = (H + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    K = kernel[0] * kernel[1] * C
    geometry = (kernel, stride, padding, dilation)
    cols = np.full((N * Ho * Wo, K + 1), 7.0, F)  # the bias lane stays 7
    (r1, _), (r2, _) = pair_run(lambda k, x, c: k.im2col(x, *geometry, c, {}), x, cols)
    assert_same(r1, r2)
    assert (r1[:, -1] == 7).all()
    dcols = rng.standard_normal((N * Ho * Wo, K), dtype=F)
    (r1, _), (r2, _) = pair_run(lambda k, d, dx: k.col2im(d, *geometry, dx, {}), dcols, np.zeros_like(x))
    assert_same(r1, r2, rtol=1e-5)
    # the adjoint: <im2col(x), d> == <x, col2im(d)>
    assert float((r1[:, :K] * 0 + 1).sum()) > 0
    lhs = float((NumPyBackend().im2col(x, *geometry, np.zeros((N * Ho * Wo, K), F), {}) * dcols).sum())
    rhs = float((x * r1).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "kernel, stride, padding", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 1), (0, 1))]
)
def test_max_pool_equals_the_reference(kernel, stride, padding, relu, training, rng):
    x = rng.standard_normal((2, 3, 7, 9), dtype=F)
    x[0, 0, :2, :2] = 0.25  # ties: the first maximum wins
    out_hw = ((7 + 2 * padding[0] - kernel[0]) // stride[0] + 1, (9 + 2 * padding[1] - kernel[1]) // stride[1] + 1)
    g = rng.standard_normal((2, 3, *out_hw), dtype=F)
    results = []
    for backend in (NumPyBackend(), compiled()):
        y, saved = backend.maxpool_forward(x, kernel, stride, padding, out_hw, relu, training, {})
        y = y.copy()
        dx = backend.maxpool_backward(saved, g, kernel, stride, padding, {})
        results.append((y, np.array(dx)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)  # overlaps: sum order


@pytest.mark.parametrize(
    "rule, state, scalars",
    [
        ("adam", 2, (F(0.9), F(0.1), F(0.999), F(0.001), F(1e-8), F(1e-3), F(1.3), F(0.01), F(1))),
        ("adam", 2, (F(0.9), F(0.1), F(0.999), F(0.001), F(1e-8), F(1e-3), F(1.3), F(0), F(0.99))),
        ("sgd", 1, (F(0.01), F(0.9), F(1e-4), True, False)),
        ("sgd", 1, (F(0.01), F(0.9), F(0), False, True)),
        ("sgd", 1, (F(0.01), F(0), F(0), False, False)),
        ("rmsprop", 1, (F(0.01), F(0.99), F(0.01), F(1e-8), F(1e-3))),
    ],
)
def test_optimizer_updates_equal_the_reference(rule, state, scalars, rng):
    n = 40_000  # past the thread split's minimum
    p, g = rng.standard_normal(n, dtype=F), rng.standard_normal(n, dtype=F)
    buffers = [(rng.random(n) * 0.01).astype(F) for _ in range(state)]
    (ok1, c1), (ok2, c2) = pair_run(
        lambda k, p, g, old, *s: k.optimizer_update(rule, p, g, s, old, scalars), p, g, np.empty_like(p), *buffers
    )
    assert ok1 and ok2
    np.testing.assert_array_equal(c1[2], p)  # old: the parameters before
    for a, b in zip(c1, c2):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    assert np.abs(c1[0] - p).max() > 0
    g[123] = np.nan  # a NaN gradient is reported
    (ok1, _), (ok2, _) = pair_run(
        lambda k, p, g, old, *s: k.optimizer_update(rule, p, g, s, old, scalars), p, g, np.empty_like(p), *buffers
    )
    assert not ok1 and not ok2


@pytest.mark.parametrize("shape, where", [((100_000,), 77_777), ((30, 7), (29, 6)), ((5,), 0)])
def test_finiteness_check_equals_the_reference(shape, where, rng):
    x = rng.standard_normal(shape, dtype=F)
    for backend in (NumPyBackend(), compiled()):
        assert backend.all_finite(x)
        y = x.copy()
        y[where] = np.inf
        assert not backend.all_finite(y)
        assert backend.all_finite(np.full(shape, 3e38, F))  # finite values whose sum overflows


def test_gather_equals_fancy_indexing(rng):
    X = rng.standard_normal((300, 4, 5), dtype=F)
    idx = rng.permutation(300)[:64]
    for backend in (NumPyBackend(), compiled()):
        np.testing.assert_array_equal(backend.gather(X, idx, np.empty((64, 4, 5), F)), X[idx])


def test_whole_trainings_agree_across_the_cpu_backends(monkeypatch, rng):
    X = rng.standard_normal((256, 1, 8, 8), dtype=F)
    y = rng.integers(0, 3, 256)
    weights = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "enabled", enabled)
        model = vn.Sequential(
            [
                L.Conv2D(1, 4, 3, padding=1),
                L.ReLU(),
                L.MaxPool2D(2),
                L.BatchNorm2D(4),
                L.Flatten(),
                L.Dense(64, 16),
                L.ReLU(),
                L.Dense(16, 3),
            ],
            seed=0,
        )
        model.fit(X, y, epochs=2, batch_size=32, verbose=0, seed=0, workers=1)
        weights.append(model.flat_params.copy())
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-3, atol=1e-4)


# -- saying what runs ------------------------------------------------------------------------
def test_report_names_every_backend_and_operation():
    info = ops.report()
    assert [b["name"] for b in info["backends"]] == ["numpy", "numba", "cupy"]
    assert [o["operation"] for o in info["operations"]] == list(ops.OPERATIONS)
    text = ops.format_report(info)
    for name in [*ops.OPERATIONS, "numpy", "numba", "cupy", "BLAS"]:
        assert name in text
    if kernels.get() is not None:
        assert all(o["cpu"].startswith("numba") for o in info["operations"])


def test_report_says_why_the_compiled_backend_is_off(monkeypatch):
    monkeypatch.setattr(kernels, "enabled", False)
    info = ops.report()
    numba = info["backends"][1]
    assert not numba["available"] and "vecnn.kernels.enabled = False" in numba["reason"]
    assert all(o["cpu"] == "numpy" for o in info["operations"])


def test_a_kernel_that_fails_to_compile_is_reported_not_hidden(monkeypatch):
    def broken():
        raise RuntimeError("LLVM says no")

    monkeypatch.setattr(kernels, "_kernels", kernels.Lazy(broken))
    monkeypatch.setattr(kernels, "get", kernels._kernels.get)
    assert ops.cpu().name == "numpy"  # training goes on, on NumPy
    info = ops.report()
    assert "RuntimeError: LLVM says no" in info["backends"][1]["reason"]
    assert "LLVM says no" in ops.format_report(info)


# -- the boundary, read from the sources -----------------------------------------------------
#: NumPy names the compute path may use directly: types, dtypes, the random generators
#: (randomness is drawn on the host), errstate; everything else goes through a backend
ALLOWED_NUMPY = {
    "ndarray",
    "integer",
    "floating",
    "number",
    "generic",
    "bool_",
    "dtype",
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "random",
    "errstate",
}
COMPUTE_MODULES = sorted(
    [
        *(PACKAGE / "layers").glob("*.py"),
        PACKAGE / "losses.py",
        PACKAGE / "optim.py",
        PACKAGE / "model.py",
        PACKAGE / "parallel.py",
        PACKAGE / "errors.py",
    ]
)


def _numpy_uses(tree):
    aliases = {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for a in node.names
        if a.name == "numpy"
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield node.lineno, node.attr
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "numpy"
            and node.module != "numpy.typing"
        ):
            yield node.lineno, f"from {node.module} import ..."


@pytest.mark.parametrize("path", COMPUTE_MODULES, ids=lambda p: p.name)
def test_the_compute_path_calls_numpy_only_through_a_backend(path):
    tree = ast.parse(path.read_text())
    bad = [f"line {line}: np.{name}" for line, name in _numpy_uses(tree) if name not in ALLOWED_NUMPY]
    assert not bad, f"{path.name} computes with NumPy directly (use ops.get(x).xp or a backend op): {bad}"


@pytest.mark.parametrize("path", COMPUTE_MODULES, ids=lambda p: p.name)
def test_the_compute_path_never_imports_numba_or_the_kernels(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {f"{node.module or ''}.{a.name}" for a in node.names} | {node.module or ""}
    banned = [
        n
        for n in names
        if any(b in n.split(".") for b in ("numba", "kernels", "_numba", "_openblas", "pool", "llvmlite", "cupy"))
    ]
    assert not banned, f"{path.name} imports {banned}: only vecnn.ops may"


def test_the_sources_checker_catches_a_direct_call():
    tree = ast.parse("import numpy as np\nx = np.matmul(a, b)\ny = np.float32\n")
    assert [name for _, name in _numpy_uses(tree) if name not in ALLOWED_NUMPY] == ["matmul"]


# -- declarations instead of type matching ---------------------------------------------------
def test_layers_declare_batch_independence():
    assert all(c.batch_independent for c in (L.Dense, L.Conv2D, L.ReLU, L.MaxPool2D, L.Dropout, L.Flatten))
    assert not L.BatchNorm1D.batch_independent and not L.BatchNorm2D.batch_independent

    class Mine(L.Dense):
        batch_independent = False

    model = vn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), Mine(72, 2)], seed=0)
    with pytest.raises(ValueError, match="workers=2 splits each batch.*layer 2"):
        model.fit(np.zeros((64, 1, 8, 8), F), np.zeros(64, int), workers=2, verbose=0)


def test_a_users_layer_can_declare_a_fusion():
    seen = []

    class Scale(L.Layer):
        def forward(self, x, training=False):
            return x * 2

        def backward(self, g):
            return g * 2

        def fuse(self, following):
            if isinstance(following, L.ReLU):
                seen.append("fused")
                return (lambda x, training=False: np.maximum(x * 2, 0), lambda g: g * 0)  # a visibly different backward
            return None

    model = vn.Sequential([L.Dense(3, 3), Scale(), L.ReLU()], seed=0)
    x = np.array([[1.0, -1.0, 2.0]], F)
    np.testing.assert_allclose(model.forward(x), np.maximum(model.layers[0].forward(x) * 2, 0))
    model.backward(np.ones((1, 3), F))
    assert seen == ["fused"]
    assert math.isclose(float(np.abs(model.flat_grads).sum()), 0.0)
