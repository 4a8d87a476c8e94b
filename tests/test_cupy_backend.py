"""The CuPy backend against the NumPy backend, on three targets:

- ``generic``: ``CuPyBackend(numpy, kernels=False)``, the inherited whole-array code and the
  API-difference overrides run with NumPy standing in for CuPy;
- ``emulated``: the CUDA kernels' bodies (``cupy_backend.ELEMENTWISE`` / ``REDUCTIONS``)
  compiled as C by a small emulator of the part of ``cupy.ElementwiseKernel`` /
  ``cupy.ReductionKernel`` the backend uses (needs gcc), NumPy arrays standing in for CuPy's;
- ``gpu``: ``CuPyBackend(cupy)`` on a CUDA device (skipped without one).

The CPU targets must agree with the NumPy backend exactly (the kernels round as it does; the
softmax's exp and log aside); the GPU target to float32 rounding (CuPy's reductions sum in
another order, and its kernels flush subnormals to zero). A last test compiles the CUDA
sources with NVRTC where CuPy is installed, even without a device.
"""

import ctypes
import math
import shutil
import subprocess
import types

import numpy as np
import pytest

from vecnn.ops import cupy_backend as cb
from vecnn.ops.cupy_backend import CuPyBackend
from vecnn.ops.numpy_backend import NumPyBackend

F32 = np.float32
REF = NumPyBackend()


# == the emulator: CuPy's kernel classes, the loop bodies compiled as C ========================
_TYPES = {  # CuPy type name -> (C type, ctypes type, NumPy dtype); T is bound to float32 only
    "T": ("T", ctypes.c_float, np.dtype(np.float32)),
    "float32": ("float", ctypes.c_float, np.dtype(np.float32)),
    "int32": ("int", ctypes.c_int32, np.dtype(np.int32)),
    "int64": ("long long", ctypes.c_int64, np.dtype(np.int64)),
    "uint8": ("unsigned char", ctypes.c_uint8, np.dtype(np.uint8)),
}
_PRELUDE = "#include <math.h>\n#include <stddef.h>\ntypedef float T;\n"


def _params(spec, out):
    params = []
    for part in spec.split(","):
        words = part.split()
        raw = words[0] == "raw"
        typ, name = words[1:] if raw else words
        assert typ in _TYPES, f"the emulator knows no type {typ!r}"
        params.append(types.SimpleNamespace(name=name, type=typ, raw=raw, out=out))
    return params


class Compiler:
    """gcc into a temporary folder, each source once per session."""

    def __init__(self, folder):
        self.folder, self.cache, self.count = folder, {}, 0

    def __call__(self, source, argtypes):
        fn = self.cache.get(source)
        if fn is None:
            self.count += 1
            src, lib = self.folder / f"k{self.count}.c", self.folder / f"k{self.count}.so"
            src.write_text(source)
            run = subprocess.run(
                [
                    "gcc",
                    "-O1",
                    "-shared",
                    "-fPIC",
                    "-std=gnu99",
                    "-ffp-contract=off",
                    "-Werror=implicit-function-declaration",
                    "-o",
                    str(lib),
                    str(src),
                    "-lm",
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            assert run.returncode == 0, f"gcc failed:\n{run.stderr}\n{source}"
            fn = ctypes.CDLL(str(lib)).kern
            fn.restype = None
            fn.argtypes = argtypes
            self.cache[source] = fn
        return fn


class EmulatedElementwise:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name)``: a C loop
    ``for (ptrdiff_t i = 0; i < n; i++) { operation }`` with non-raw parameters the element
    ``i`` of their array broadcast to the output shape (inputs read-only copies, outputs written
    through), raw ones C-contiguous arrays (pointers) and scalars plain values."""

    def __init__(self, compiler, in_params, out_params, operation, name):
        self.compiler, self.operation, self.name = compiler, operation, name
        self.params = _params(in_params, False) + _params(out_params, True)

    def __call__(self, *args, size=None):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)}"
        arrays = [a for a, p in zip(args, self.params) if not p.raw and isinstance(a, np.ndarray)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else (size,)
        assert size is None or not arrays, f"{self.name}: size= with non-raw arrays"
        n = math.prod(shape)
        sig, head, defines, keep, write_back = [], [], [], [], []
        values, argtypes = [ctypes.c_ssize_t(n)], [ctypes.c_ssize_t]
        for a, p in zip(args, self.params):
            ctype, cttype, dtype = _TYPES[p.type]
            if p.raw or isinstance(a, np.ndarray):
                assert isinstance(a, np.ndarray), f"{self.name}: {p.name} must be an array"
                assert a.dtype == dtype, f"{self.name}: {p.name} is {a.dtype}, expected {dtype}"
                if p.raw:
                    assert a.flags.c_contiguous, f"{self.name}: raw {p.name} is not C-contiguous"
                    buf, cname = a, p.name
                elif p.out:
                    assert a.shape == shape, f"{self.name}: output {p.name} shaped {a.shape}, not {shape}"
                    buf = a if a.flags.c_contiguous else np.ascontiguousarray(a)
                    if buf is not a:
                        write_back.append((a, buf))
                    cname = "_a_" + p.name
                    defines.append(p.name)
                else:
                    buf = np.ascontiguousarray(np.broadcast_to(a, shape))
                    cname = "_a_" + p.name
                    head.append(f"const {ctype} {p.name} = {cname}[i];")
                sig.append(f"{ctype} *{cname}")
                values.append(ctypes.c_void_p(buf.ctypes.data))
                argtypes.append(ctypes.c_void_p)
                keep.append(buf)  # alive until the call returns
            else:
                assert not p.out, f"{self.name}: output {p.name} must be an array"
                sig.append(f"{ctype} {p.name}")
                values.append(cttype(a))
                argtypes.append(cttype)
        source = (
            _PRELUDE
            + "".join(f"#define {d} (_a_{d}[i])\n" for d in defines)
            + f"void kern(ptrdiff_t _n, {', '.join(sig)}) {{\n"
            + "    for (ptrdiff_t i = 0; i < _n; i++) {\n        "
            + "\n        ".join(head)
            + f"\n        {self.operation}\n    }}\n}}\n"
        )
        self.compiler(source, argtypes)(*values)
        for a, buf in write_back:
            a[...] = buf


class EmulatedReduction:
    """``cupy.ReductionKernel`` over the whole array (one non-raw input, one output)."""

    def __init__(self, compiler, in_params, out_params, map_expr, reduce_expr, post_map, identity, name):
        self.compiler, self.name = compiler, name
        (self.inp,), (self.out,) = _params(in_params, False), _params(out_params, True)
        self.map, self.reduce, self.post, self.identity = map_expr, reduce_expr, post_map, identity

    def __call__(self, x):
        ctype, _, dtype = _TYPES[self.inp.type]
        rtype, _, rdtype = _TYPES[self.out.type]
        assert x.dtype == dtype
        buf = np.ascontiguousarray(x).reshape(-1)
        result = np.zeros((), rdtype)
        source = (
            _PRELUDE + f"void kern(ptrdiff_t _n, {ctype} *_a_x, {rtype} *_out) {{\n"
            f"    {rtype} _acc = ({self.identity});\n"
            "    for (ptrdiff_t i = 0; i < _n; i++) {\n"
            f"        const {ctype} {self.inp.name} = _a_x[i];\n"
            f"        {rtype} a = _acc, b = ({self.map});\n"
            f"        _acc = ({self.reduce});\n    }}\n"
            f"    {{ {rtype} a = _acc; {rtype} {self.out.name}; {self.post}; *_out = {self.out.name}; }}\n}}\n"
        )
        fn = self.compiler(source, [ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p])
        fn(buf.size, buf.ctypes.data, result.ctypes.data)
        return result


def emulated_factory(compiler, calls=None, ran=None):
    """The tests' kernel factory: ``cupy_kernel_factory`` with the emulator for CuPy; records
    the kernels built in ``calls`` and those run in ``ran``."""
    fake = types.SimpleNamespace(
        ElementwiseKernel=lambda i, o, body, name, options=(): EmulatedElementwise(compiler, i, o, body, name),
        ReductionKernel=lambda i, o, m, r, p, ident, name, options=(): EmulatedReduction(
            compiler, i, o, m, r, p, ident, name
        ),
    )
    make = cb.cupy_kernel_factory(fake)

    def factory(name):
        if calls is not None:
            calls.append(name)
        kernel = make(name)
        if ran is None:
            return kernel

        def run(*args, **kwargs):
            ran.add(name)
            return kernel(*args, **kwargs)

        return run

    return factory


@pytest.fixture(scope="session")
def compiler(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: the CUDA kernels' C emulation needs it")
    return Compiler(tmp_path_factory.mktemp("cupy_kernels"))


# == the targets =============================================================================
class Target:
    def __init__(self, name, backend, put, exact, ran=None):
        self.name, self.b, self._put, self.exact, self._ran = name, backend, put, exact, ran

    def ran(self, *names):
        """The emulated kernels ``names`` ran since the last look (the emulated target only:
        the ops must not have fallen back to the inherited code)."""
        if self._ran is not None:
            assert set(names) <= self._ran, f"kernels {set(names) - self._ran} did not run"
            self._ran.clear()

    def ran_none(self):
        if self._ran is not None:
            assert not self._ran, f"kernels {self._ran} ran where the inherited code should"

    def put(self, a):
        """A NumPy array on the target, its memory layout kept (channels-last NCHW views too)."""
        a = np.asarray(a)
        if a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous:
            return self._put(np.ascontiguousarray(a.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
        return self._put(np.ascontiguousarray(a))

    def get(self, a):
        return self.b.to_host(a)

    def check(self, got, want, rtol=2e-6, exact=True):
        got = self.get(got) if not isinstance(got, (float, int, bool)) else got
        if self.exact and exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)
        if isinstance(want, np.ndarray):
            assert got.shape == want.shape and got.dtype == want.dtype


def _gpu_cupy():
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # any failure to reach a device: no GPU here  # noqa: BLE001
        pytest.skip(f"no usable CUDA device: {type(e).__name__}: {e}")
    if count < 1:
        pytest.skip("no CUDA device")
    return cupy


@pytest.fixture(scope="module", params=["generic", "emulated", "gpu"])
def t(request):
    if request.param == "generic":
        return Target("generic", CuPyBackend(np, kernels=False), np.array, True)
    if request.param == "emulated":
        ran = set()
        factory = emulated_factory(request.getfixturevalue("compiler"), ran=ran)
        return Target("emulated", CuPyBackend(np, kernels=factory), np.array, True, ran)
    cupy = _gpu_cupy()
    return Target("gpu", CuPyBackend(cupy), cupy.asarray, False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def nchw(a, channels_last):
    """``a`` (NCHW values) laid out channels-last in memory when asked."""
    a = np.asarray(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channels_last else a.copy()


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


# == arrays and the API differences ============================================================
def test_arrays(t, rng):
    b = t.b
    a = randn(rng, 3, 4)
    assert isinstance(t.get(t.put(a)), np.ndarray)
    t.check(b.asarray([[1, 2], [3, 4]], dtype=F32), np.array([[1, 2], [3, 4]], F32))
    t.check(b.asarray(a), a)
    assert b.empty((2, 3), F32).shape == (2, 3) and b.empty((2, 3), F32).dtype == F32
    t.check(b.zeros((2, 3), F32), np.zeros((2, 3), F32))
    x = t.put(nchw(randn(rng, 2, 3, 4, 5), True))
    y = b.like(x)
    assert y.shape == x.shape and y.strides[1] < y.strides[3]  # channels-last kept
    c_order = b.like(t.put(randn(rng, 2, 3, 4, 5)), zero=True)
    assert c_order.strides[1] > c_order.strides[3]  # C order kept
    t.check(c_order, np.zeros((2, 3, 4, 5), F32))
    t.check(b.alloc_nchw((2, 3, 4, 5), F32, True, zero=True), np.zeros((2, 3, 4, 5), F32))


def _address(a):
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def test_scratch_reuses_free_memory_only(t):
    b, owner = t.b, {}
    first = b.scratch(owner, "buf", (4, 5), F32)
    where = _address(first)
    del first
    again = b.scratch(owner, "buf", (3, 5), F32, zero=True)  # a smaller prefix, zeroed
    assert _address(again) == where
    t.check(again, np.zeros((3, 5), F32))
    held = b.scratch(owner, "buf", (3, 5), F32)  # `again` still alive
    assert _address(held) != where
    cl = b.scratch(owner, "cl", (2, 3, 4, 5), F32, channels_last=True)
    assert cl.shape == (2, 3, 4, 5) and cl.strides[1] < cl.strides[3]


def test_as_strided_and_windows(t, rng):
    b = t.b
    a = randn(rng, 12)
    view = b.as_strided(t.put(a), (5, 3), (8, 4))
    t.check(view, np.lib.stride_tricks.as_strided(a, (5, 3), (8, 4)))
    xpad = randn(rng, 2, 7, 8, 3)
    for kernel, stride, dilation in [((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (2, 1))]:
        Ho = (7 - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        Wo = (8 - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        t.check(
            b.windows(t.put(xpad), kernel, stride, dilation, (Ho, Wo)),
            REF.windows(xpad, kernel, stride, dilation, (Ho, Wo)),
        )


def test_errstate_is_a_context(t):
    x = t.put(np.array([3e38, np.inf], F32))
    with t.b.errstate():  # overflow and inf - inf: no warning
        r = x * x - t.put(np.array([0, np.inf], F32))
    got = t.get(r)
    assert np.isinf(got[0]) and np.isnan(got[1])


def test_to_host_of_host_arrays(t):
    out = t.b.to_host([1, 2])
    assert isinstance(out, np.ndarray) and out.tolist() == [1, 2]


def test_all_finite(t, rng):
    b = t.b
    big = np.full(4, 3e38, F32)  # finite values whose sum overflows
    cases = [
        randn(rng, 7, 5),
        big,
        np.array([], F32),
        randn(rng, 6, 4).T,
        randn(rng, 9).astype(np.float64),
        np.arange(5),
        np.array([True, False]),
    ]
    for bad in (np.nan, np.inf, -np.inf):
        x = randn(rng, 5, 6)
        x[3, 2] = bad
        cases += [x, x.T, x.astype(np.float64)]
    for x in cases:
        t.ran()
        assert b.all_finite(t.put(x)) is bool(np.isfinite(x).all()) is REF.all_finite(x)
        if x.dtype == F32:
            t.ran("all_finite")
        else:
            t.ran_none()


# == dense layers and activations ==============================================================
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [F32, np.float64])
def test_bias_relu(t, rng, bias, dtype):
    z = randn(rng, 6, 9).astype(dtype)
    bb = randn(rng, 9).astype(dtype) if bias else None
    want = REF.bias_relu(z.copy(), bb)
    zt = t.put(z)
    t.ran()
    assert t.b.bias_relu(zt, t.put(bb) if bias else None) is zt
    t.check(zt, want)
    if dtype == F32:
        t.ran("bias_relu" if bias else "relu")
    else:
        t.ran_none()
    if bias:  # a bias that does not fit: inherited
        with pytest.raises(ValueError):
            t.b.bias_relu(t.put(z), t.put(bb[:4]))


def test_relu_and_its_gradient(t, rng):
    b = t.b
    for shape, cl_in, cl_out in [
        ((5, 8), False, False),
        ((2, 3, 4, 5), True, True),
        ((2, 3, 4, 5), True, False),
        ((2, 3, 4, 5), False, True),
    ]:
        x = randn(rng, *shape)
        g = randn(rng, *shape)
        if len(shape) == 4:
            x, g = nchw(x, cl_in), nchw(g, cl_in)
        out = t.put(nchw(np.zeros(shape, F32), cl_out) if len(shape) == 4 else np.zeros(shape, F32))
        y = REF.relu(x, np.empty_like(x))
        assert b.relu(t.put(x), out) is out
        t.check(out, y)
        dout = t.put(np.zeros(shape, F32))
        assert b.relu_backward(t.put(y), t.put(g), dout) is dout
        t.check(dout, REF.relu_backward(y, g, np.empty_like(g)))
        t.ran("relu", "relu_backward")
    x = randn(rng, 4, 6)  # in place, and float64 (the fallback)
    xt = t.put(x)
    b.relu(xt, xt)
    t.check(xt, np.maximum(x, 0))
    t.ran("relu")
    x64 = x.astype(np.float64)
    t.check(b.relu(t.put(x64), t.put(np.empty_like(x64))), np.maximum(x64, 0))
    t.check(b.relu_backward(t.put(x64), t.put(x64), t.put(np.empty_like(x64))), x64 * (x64 > 0))
    t.ran_none()


def test_relu_keeps_nan_as_numpy_does(t):
    x = np.array([np.nan, -1, 2, -np.inf, np.inf], F32)
    got = t.get(t.b.relu(t.put(x), t.put(np.zeros_like(x))))
    np.testing.assert_array_equal(got, REF.relu(x, np.zeros_like(x)))


def test_relu_backward_bias_and_column_sums(t, rng):
    b = t.b
    y = np.maximum(randn(rng, 13, 7), 0)
    g = randn(rng, 13, 7)
    dz_ref, db_ref = np.empty_like(g), np.empty(7, F32)
    REF.relu_backward_bias(y, g, dz_ref, db_ref)
    dz, db = t.put(np.zeros_like(g)), t.put(np.zeros(7, F32))
    assert b.relu_backward_bias(t.put(y), t.put(g), dz, db) is dz
    t.check(dz, dz_ref)
    t.check(db, db_ref, rtol=1e-5)
    t.ran("relu_backward")
    out = t.put(np.zeros(7, F32))
    b.column_sums(t.put(g), out)
    t.check(out, REF.column_sums(g, np.empty(7, F32)), rtol=1e-5)


# == losses and batch normalization ============================================================
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(11, 5), (3, 1), (64, 10)])
def test_softmax_cross_entropy(t, rng, eps, shape):
    n, C = shape
    z = 3 * randn(rng, n, C)
    z[0, :2] = z[0, 0]  # a tie: the first maximum counts
    y = rng.integers(0, C, n)
    grad_ref = np.empty_like(z)
    loss_ref, correct_ref = REF.softmax_cross_entropy(z, y, eps, grad_ref)
    grad = t.put(np.zeros_like(z))
    for labels in (t.put(y), y, y.astype(np.int32)):  # on the device or the host; int32
        t.ran()
        loss, correct = t.b.softmax_cross_entropy(t.put(z), labels, eps, grad)
        assert isinstance(loss, float) and isinstance(correct, int)
        assert correct == correct_ref
        # the kernel's exp / log (the C library's, CUDA's) are not NumPy's: equal to rounding
        t.check(np.float64(loss), np.float64(loss_ref), rtol=1e-5, exact=False)
        t.check(grad, grad_ref, rtol=1e-5, exact=False)
        t.ran("softmax_cross_entropy")


def test_softmax_cross_entropy_label_out_of_range_stays_in_its_row(t, rng):
    if t.name == "generic":
        pytest.skip("NumPy's indexing refuses (or wraps) it; the kernel's answer is checked here")
    z = randn(rng, 3, 4)
    grad = t.put(np.full((3, 4), 9.0, F32))
    loss, correct = t.b.softmax_cross_entropy(t.put(z), t.put(np.array([1, 4, -1])), 0.0, grad)
    assert math.isnan(loss)
    g = t.get(grad)
    assert np.isfinite(g).all() and correct == int(z[0].argmax() == 1)


def test_batch_norm(t, rng):
    b = t.b
    x2 = randn(rng, 20, 6) * 2 + 1
    g2 = randn(rng, 20, 6)
    mean, var = REF.bn_stats(x2)
    got_mean, got_var = b.bn_stats(t.put(x2))
    t.check(got_mean, mean, rtol=1e-5)
    t.check(got_var, var, rtol=1e-5)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(F32)
    gamma, beta = randn(rng, 6), randn(rng, 6)
    xhat, y2 = np.empty_like(x2), np.empty_like(x2)
    REF.bn_normalize(x2, mean, inv_std, gamma, beta, xhat, y2)
    xhat_t, y2_t = t.put(np.empty_like(x2)), t.put(np.empty_like(x2))
    b.bn_normalize(t.put(x2), t.put(mean), t.put(inv_std), t.put(gamma), t.put(beta), xhat_t, y2_t)
    t.check(xhat_t, xhat)
    t.check(y2_t, y2)
    dgamma, dbeta = np.empty(6, F32), np.empty(6, F32)
    REF.bn_grad_sums(g2, xhat, dgamma, dbeta)
    dgamma_t, dbeta_t = t.put(np.empty(6, F32)), t.put(np.empty(6, F32))
    b.bn_grad_sums(t.put(g2), t.put(xhat), dgamma_t, dbeta_t)
    t.check(dgamma_t, dgamma, rtol=1e-5)
    t.check(dbeta_t, dbeta, rtol=1e-5)
    a, bb, d = gamma * inv_std, dbeta / 20, dgamma / 20
    dx = np.empty_like(x2)
    REF.bn_input_grad(g2, xhat, a, bb, d, dx)
    dx_t = t.put(np.empty_like(x2))
    b.bn_input_grad(t.put(g2), t.put(xhat), t.put(a), t.put(bb), t.put(d), dx_t)
    t.check(dx_t, dx)


# == convolution ==============================================================================
# (N, C, H, W, kernel, stride, padding, dilation)
CONV = [
    (2, 3, 7, 6, (3, 3), (1, 1), (0, 0), (1, 1)),
    (2, 4, 8, 7, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 2, 9, 9, (3, 2), (1, 2), (1, 0), (2, 2)),
    (2, 3, 5, 5, (1, 1), (1, 1), (0, 0), (1, 1)),
    (1, 5, 6, 8, (2, 3), (2, 1), (1, 2), (2, 1)),
    (3, 1, 4, 4, (4, 4), (1, 1), (2, 2), (1, 1)),
]


def _out_hw(H, W, kernel, stride, padding, dilation):
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip((H, W), kernel, stride, padding, dilation)
    )


def test_pad_channels_last(t, rng):
    x = randn(rng, 2, 4, 5, 3)
    t.check(t.b.pad_channels_last(t.put(x), (1, 2), {}, value=-1.5), REF.pad_channels_last(x, (1, 2), {}, value=-1.5))
    xt = t.put(x)
    assert t.b.pad_channels_last(xt, (0, 0), {}) is xt


@pytest.mark.parametrize("geometry", CONV)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias_lane", [True, False])
def test_im2col(t, rng, geometry, channels_last, bias_lane):
    N, C, H, W, kernel, stride, padding, dilation = geometry
    Ho, Wo = _out_hw(H, W, kernel, stride, padding, dilation)
    K = kernel[0] * kernel[1] * C
    x = nchw(randn(rng, N, C, H, W), channels_last).transpose(0, 2, 3, 1)  # (N, H, W, C) view
    cols = np.full((N * Ho * Wo, K + bias_lane), 7.0, F32)
    want = REF.im2col(x, kernel, stride, padding, dilation, cols.copy(), {})
    cols_t = t.put(cols)
    x_t = t.put(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)  # the same layout
    t.ran()
    assert t.b.im2col(x_t, kernel, stride, padding, dilation, cols_t, {}) is cols_t
    t.check(cols_t, want)
    t.ran("im2col")
    if bias_lane:
        assert (t.get(cols_t)[:, K] == 7).all()  # the bias lane untouched


@pytest.mark.parametrize("geometry", CONV)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias_lane", [True, False])
def test_col2im(t, rng, geometry, channels_last, bias_lane):
    N, C, H, W, kernel, stride, padding, dilation = geometry
    Ho, Wo = _out_hw(H, W, kernel, stride, padding, dilation)
    K = kernel[0] * kernel[1] * C
    dcols = randn(rng, N * Ho * Wo, K + bias_lane)
    dx = nchw(np.zeros((N, C, H, W), F32), channels_last).transpose(0, 2, 3, 1)
    want = REF.col2im(dcols, kernel, stride, padding, dilation, dx.copy(), {})
    dx_t = t.put(dx.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)  # a view when C order
    t.ran()
    assert t.b.col2im(t.put(dcols), kernel, stride, padding, dilation, dx_t, {}) is dx_t
    t.check(dx_t, want)
    t.ran("col2im")
    # a column slice of a wider matrix (not C-contiguous), and float64 (the inherited code)
    wide = t.put(np.concatenate([dcols[:, :K], dcols[:, :1]], axis=1))
    dx2 = t.put(np.zeros((N, H, W, C), F32))
    t.b.col2im(wide[:, :K], kernel, stride, padding, dilation, dx2, {})
    t.check(dx2, want)
    t.ran("col2im")
    d64 = dcols.astype(np.float64)
    want64 = REF.col2im(d64, kernel, stride, padding, dilation, np.zeros((N, H, W, C)), {})
    t.check(t.b.col2im(t.put(d64), kernel, stride, padding, dilation, t.put(np.zeros((N, H, W, C))), {}), want64)
    t.ran_none()


@pytest.mark.parametrize("geometry", CONV)
def test_col2im_adds_to_what_dx_holds(t, rng, geometry):
    N, C, H, W, kernel, stride, padding, dilation = geometry
    Ho, Wo = _out_hw(H, W, kernel, stride, padding, dilation)
    dcols = randn(rng, N * Ho * Wo, kernel[0] * kernel[1] * C)
    dx = randn(rng, N, H, W, C)
    want = REF.col2im(dcols, kernel, stride, padding, dilation, dx.copy(), {})
    got = t.b.col2im(t.put(dcols), kernel, stride, padding, dilation, t.put(dx), {})
    if padding == (0, 0):  # NumPy adds in the same order (with padding: the sum first)
        t.check(got, want)
    else:
        np.testing.assert_allclose(t.get(got), want, rtol=1e-6, atol=1e-6)


# == max pooling ===============================================================================
# (N, C, H, W, kernel, stride, padding)
POOL = [
    (2, 3, 8, 6, (2, 2), (2, 2), (0, 0)),
    (2, 4, 7, 7, (3, 3), (2, 2), (1, 1)),
    (1, 2, 6, 5, (3, 3), (1, 1), (1, 1)),
    (2, 3, 7, 8, (2, 2), (1, 1), (0, 0)),
    (1, 3, 8, 7, (3, 3), (3, 3), (0, 0)),  # windows tile, with a tail no window covers
    (2, 2, 5, 6, (1, 2), (1, 2), (0, 1)),
    (1, 2, 4, 4, (1, 1), (1, 1), (0, 0)),
]


def _pool_hw(H, W, kernel, stride, padding):
    return _out_hw(H, W, kernel, stride, padding, (1, 1))


@pytest.mark.parametrize("geometry", POOL)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_maxpool(t, rng, geometry, relu, training, channels_last, values):
    N, C, H, W, kernel, stride, padding = geometry
    out_hw = _pool_hw(H, W, kernel, stride, padding)
    x = randn(rng, N, C, H, W) if values == "normal" else rng.integers(-2, 2, (N, C, H, W)).astype(F32)
    x = nchw(x, channels_last)
    dy = nchw(randn(rng, N, C, *out_hw), values == "normal")
    y_ref, saved_ref = REF.maxpool_forward(x, kernel, stride, padding, out_hw, relu, training, {})
    dx_ref = REF.maxpool_backward(saved_ref, dy, kernel, stride, padding, {})
    owner = {}
    t.ran()
    y, saved = t.b.maxpool_forward(t.put(x), kernel, stride, padding, out_hw, relu, training, owner)
    t.check(y, y_ref)
    assert (y.strides[1] < y.strides[3]) == channels_last  # the input's layout
    dx = t.b.maxpool_backward(saved, t.put(dy), kernel, stride, padding, owner)
    t.check(dx, dx_ref)
    assert (dx.strides[1] < dx.strides[3]) == channels_last
    t.ran("maxpool_forward", "maxpool_backward")


def test_maxpool_nan_wins_and_float64_falls_back(t, rng):
    x = randn(rng, 1, 2, 4, 4)
    x[0, 1, 2, 3] = np.nan
    t.ran()
    y, _ = t.b.maxpool_forward(t.put(x), (2, 2), (2, 2), (0, 0), (2, 2), False, True, {})
    got = t.get(y)
    assert np.isnan(got[0, 1, 1, 1]) and np.isfinite(np.delete(got.reshape(-1), 7)).all()
    t.ran("maxpool_forward")
    x64 = randn(rng, 2, 3, 6, 6).astype(np.float64)
    dy = randn(rng, 2, 3, 3, 3).astype(np.float64)
    y_ref, s_ref = REF.maxpool_forward(x64, (3, 3), (2, 2), (1, 1), (3, 3), True, True, {})
    y64, s64 = t.b.maxpool_forward(t.put(x64), (3, 3), (2, 2), (1, 1), (3, 3), True, True, {})
    t.check(y64, y_ref)
    t.check(
        t.b.maxpool_backward(s64, t.put(dy), (3, 3), (2, 2), (1, 1), {}),
        REF.maxpool_backward(s_ref, dy, (3, 3), (2, 2), (1, 1), {}),
    )
    t.ran_none()


# == optimizers ================================================================================
def _f(*values):
    return tuple(F32(v) for v in values)


def _adam(l2=0.0, decay=1.0, t=3, lr=1e-2):
    b1, b2 = 0.9, 0.999
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    return _f(b1, 1 - b1, b2, 1 - b2, 1e-8, lr / bc1, 1 / math.sqrt(bc2), l2, decay)


OPTIMIZER = [
    ("adam", 2, _adam()),
    ("adam", 2, _adam(l2=0.05)),
    ("adam", 2, _adam(decay=1 - 1e-2 * 0.01)),  # AdamW
    ("sgd", 1, _f(0.1, 0.0, 0.0) + (False, True)),  # no momentum: buffer unused
    ("sgd", 1, _f(0.1, 0.0, 1e-3) + (False, False)),
    ("sgd", 1, _f(0.1, 0.9, 0.0) + (False, True)),  # the first step: buf = g
    ("sgd", 1, _f(0.1, 0.9, 1e-3) + (False, False)),
    ("sgd", 1, _f(0.05, 0.9, 0.0) + (True, False)),  # nesterov
    ("sgd", 1, _f(0.05, 0.8, 1e-2) + (True, True)),
    ("rmsprop", 1, _f(1e-2, 0.99, 1 - 0.99, 1e-8, 0.0)),
    ("rmsprop", 1, _f(1e-2, 0.9, 1 - 0.9, 1e-6, 1e-2)),
]


@pytest.mark.parametrize("rule,n_state,scalars", OPTIMIZER)
@pytest.mark.parametrize("diverge", [False, True])
def test_optimizer_update(t, rng, rule, n_state, scalars, diverge):
    n = 257
    p, g = randn(rng, n), randn(rng, n)
    state = [np.abs(randn(rng, n)) for _ in range(n_state)]  # (m may be negative; v, s not)
    if rule == "adam":
        state[0] = randn(rng, n)
    if diverge:
        g[5] = np.inf
    ref = [a.copy() for a in (p, g, *state)]
    old_ref = np.zeros(n, F32)
    ok_ref = REF.optimizer_update(rule, ref[0], ref[1], ref[2:], old_ref, scalars)
    pt, gt, st, old = t.put(p), t.put(g), [t.put(s) for s in state], t.put(np.zeros(n, F32))
    t.ran()
    ok = t.b.optimizer_update(rule, pt, gt, st, old, scalars)
    t.ran(rule, "all_finite")
    assert ok is ok_ref is (not diverge)
    t.check(old, p)
    t.check(pt, ref[0])
    for got, want in zip(st, ref[2:]):
        t.check(got, want)
    t.check(gt, g)


def test_optimizer_update_falls_back_for_float64(t, rng):
    p, g, s = (randn(rng, 9).astype(np.float64) for _ in range(3))
    s = np.abs(s)
    scalars = _f(1e-2, 0.99, 0.01, 1e-8, 0.0)
    pr, sr, old_r = p.copy(), s.copy(), np.zeros(9)
    assert REF.optimizer_update("rmsprop", pr, g, [sr], old_r, scalars)
    pt, st, old = t.put(p), t.put(s), t.put(np.zeros(9))
    t.ran()
    assert t.b.optimizer_update("rmsprop", pt, t.put(g), [st], old, scalars)
    t.ran_none()
    t.check(pt, pr)
    t.check(st, sr)


# == data =====================================================================================
def test_gather(t, rng):
    X = randn(rng, 10, 3, 2)
    idx = np.array([4, 0, 9, 4])
    want = REF.gather(X, idx, None)
    t.check(t.b.gather(t.put(X), t.put(idx), None), want)
    t.check(t.b.gather(t.put(X), idx, None), want)  # indices from the host
    t.check(t.b.gather(X, idx, None), want)  # data on the host


# == the kernels themselves ====================================================================
def test_every_kernel_definition_builds_through_the_factory():
    made = []
    fake = types.SimpleNamespace(
        ElementwiseKernel=lambda i, o, body, name, options=(): made.append(("e", name, options)) or name,
        ReductionKernel=lambda i, o, m, r, p, ident, name, options=(): made.append(("r", name, options)) or name,
    )
    make = cb.cupy_kernel_factory(fake)
    for name in [*cb.ELEMENTWISE, *cb.REDUCTIONS]:
        assert make(name) == "vecnn_" + name
    assert {m[1] for m in made} == {"vecnn_" + n for n in [*cb.ELEMENTWISE, *cb.REDUCTIONS]}
    assert all(m[2] == cb.OPTIONS for m in made)


def test_kernels_are_built_lazily_once(compiler, rng):
    calls = []
    b = CuPyBackend(np, kernels=emulated_factory(compiler, calls))
    assert calls == []
    x = randn(rng, 4, 5)
    for _ in range(3):
        b.relu(x, np.empty_like(x))
        b.bias_relu(x.copy(), None)
        b.all_finite(x)
    assert sorted(calls) == ["all_finite", "relu"]


def test_kernels_off_never_builds():
    b = CuPyBackend(np, kernels=False)
    assert b._kernel("relu") is None
    x = np.ones((2, 2), F32)
    assert b.all_finite(x)


def test_kernel_bodies_use_names_cupy_reserves_nowhere():
    # CuPy's generated code owns ``i``, ``_ind`` and the ``_raw_``-prefixed names
    for name, (in_params, out_params, _) in cb.ELEMENTWISE.items():
        for p in _params(in_params, False) + _params(out_params, True):
            assert p.name != "i" and not p.name.startswith("_"), (name, p.name)


# == the CUDA sources, compiled as CuPy compiles them (needs CuPy and NVRTC, not a device) =====
def test_cuda_sources_compile_with_nvrtc():
    cupy = pytest.importorskip("cupy")
    try:
        from cupy._core import _kernel
        from cupy_backends.cuda.libs import nvrtc

        archs = nvrtc.getSupportedArchs()
    except Exception as e:  # no NVRTC library, or another CuPy's internals  # noqa: BLE001
        pytest.skip(f"NVRTC unavailable: {type(e).__name__}: {e}")
    include = f"-I{cupy.__path__[0]}/_core/include"
    options = [
        include,
        "--std=c++17",
        "-ftz=true",
        f"--gpu-architecture=compute_{80 if 80 in archs else archs[-1]}",
        *cb.OPTIONS,
    ]

    def compile_(name, code):
        prog = nvrtc.createProgram("#include <cupy/carray.cuh>\n" + code, name + ".cu", [], [])
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError:
            pytest.fail(f"{name}: {nvrtc.getProgramLog(prog)}\n{code}")
        finally:
            nvrtc.destroyProgram(prog)

    f32 = np.dtype(np.float32)
    NDARRAY, INDEXER, SCALAR = 1, 2, 3  # CuPy's argument kinds (cupy/_core/_kernel.pyx)
    for name, (in_params, out_params, body) in cb.ELEMENTWISE.items():
        try:  # the code ElementwiseKernel generates
            params = _kernel._get_param_info(in_params, True) + _kernel._get_param_info(out_params, False)
            infos = [
                _kernel._ArgInfo(NDARRAY, np.ndarray, p.dtype or f32, 2 if p.raw else 1, True, True)
                if p.raw or p.dtype is None or not p.is_const
                else _kernel._ArgInfo(SCALAR, p.dtype.type, p.dtype, 0, True, True)
                for p in params
            ]
            params += (_kernel.ParameterInfo("CIndexer _ind", False),)
            infos.append(_kernel._ArgInfo(INDEXER, None, None, 1, True, True))
            code = _kernel._get_elementwise_kernel_code(
                tuple(infos), _kernel._TypeMap((("T", f32),)), params, body, "vecnn_" + name, ""
            )
        except (AttributeError, TypeError, AssertionError) as e:
            pytest.skip(f"this CuPy's kernel generator differs: {type(e).__name__}: {e}")
        compile_(name, code)
    for name, (in_params, out_params, map_expr, reduce_expr, post_map, identity) in cb.REDUCTIONS.items():
        (inp,), (out,) = _params(in_params, False), _params(out_params, True)
        rtype = _TYPES[out.type][0]
        compile_(
            name,
            f"""typedef float T;
extern "C" __global__ void vecnn_{name}(const CArray<T, 1, 1, 1> _in, CArray<{rtype}, 1, 1, 1> _out) {{
    {rtype} _acc = ({identity});
    CUPY_FOR(i, _in.size()) {{
        const T {inp.name} = _in[i];
        {rtype} a = _acc, b = ({map_expr});
        _acc = ({reduce_expr});
    }}
    {{ {rtype} a = _acc; {rtype} {out.name}; {post_map}; _out[0] = {out.name}; }}
}}""",
        )
